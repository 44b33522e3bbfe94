"""Process handling shared by the test servers: free ports, readiness, process groups.

Every manager in ``organelle.testing.servers`` starts its process in its own
process group and stops, kills (SIGKILL) or restarts exactly what it started;
that machinery (and the sync/async context-manager glue) lives here once,
apart from what each server needs to start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

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
