"""The README's first command, run exactly as a newcomer would, from the repository root."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.cli.proc import PYTHON_M, spawn


def organelle_command() -> tuple[str, ...]:
    """The installed ``organelle`` script beside this Python, else ``python -m organelle.cli``."""
    script = Path(sys.executable).with_name("organelle")
    return (str(script),) if script.is_file() else PYTHON_M


async def test_organelle_run_the_shop() -> None:
    async with spawn("run", "examples/shop/app.toml", command=organelle_command()) as child:
        await child.wait_for(r"demo: order \w+ placed, total \d+\.\d\d EUR", timeout_s=20)
        # The demo's first order and the "active" line race; either may come first.
        await child.wait_for(r"^organelle: 5 modules active \(", timeout_s=20, seen=True)
        child.signal(signal.SIGINT)
        code = await child.finish(timeout_s=20)
    assert code == 0, child.output
    assert "organelle: stopping (SIGINT)" in child.lines
    assert child.lines[-1].startswith("organelle: stopped in "), child.output
    assert "Traceback" not in child.output
