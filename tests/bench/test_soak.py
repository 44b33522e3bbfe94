"""``bench/soak.py --quick``: the three-process shop soak runs end to end and judges itself.

The ten-minute figures live in docs/benchmarks.md; this keeps the script from
rotting and checks that its verdict can fail (a growing series is caught).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def load_soak() -> Any:
    """The bench script as a module (its folder on the path, for its ``_common``)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module("soak")
    finally:
        sys.path.remove(str(SCRIPT.parent))


async def test_quick_soak_runs_bounded_with_no_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--quick",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=SCRIPT.parent,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 100)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "no unexpected error; too short to judge memory" in text, text
    for name in ("stock", "orders", "demo", "nats-server", "driver"):
        assert f"RSS, {name}:" in text, text
    assert "unexpected errors: 0.00 errors" in text, text


def test_the_verdict_catches_growth() -> None:
    soak = load_soak()
    minute = [float(60 * i) for i in range(8)]
    levels_off = [60.0, 66.0, 70.0, 71.0, 71.2, 71.1, 71.3, 71.2]
    climbs = [60.0, 61.5, 63.0, 64.5, 66.0, 67.5, 69.0, 70.5]  # 1.5 MiB a minute
    assert soak.bounded(list(zip(minute, levels_off, strict=True)))
    assert not soak.bounded(list(zip(minute, climbs, strict=True)))
    assert soak.slope_per_min([(0.0, 10.0), (60.0, 20.0), (120.0, 30.0)]) == 10.0
    assert soak.slope_per_min([(0.0, 10.0)]) == 0.0
