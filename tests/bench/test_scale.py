"""``bench/scale.py --quick``: every cost curve runs end to end and prints its ratio.

The figures themselves live in docs/benchmarks.md (never timed assertions
here); this only keeps the benchmark from rotting. ``--only`` never
publishes, so the docs and bench/results stay untouched.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scale.py"
RATIO = re.compile(r"^  .*: ([\d,.]+) \u00d7$")  # a cost ratio line (the sign is U+00D7)


@pytest.mark.parametrize("curve", ["modules", "events", "jobs", "streams", "registry", "clients"])
async def test_quick_curve_runs_and_prints_its_ratio(curve: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--only",
        curve,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=SCRIPT.parent,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 50)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    ratios = [float(m[1].replace(",", "")) for m in map(RATIO.match, text.splitlines()) if m]
    assert ratios, text
    assert all(math.isfinite(r) and r > 0 for r in ratios), text
