"""Real servers for the cluster config tests, and node processes (``_node_app.py``) to kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from organelle.testing import eventually
from organelle.testing.servers import NatsServer, PostgresServer, shared_nats, shared_postgres

APP = Path(__file__).with_name("_node_app.py")
ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@dataclass
class Child:
    """One ``_node_app.py`` process and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    out: Path

    def text(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    async def wait_for(self, line: str, timeout_s: float = 30.0) -> None:
        """Bounded wait for ``line`` in the output (failing at once if the child died)."""

        def printed() -> bool:
            if line in self.text().splitlines():
                return True
            assert self.proc.poll() is None, f"child exited {self.proc.returncode}:\n{self.text()}"
            return False

        await eventually(printed, timeout_s=timeout_s, interval_s=0.02)


@dataclass
class Children:
    """Node processes this test started; kills only those."""

    tmp: Path
    live: list[Child] = field(default_factory=list)

    def spawn(self, *args: str) -> Child:
        out = self.tmp / f"node-{len(self.live)}-{os.urandom(3).hex()}.log"
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, str(APP), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": os.pathsep.join((str(SRC), str(ROOT)))},
                cwd=self.tmp,
            )
        child = Child(proc, out)
        self.live.append(child)
        return child

    def kill(self, child: Child) -> None:
        """SIGKILL: no cleanup of any kind runs in the child."""
        if child.proc.poll() is None:
            os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait(10)
        self.live.remove(child)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    kids = Children(tmp_path)
    yield kids
    for child in list(kids.live):
        kids.kill(child)
