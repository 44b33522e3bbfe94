"""docs/tutorial.md stays true: its files are written, checked, linted and tested as a reader would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()
BIN = Path(sys.executable).parent
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[\w./-]+) -->\n```\w+\n(?P<code>.*?)```", re.DOTALL)
GREETER = ("src/shop/greeter.py", "tests/test_greeter.py")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command as the reader would, on this checkout's organelle, bounded in time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ORGANELLE"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only what organelle[testing] brings
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_the_tutorial_marks_its_files_and_starts_from_organelle_new() -> None:
    paths = {m["path"] for m in FILE_BLOCK.finditer(TUTORIAL)}
    assert paths == {
        "app.toml",
        "src/shop/pricing.py",
        "src/shop/inventory.py",
        "src/shop/orders.py",
        "src/shop/notifications.py",
        "tests/test_shop.py",
    }
    assert "organelle new project shop\n" in TUTORIAL
    assert f"rm {' '.join(GREETER)}\n" in TUTORIAL


@pytest.mark.timeout(120)  # about ten short subprocesses on a shared 2-core machine
def test_every_step_checks_and_the_final_project_passes_its_tests(tmp_path: Path) -> None:
    new = run([sys.executable, "-m", "organelle", "new", "project", "shop", "--dir", "."], tmp_path)
    assert new.returncode == 0, new.stderr
    assert new.stdout.strip() in TUTORIAL  # the output step 1 shows
    project = tmp_path / "shop"
    for name in GREETER:
        (project / name).unlink()

    checked = 0
    for block in FILE_BLOCK.finditer(TUTORIAL):
        (project / block["path"]).write_text(block["code"])
        if block["path"] == "app.toml":  # each step's app builds, and prints what the step shows
            result = run([sys.executable, "-m", "organelle", "check", "app.toml"], project)
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.strip() in TUTORIAL, result.stdout
            checked += 1
    assert checked == 5  # steps 2, 3, 4, 5 and 7 each change app.toml

    plugins = ["-p", "pytest_asyncio.plugin", "-p", "organelle.testing.pytest_plugin"]
    tests = run([sys.executable, "-m", "pytest", *plugins, "-p", "no:cacheprovider", "-q"], project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    passed = re.search(r"(\d+) passed", tests.stdout)
    assert passed is not None, tests.stdout
    assert f"\n{passed[1]} passed in " in TUTORIAL

    lint = run([str(BIN / "ruff"), "check", "--output-format", "concise", "."], project)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run([str(BIN / "ruff"), "format", "--check", "."], project)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
