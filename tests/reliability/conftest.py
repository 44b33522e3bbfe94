"""Child processes for the reliability tests: started, SIGKILLed and restarted by the test.

``Children`` runs ``_apps.py`` roles, each in its own process with its
output in a file under the test's ``tmp_path``; it kills only the processes
it started (by their ``Popen``), and the fixture kills whatever is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from organelle.testing import eventually

APPS = Path(__file__).with_name("_apps.py")
SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Child:
    """One ``_apps.py`` process and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    out: Path

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    async def wait_for(self, line: str, timeout_s: float = 20.0) -> None:
        """Bounded wait until the child printed ``line`` (and fail at once if it died)."""

        def printed() -> bool:
            if line in self.lines():
                return True
            assert self.proc.poll() is None, f"child exited {self.proc.returncode}:\n" + (
                self.out.read_text() if self.out.exists() else ""
            )
            return False

        await eventually(printed, timeout_s=timeout_s, interval_s=0.02)


@dataclass
class Children:
    """Processes of ``_apps.py`` this test started; kills only those."""

    tmp: Path
    live: list[Child] = field(default_factory=list)
    started: int = 0

    def spawn(self, role: str, config: dict[str, Any], *args: str) -> Child:
        self.started += 1
        out = self.tmp / f"{role}-{self.started}.log"
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, str(APPS), role, json.dumps(config), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(SRC)},
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

    def close(self) -> None:
        for child in list(self.live):
            self.kill(child)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    kids = Children(tmp_path)
    try:
        yield kids
    finally:
        kids.close()
