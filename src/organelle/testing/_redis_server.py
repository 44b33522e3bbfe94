"""``RedisServer``: one ``redis-server`` on a free loopback port, in a temporary directory.

Only builds the command line and waits for ``PING``; process handling
(process group, stop, SIGKILL, restart) is in ``_process``. ``binary=``
may name ``valkey-server``, which takes the same options (untested here).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from typing import Self

from organelle.testing._process import HOST, _Managed, _wait, free_port


class RedisServer(_Managed):
    """One ``redis-server`` (or ``valkey-server``) on loopback.

    Args:
        port: client port; a free one by default. Kept across ``restart()``.
        data_dir: working directory (RDB / AOF files); a temporary one by default.
        appendonly: turn the append-only file on (``appendfsync`` as given), so
            what a client was told is written survives ``kill()`` + ``restart()``.
        appendfsync: ``always`` (fsync per write), ``everysec`` or ``no``.
        extra_args: more ``--option value`` arguments.
        binary: the executable, ``redis-server`` on PATH by default.
    """

    name = "redis-server"

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: list[str] | None = None,
        binary: str = "redis-server",
        ready_timeout_s: float = 20.0,
    ) -> None:
        super().__init__()
        self.port = port or free_port()
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix="organelle-redis-")
            self._owned_dirs.append(Path(data_dir))
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args or [])
        self.binary = shutil.which(binary) or binary
        self.ready_timeout_s = ready_timeout_s

    @property
    def url(self) -> str:
        """Client URL, e.g. ``redis://127.0.0.1:6379/0``."""
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> Self:
        """Start (if not running) and wait until it answers ``PING``."""
        if self.pid is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            *self.extra_args,
        ]
        proc = self._spawn(argv, self.data_dir / "redis.log")

        def pong() -> bool:
            with socket.create_connection((HOST, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")

        _wait(pong, self.ready_timeout_s, f"redis-server on {self.port}", proc)
        return self

    def restart(self) -> Self:
        """Start again after ``stop()`` or ``kill()``: same port, same data directory."""
        return self.start()
