"""``organelle new``: each kind is generated, then its own tests, ruff and mypy pass on it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from organelle.cli import app
from organelle.cli._new import LAYERS, Names, render
from organelle.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
runner = CliRunner()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ORGANELLE"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only what organelle[testing] brings
    return env


def run(args: list[str], cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = child_env()
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def generate(kind: str, name: str, parent: Path) -> Path:
    """``python -m organelle new KIND NAME --dir PARENT``, as a user would type it."""
    result = run([sys.executable, "-m", "organelle", "new", kind, name, "--dir", str(parent)], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"created {kind} {name!r}" in result.stdout
    return parent / name


KINDS = [("project", "acme-shop", 2), ("module", "billing", 2), ("plugin", "geo_lookup", 3)]


@pytest.mark.parametrize(("kind", "name", "tests"), KINDS)
def test_a_generated_kind_passes_its_own_tests_and_ruff(
    kind: str, name: str, tests: int, tmp_path: Path
) -> None:
    target = generate(kind, name, tmp_path)
    assert {"pyproject.toml", "app.toml", "README.md", "tests", "src"} <= {
        p.name for p in target.iterdir()
    }
    plugins = ["-p", "pytest_asyncio.plugin", "-p", "organelle.testing.pytest_plugin"]
    result = run([sys.executable, "-m", "pytest", *plugins, "-p", "no:cacheprovider"], target)
    assert f"{tests} passed" in result.stdout, result.stdout + result.stderr
    assert "warning" not in result.stdout.splitlines()[-1]

    lint = run([str(BIN / "ruff"), "check", "--output-format", "concise", "."], target)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run([str(BIN / "ruff"), "format", "--check", "."], target)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr

    checked = run([sys.executable, "-m", "organelle", "check", "app.toml"], target)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 module would start" in checked.stdout


@pytest.mark.timeout(240)  # one cold mypy run (organelle and pydantic analysed), two warm ones
def test_every_generated_kind_passes_mypy_strict(tmp_path: Path) -> None:
    cache = tmp_path / "mypy-cache"  # shared by the three
    for kind, name, _ in KINDS:
        target = generate(kind, name, tmp_path)
        types = run([str(BIN / "mypy"), "--cache-dir", str(cache)], target, timeout_s=200)
        assert types.returncode == 0, types.stdout + types.stderr
        assert "Success: no issues found" in types.stdout


def test_a_plugin_registers_its_module_under_the_entry_point_group(tmp_path: Path) -> None:
    target = generate("plugin", "geo-lookup", tmp_path)
    project = tomllib.loads((target / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["organelle.modules"] == {"geo_lookup": "geo_lookup:GeoLookup"}
    module = tomllib.loads((target / "app.toml").read_text())
    assert module["kernel"]["modules"] == ["geo_lookup:GeoLookup"]


def test_names_derive_from_the_one_given() -> None:
    names = Names.of("acme-shop")
    assert (names.dist, names.package, names.module, names.cls) == (
        "acme-shop",
        "acme_shop",
        "acme_shop",
        "AcmeShop",
    )


@pytest.mark.parametrize("bad", ["Shop", "my shop", "1st", "shop-", "class", "organelle", "a--b"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        Names.of(bad)
    result = runner.invoke(app, ["new", "module", bad, "--dir", "/nonexistent"])
    assert result.exit_code == 2
    assert "error:" in result.output


def test_a_non_empty_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "mine.txt").write_text("keep")
    result = runner.invoke(app, ["new", "module", "billing", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "exists and is not empty" in result.output
    assert [p.name for p in (tmp_path / "billing").iterdir()] == ["mine.txt"]


def test_every_template_renders_without_a_leftover_placeholder() -> None:
    for kind in LAYERS:
        for path, text in render(kind, Names.of("x-y")).items():
            assert "${" not in text, path
            assert "__package__" not in path
