"""A local stand-in for the Kubernetes API's scale subresource that records every request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/apis/apps/v1/namespaces/"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class StandIn:
    """Deployments by (namespace, name) -> replicas; ``status`` forces an answer's code."""

    replicas: dict[tuple[str, str], int] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    status: int | None = None
    url: str = ""


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            state.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            if state.status is not None:
                self._answer(state.status, {"kind": "Status", "code": state.status})
                return
            parts = self.path.removeprefix(PREFIX).split("/")
            if (
                not self.path.startswith(PREFIX)
                or len(parts) != 4
                or parts[1:4:2] != ["deployments", "scale"]
            ):
                self._answer(404, {"kind": "Status", "code": 404})
                return
            key = (parts[0], parts[2])
            if key not in state.replicas:
                self._answer(404, {"kind": "Status", "code": 404})
                return
            if self.command == "PATCH" and isinstance(body, dict):
                state.replicas[key] = int(body["spec"]["replicas"])
            self._answer(
                200,
                {"kind": "Scale", "apiVersion": "autoscaling/v1",
                 "metadata": {"name": key[1], "namespace": key[0]},
                 "spec": {"replicas": state.replicas[key]}, "status": {"replicas": state.replicas[key]}},
            )  # fmt: skip

        do_GET = _handle  # noqa: N815 - http.server's naming
        do_PATCH = _handle  # noqa: N815

    return Handler


@contextmanager
def kube_api(replicas: dict[tuple[str, str], int]) -> Iterator[StandIn]:
    """Serve the stand-in on 127.0.0.1 (a free port) for the block."""
    state = StandIn(replicas=dict(replicas))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
