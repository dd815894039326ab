"""Embeddings: the offline hashing embedder, the OpenAI-compatible client against a local endpoint,
and the bulk backfill of executions.request_embedding."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import httpx
import numpy as np
import pytest

from clay_pipelines.resources import PostgresResource
from clay_pipelines.routing.defs import EmbedderResource, request_embeddings
from clay_pipelines.routing.embed_store import embed_executions
from clay_pipelines.routing.embeddings import HashingEmbedder, OpenAIEmbedder, get_embedder, tag

START, END = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)


def test_hashing_embedder_is_a_pure_normalised_function_of_the_text() -> None:
    embedder = HashingEmbedder()
    texts = ["process the payroll for March", "run payroll for March please", "draft an email to the team"]
    vectors = embedder.encode(texts)
    assert vectors.shape == (3, 1536) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(HashingEmbedder().encode(texts), vectors)  # same text, same vector, any process
    assert np.array_equal(embedder.encode(texts[:1])[0], vectors[0])  # independent of the batch
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert tag(embedder) == "hashing@1"


def test_unknown_embedder_is_named() -> None:
    with pytest.raises(ValueError, match="unknown embedder 'bert'; choose one of hashing, minilm, openai"):
        get_embedder("bert")


class _NextVersion(HashingEmbedder):
    version = 2


def _embedded(world_db, tenant) -> list[tuple]:
    with world_db.database() as db, db.tenant_transaction(tenant) as conn:
        return conn.execute(
            "SELECT request_embedding_model, count(*) FROM executions WHERE started_at >= %s AND started_at < %s "
            "GROUP BY 1 ORDER BY 1 NULLS FIRST",
            (START, END),
        ).fetchall()


def test_backfill_embeds_once_and_again_after_an_embedder_change(world_db) -> None:
    with world_db.database() as db:
        tenant = db.resolve_tenant("oms.com")
        with db.tenant_transaction(tenant) as conn:
            in_window = conn.execute(
                "SELECT count(*) FROM executions WHERE started_at >= %s AND started_at < %s", (START, END)
            ).fetchone()[0]
        assert in_window > 500
        assert embed_executions(db, tenant, HashingEmbedder(), START, END) == in_window
        assert embed_executions(db, tenant, HashingEmbedder(), START, END) == 0  # nothing stale
        assert _embedded(world_db, tenant) == [("hashing@1", in_window)]
        assert embed_executions(db, tenant, _NextVersion(), START, END) == in_window  # a new version re-embeds
        assert _embedded(world_db, tenant) == [("hashing@2", in_window)]
        with db.tenant_transaction(tenant) as conn:
            text, stored = conn.execute(
                "SELECT user_request, request_embedding FROM executions WHERE started_at >= %s AND started_at < %s "
                "LIMIT 1",
                (START, END),
            ).fetchone()
        stored = stored.to_numpy() if hasattr(stored, "to_numpy") else np.asarray(stored)
        assert np.allclose(stored, HashingEmbedder().encode([text])[0], atol=1e-6)
        # Other tenants were not touched by a tenant's backfill.
        other = db.resolve_tenant("northwind.io")
        assert _embedded(world_db, other)[0][0] is None


def test_asset_backfills_a_range_in_one_run(world_db, monkeypatch) -> None:
    monkeypatch.setenv("CLAY_APP_DATABASE_URL", world_db.app_url)
    resources = {
        "postgres": PostgresResource(app_dsn=world_db.app_url, maintenance_dsn=world_db.maintenance_url),
        "embedder": EmbedderResource(name="hashing"),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [request_embeddings],
            instance=instance,
            resources=resources,
            tags={
                "dagster/asset_partition_range_start": "2025-12-01",
                "dagster/asset_partition_range_end": "2025-12-31",
            },
        )
    assert result.success
    events = result.get_asset_materialization_events()
    assert len(events) == 31  # one materialization per day of the range, from one step
    metadata = events[0].event_specific_data.materialization.metadata
    with world_db.admin() as conn:
        in_window = conn.execute(
            "SELECT count(*) FROM executions WHERE started_at >= %s AND started_at < %s", (START, END)
        ).fetchone()[0]
    assert metadata["rows_written"].value == in_window
    assert metadata["window"].value == "2025-12-01 .. 2026-01-01"


class _EmbeddingsEndpoint(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible /embeddings endpoint that answers each request with the next status of
    `statuses` (then 200): the vectors come back in reverse order, each with its index."""

    statuses: list[int] = []
    requests: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        data = [{"index": i, "embedding": [1.0, float(i)] + [0.0] * 1534} for i in range(len(body["input"]))]
        payload = json.dumps({"data": data[::-1]} if status == 200 else {"error": "no"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def embeddings_endpoint(monkeypatch) -> Iterator[type[_EmbeddingsEndpoint]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    _EmbeddingsEndpoint.statuses, _EmbeddingsEndpoint.requests = [], []
    yield _EmbeddingsEndpoint
    server.shutdown()
    server.server_close()


def test_openai_embedder_retries_a_busy_endpoint_and_keeps_the_input_order(embeddings_endpoint) -> None:
    embeddings_endpoint.statuses = [503]
    vectors = OpenAIEmbedder().encode(["first", "second"])
    assert [body["input"] for body in embeddings_endpoint.requests] == [["first", "second"]] * 2
    assert embeddings_endpoint.requests[0]["model"] == "text-embedding-3-small"
    assert vectors.shape == (2, 1536) and not vectors[:, 2:].any()
    assert vectors[:, :2].astype(float).round(4).tolist() == [[1.0, 0.0], [0.7071, 0.7071]]  # by index, unit length


def test_openai_embedder_does_not_retry_a_refusal(embeddings_endpoint) -> None:
    embeddings_endpoint.statuses = [400]
    with pytest.raises(httpx.HTTPStatusError, match="400 Bad Request"):
        OpenAIEmbedder().encode(["first"])
    assert len(embeddings_endpoint.requests) == 1
