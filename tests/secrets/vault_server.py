"""A small HashiCorp Vault KV v2 API on 127.0.0.1, for the Vault provider's tests.

It serves ``GET /v1/<mount>/data/<path>[?version=N]`` as Vault does — the
``{"data": {"data": …, "metadata": {"version": …}}}`` envelope, 403 with
``{"errors": ["permission denied"]}`` for a wrong token, 404 for an unknown
path — and keeps every version, so a rotation is ``put`` of a new one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "s.test-root-token"  # noqa: S105 - the fake server's token


@dataclass
class Vault:
    """The server's state: ``mount/path`` → versions (1-based), and what it served."""

    address: str = ""
    token: str = TOKEN
    secrets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, path: str, data: dict[str, Any]) -> int:
        """Write a new version of ``mount/path``; its version number."""
        with self.lock:
            versions = self.secrets.setdefault(path, [])
            versions.append(dict(data))
            return len(versions)

    def read(self, path: str, version: int | None) -> dict[str, Any] | None:
        with self.lock:
            versions = self.secrets.get(path)
            if not versions:
                return None
            number = version or len(versions)
            if not 1 <= number <= len(versions):
                return None
            return {
                "data": {
                    "data": versions[number - 1],
                    "metadata": {"version": number, "destroyed": False, "deletion_time": ""},
                }
            }


def _handler(vault: Vault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            vault.requests.append(parts.path)
            if self.headers.get("X-Vault-Token") != vault.token:
                self._send(403, {"errors": ["permission denied"]})
                return
            segments = parts.path.removeprefix("/v1/").split("/", 2)
            if len(segments) < 3 or segments[1] != "data":
                self._send(404, {"errors": []})
                return
            query = parse_qs(parts.query)
            version = int(query["version"][0]) if "version" in query else None
            body = vault.read(f"{segments[0]}/{segments[2]}", version)
            if body is None:
                self._send(404, {"errors": []})
                return
            self._send(200, body)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            return  # quiet: pytest would treat stderr noise as output

    return Handler


@contextmanager
def vault_server() -> Iterator[Vault]:
    """Serve a fresh Vault on a free 127.0.0.1 port for the block."""
    vault = Vault()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(vault))
    server.daemon_threads = True
    vault.address = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-vault", daemon=True)
    thread.start()
    try:
        yield vault
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
