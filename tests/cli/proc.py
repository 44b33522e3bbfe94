"""Run the ``organelle`` command in a child process and read its output with bounded waits."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON_M = (sys.executable, "-m", "organelle.cli")


def clean_env() -> dict[str, str]:
    """The test's environment without ``ORGANELLE__`` overrides that would change the app."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE__")}


class Child:
    """A running ``organelle`` process whose stdout and stderr are merged into ``lines``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def _readline(self, timeout_s: float) -> str | None:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            return None
        line = raw.decode(errors="replace").rstrip("\n")
        self.lines.append(line)
        return line

    async def wait_for(self, pattern: str, timeout_s: float = 20.0, *, seen: bool = False) -> str:
        """Read lines until one matches ``pattern``; fail with the output so far otherwise.

        With ``seen``, a line read earlier counts too (for lines whose order may vary).
        """
        if seen:
            for earlier in self.lines:
                if re.search(pattern, earlier):
                    return earlier
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            try:
                line = await self._readline(left)
            except TimeoutError:
                break
            if line is None:
                msg = f"exited ({await self.proc.wait()}) before {pattern!r}:\n{self.output}"
                raise AssertionError(msg)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout_s}s:\n{self.output}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def finish(self, timeout_s: float = 20.0) -> int:
        """Read everything left and return the exit code."""
        async with asyncio.timeout(timeout_s):
            while await self._readline(timeout_s) is not None:
                pass
            return await self.proc.wait()


@asynccontextmanager
async def spawn(*args: str, command: tuple[str, ...] = PYTHON_M) -> AsyncIterator[Child]:
    """Start ``organelle <args>`` in the repository root; kill it if the test did not end it."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        *args,
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield Child(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def run_once(*args: str, timeout_s: float = 20.0) -> tuple[int, str, str]:
    """Run ``organelle <args>`` to completion: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *PYTHON_M,
        *args,
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
