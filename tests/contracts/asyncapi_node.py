"""Validate AsyncAPI documents with the official parser, ``@asyncapi/parser``, run by Node.js.

The parser is installed by ``.ci/run`` into ``.cache/asyncapi-node`` (git-ignored);
where it is missing but ``npm`` is there, the first check installs it (the
version ``.ci/run`` pins), so the README's test line needs nothing more. A
machine without ``node`` skips these checks; one where the install fails
fails them, naming the step that installs it.
"""

from __future__ import annotations

import json
import os
import re
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


def _pinned() -> str:
    """The parser version ``.ci/run`` installs."""
    match = re.search(
        r"^ASYNCAPI_PARSER=([\w.\-]+)", (ROOT / ".ci" / "run").read_text(), re.MULTILINE
    )
    assert match, ".ci/run pins ASYNCAPI_PARSER"
    return match.group(1)


def _install() -> None:
    """Install the pinned parser with npm (once; bounded), as ``.ci/run`` does."""
    npm = shutil.which("npm")
    if npm is None:
        return
    subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(PREFIX),
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            f"@asyncapi/parser@{_pinned()}",
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )


def parse(doc: dict[str, Any] | str) -> tuple[int, list[dict[str, Any]]]:
    """Run the parser on ``doc``: its exit code and its diagnostics."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    marker = PREFIX / "node_modules" / "@asyncapi" / "parser" / "package.json"
    if not marker.is_file():
        _install()
    if not marker.is_file():
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
