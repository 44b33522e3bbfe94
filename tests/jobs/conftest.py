"""Fixtures for the jobs tests: worker processes we start and kill, their ledger, servers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from organelle.testing.servers import PostgresServer, RedisServer, shared_postgres
from tests._redis import redis_or_skip

PROC = Path(__file__).with_name("_proc.py")
SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Ledger:
    """What the handlers wrote: one line per start and end of an attempt."""

    path: Path

    def lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [ln.split() for ln in self.path.read_text().splitlines() if ln.strip()]

    def starts(self) -> Counter[str]:
        return Counter(p[1] for p in self.lines() if p[0] == "start")

    def ends(self) -> Counter[str]:
        return Counter(p[1] for p in self.lines() if p[0] == "end")

    def count(self, kind: str) -> int:
        return sum(1 for p in self.lines() if p[0] == kind)


@dataclass
class Procs:
    """Worker processes on one queue (``url``); kills only what it started."""

    db: Path
    ledger: Ledger
    url: str = ""
    slots: int = 10
    env: dict[str, str] = field(default_factory=dict)
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, wait_ready: bool = True) -> subprocess.Popen[bytes]:
        ready_before = self.ledger.count("ready")
        env = {**os.environ, "PYTHONPATH": str(SRC), **self.env}
        proc = subprocess.Popen(
            [sys.executable, str(PROC), self.url, str(self.ledger.path), str(self.slots)],
            env=env,
        )
        self.live.append(proc)
        if wait_ready:
            deadline = time.monotonic() + 20
            while self.ledger.count("ready") <= ready_before:
                assert time.monotonic() < deadline, "worker process did not start"
                assert proc.poll() is None or proc.returncode == 3, "worker process died at start"
                time.sleep(0.01)
        return proc

    def signal(self, proc: subprocess.Popen[bytes], sig: int) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        self.signal(proc, signal.SIGKILL)
        proc.wait(10)
        self.live.remove(proc)

    def term(self, proc: subprocess.Popen[bytes]) -> int:
        self.signal(proc, signal.SIGTERM)
        code = proc.wait(20)
        self.live.remove(proc)
        return code

    def reap(self) -> list[subprocess.Popen[bytes]]:
        """Forget processes that exited on their own (poison jobs); return them."""
        gone = [p for p in self.live if p.poll() is not None]
        for p in gone:
            self.live.remove(p)
        return gone

    def close(self) -> None:
        for proc in list(self.live):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            self.kill(proc)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    db = tmp_path / "jobs.db"
    p = Procs(db=db, ledger=Ledger(tmp_path / "ledger.txt"), url=f"sqlite:///{db}")
    yield p
    p.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from redis_or_skip()
