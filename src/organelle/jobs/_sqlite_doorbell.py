"""A doorbell between processes sharing one SQLite job queue: ``NOTIFY`` for a file.

SQLite tells no one about a commit. A waiting worker learns of another
process's enqueue by polling ``PRAGMA data_version`` (every ``poll_s`` while
others keep committing), which costs it a wake-up per poll and the job up to
a poll interval. Here each waiting worker process binds a Unix datagram socket
in a directory next to the database (``<db>.wake/``), and a producer sends one
byte to every socket there just before its enqueue's ``COMMIT``: the fsync
takes longer than the datagram takes to wake the worker's thread, which then
polls every 50 µs for a few ms (``SqliteThread.poke``) and sees the commit
within one such interval. A second ring once the commit returned covers an
fsync slower than that. The poll stays as the fallback —
for producers of an older version, another host on a shared file system, or a
platform without ``AF_UNIX`` — so a lost or refused ring costs latency, never a
job.

A socket whose process died refuses the datagram: the producer removes its
file. A socket whose buffer is full is already awake and is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["Doorbell"]

log = logging.getLogger("organelle.jobs")

_MAX_PATH = 100  # sockaddr_un holds 108 bytes with the terminator; keep a margin
_NAME_LEN = 32  # "<pid>-<16 hex>" fits


def wake_dir(db_path: str) -> Path | None:
    """Where the sockets of ``db_path``'s waiting workers live (the same for every process)."""
    if not hasattr(socket, "AF_UNIX") or db_path == ":memory:":
        return None
    real = os.path.realpath(db_path)
    beside = Path(real + ".wake")
    if len(str(beside)) + 1 + _NAME_LEN <= _MAX_PATH:
        return beside
    digest = hashlib.sha256(real.encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / "organelle-wake" / digest


class Doorbell:
    """Ring the waiting workers of one database; or listen, as one of them."""

    def __init__(self, db_path: str) -> None:
        self.dir = wake_dir(db_path)
        self._out: socket.socket | None = None
        self._names: list[str] = []  # the sockets seen at the last listing
        self._listed = -1  # the directory's mtime then
        self._mine = ""  # this process's socket name, if listening
        self._listener: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()

    def ring(self) -> int:
        """Wake every other listening process; how many were rung. Never raises.

        Called by the writer thread just before an enqueue's ``COMMIT``: the
        woken threads poll closely until they see it (``SqliteThread.poke``).
        """
        names = self._listening()
        if not names or self.dir is None:
            return 0
        out = self._out or self._open_out()
        if out is None:
            return 0
        rung = 0
        for name in names:
            path = self.dir / name
            try:
                out.sendto(b"!", str(path))
            except BlockingIOError:  # its buffer is full: it is awake already
                pass
            except (ConnectionRefusedError, FileNotFoundError):  # its process is gone
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                continue
            except OSError:  # not ours to fix: the poll still finds the job
                continue
            rung += 1
        return rung

    def _open_out(self) -> socket.socket | None:
        """The sending socket, made once (the writer thread and the loop both ring)."""
        with self._lock:
            if self._out is None:
                try:
                    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                except OSError:  # out of descriptors: the poll still finds the job
                    return None
                out.setblocking(False)  # noqa: FBT003 - the socket API's own flag
                self._out = out
            return self._out

    def _listening(self) -> list[str]:
        """The other processes' sockets, listed again only when the directory changed."""
        if self.dir is None:
            return []
        try:
            stamp = self.dir.stat().st_mtime_ns
            if stamp != self._listed:
                self._names = [p.name for p in self.dir.iterdir() if p.name != self._mine]
                self._listed = stamp
        except OSError:  # nobody ever listened here
            return []
        return self._names

    def listen(self, on_ring: Callable[[], None]) -> bool:
        """Bind this process's socket and call ``on_ring`` (in a thread) per burst of rings."""
        if self.dir is None or self._listener is not None:
            return self._listener is not None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            name = f"{os.getpid()}-{secrets.token_hex(8)}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(self.dir / name))
        except OSError as exc:
            log.debug("job doorbell unavailable at %s: %s (polling instead)", self.dir, exc)
            return False
        self._mine, self._listener = name, sock
        self._closing = threading.Event()
        self._reader = threading.Thread(
            target=self._read,
            args=(sock, on_ring, self._closing),
            name="organelle-jobs-doorbell",
            daemon=True,
        )
        self._reader.start()
        return True

    @staticmethod
    def _read(sock: socket.socket, on_ring: Callable[[], None], closing: threading.Event) -> None:
        while not closing.is_set():
            try:
                sock.recv(64)  # after shutdown() it returns b"" at once
                while sock.recv(64, socket.MSG_DONTWAIT):  # rings queued meanwhile: one poll
                    pass
            except BlockingIOError:
                pass
            except OSError:  # closed under us
                return
            if not closing.is_set():
                on_ring()

    def close(self) -> None:
        """Stop listening (remove this process's socket) and drop the sending socket."""
        sock, self._listener = self._listener, None
        self._closing.set()
        if sock is not None and self.dir is not None:
            with contextlib.suppress(OSError):
                (self.dir / self._mine).unlink()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv
            sock.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.join(timeout=1.0)
        self._mine = ""
        out, self._out = self._out, None
        if out is not None:
            out.close()
