"""Ops libraries load only when used: never at `import organelle`."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("structlog", "prometheus_client", "opentelemetry", "watchfiles", "starlette", "uvicorn")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(filter(None, out.stdout.strip().split(",")))


def test_import_organelle_loads_no_ops_library() -> None:
    assert loaded_after("import organelle") == set()


def test_ops_and_health_load_only_what_they_use() -> None:
    assert loaded_after("import organelle.ops, organelle.health, organelle.kernel") == set()
    assert loaded_after("import organelle.observability.metrics") == {"prometheus_client"}
