"""Validate AsyncAPI documents with the official parser, ``@asyncapi/parser``, run by Node.js.

The parser is installed by ``.ci/run`` into ``.cache/asyncapi-node`` (git-ignored).
A machine without ``node`` skips these checks; one with ``node`` but without the
parser fails them, naming the step that installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("asyncapi_validate.cjs")
PREFIX = Path(os.environ.get("ASYNCAPI_NODE_PREFIX", ROOT / ".cache" / "asyncapi-node"))
INSTALL = (
    "the AsyncAPI parser is not installed: run .ci/run, or its step "
    "'npm install --prefix .cache/asyncapi-node --ignore-scripts @asyncapi/parser@<pinned>'"
)


def parse(doc: dict[str, Any] | str) -> tuple[int, list[dict[str, Any]]]:
    """Run the parser on ``doc``: its exit code and its diagnostics."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (PREFIX / "node_modules" / "@asyncapi" / "parser" / "package.json").is_file():
        pytest.fail(f"{INSTALL} (looked in {PREFIX})")
    text = doc if isinstance(doc, str) else json.dumps(doc)
    proc = subprocess.run(
        [node, str(SCRIPT), "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "ASYNCAPI_NODE_PREFIX": str(PREFIX)},
    )
    assert proc.returncode in (0, 1), proc.stderr
    diagnostics = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return proc.returncode, diagnostics


def assert_valid(doc: dict[str, Any] | str) -> list[dict[str, Any]]:
    """Fail with the parser's errors unless ``doc`` is a valid AsyncAPI document; the diagnostics."""
    code, diagnostics = parse(doc)
    errors = [d for d in diagnostics if d["severity"] == "error"]
    assert (code, errors) == (0, []), "\n".join(json.dumps(d) for d in errors)
    return diagnostics
