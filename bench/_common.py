"""Shared helpers for the benchmarks: timing, peak RSS, and result publishing.

Every benchmark measures organelle beside its floor or peer in the same run,
writes ``bench/results/<name>.json`` and replaces its own section of
``docs/benchmarks.md`` (between ``<!-- bench:<name> -->`` markers), so each
benchmark script owns exactly one section.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


@dataclass
class Row:
    """One measured line: a subject, its throughput/latency and its ratio to the baseline."""

    case: str
    subject: str
    value: float
    unit: str = "ops/s"
    baseline: str = ""
    ratio: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``samples`` (which need not be sorted)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    """Median of values."""
    return statistics.median(values)


def fmt_rate(value: float, unit: str) -> str:
    """Human formatting: 1.23 M/s, 45.6 k/s."""
    if unit.endswith("/s"):
        if value >= 1e6:
            return f"{value / 1e6:.2f} M{unit[-2:] if unit == 'ops/s' else ' ' + unit}"
        if value >= 1e3:
            return f"{value / 1e3:.1f} k{unit[-2:] if unit == 'ops/s' else ' ' + unit}"
    return f"{value:,.2f} {unit}"


def publish(name: str, title: str, rows: list[Row], notes: str = "") -> None:
    """Print the table, write the JSON result and update docs/benchmarks.md."""
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"name": name, "env": env, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    )
    header = "| case | subject | result | baseline | ratio | p50 µs | p99 µs | target |"
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}×"
        p50 = "" if r.p50_us is None else f"{r.p50_us:.1f}"
        p99 = "" if r.p99_us is None else f"{r.p99_us:.1f}"
        lines.append(
            f"| {r.case} | {r.subject} | {fmt_rate(r.value, r.unit)} | {r.baseline} | {ratio} "
            f"| {p50} | {p99} | {r.target} |"
        )
    table = "\n".join(lines)
    print(f"\n{title}\n{table}\n")
    section = f"## {title}\n\n{table}\n\n{notes}\n_Measured {env['time']} on Python {env['python']}, {env['machine']}._\n"
    _replace_section(name, section)


def _replace_section(name: str, section: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = (
        DOC.read_text()
        if DOC.exists()
        else "# Benchmarks\n\nRun any script in `bench/` with `python bench/<name>.py`.\n"
    )
    block = f"{start}\n{section}{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
