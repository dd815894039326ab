"""A real HTTP server on 127.0.0.1 speaking the parts of BambooHR's API the client uses.

It checks Basic auth, keeps employees' table rows, records every request, and can be told how to
answer the next POSTs: "429:<seconds>" (with Retry-After), "503", "503:<seconds>", "400", "404",
"drop_after_store" (store the row, then close the connection without answering: the ambiguous case)
or "drop_before_store".
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "test-api-key"


@dataclass
class FakeBambooHR:
    employees: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    next_row_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def posted_rows(self, employee_id: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "id"} for row in self.rows.get(employee_id, [])]


def _handler(state: FakeBambooHR) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _authorised(self) -> bool:
            expected = "Basic " + base64.b64encode(f"{API_KEY}:x".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._reply(401, {"error": "invalid API key"})
                return False
            return True

        def do_GET(self) -> None:
            with state.lock:
                state.requests.append(("GET", self.path, None))
            if not self._authorised():
                return
            if self.path.endswith("/v1/employees/directory"):
                self._reply(200, {"employees": list(state.employees.values())})
                return
            match = re.search(r"/v1/employees/([^/]+)/tables/([^/]+)$", self.path)
            if match and match[1] in state.employees:
                with state.lock:
                    self._reply(200, list(state.rows.get(match[1], [])))
                return
            self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.requests.append(("POST", self.path, body))
                fault = state.faults.pop(0) if state.faults else None
            if not self._authorised():
                return
            match = re.search(r"/v1/employees/([^/]+)/tables/([^/]+)$", self.path)
            if fault == "drop_before_store":
                self.close_connection = True
                return
            if fault and fault.split(":")[0] in ("429", "503", "400", "404", "500"):
                status, _, wait = fault.partition(":")
                headers = {"Retry-After": wait} if wait else {}
                self._reply(int(status), {"error": f"injected {status}"}, headers)
                return
            if not match or match[1] not in state.employees:
                self._reply(404, {"error": f"no employee {match[1] if match else '?'}"})
                return
            with state.lock:
                row = {"id": str(state.next_row_id), **body}
                state.next_row_id += 1
                state.rows.setdefault(match[1], []).append(row)
            if fault == "drop_after_store":
                self.close_connection = True  # the row is stored, the client never hears so
                return
            self._reply(201, None, {"Location": f"{self.path}/{row['id']}"})

    return Handler


@contextmanager
def running(employees: dict[str, dict[str, Any]]) -> Iterator[FakeBambooHR]:
    state = FakeBambooHR(employees=employees)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/api/gateway.php/oms"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
