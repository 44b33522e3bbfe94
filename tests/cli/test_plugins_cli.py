"""``organelle plugins``: installed plugins with versions, manifests and pin state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from organelle.plugins import digest
from tests.plugins.wheels import build_wheel, pip_install

SRC = Path(__file__).resolve().parents[2] / "src"

EXTRAS = """
from organelle import Module, rpc
from organelle.plugins import Manifest


class Future(Module):
    name = "future"
    version = "3.0.0"
    manifest = Manifest(kernel=">=2")


class Loose(Module):
    name = "loose"

    @rpc
    async def ping(self) -> str:
        return "pong"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plugins-cli")
    target = root / "site"
    pip_install(build_wheel(root / "dist"), target)
    extras = build_wheel(
        root / "dist",
        dist="shop-extras",
        version="0.3.0",
        files={"shop_extras/__init__.py": EXTRAS},
        entry_points={"future": "shop_extras:Future", "loose": "shop_extras:Loose"},
    )
    pip_install(extras, target)
    return target


def _plugins(site: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE__")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(SRC)])
    done = subprocess.run(
        [sys.executable, "-m", "organelle.cli", "plugins", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _rows(site: Path, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    code, output = _plugins(site, "--json", *args)
    return code, {row["name"]: row for row in json.loads(output)}


def test_lists_every_installed_plugin(site: Path) -> None:
    code, rows = _rows(site)
    assert code == 0
    assert sorted(rows) == ["future", "loose", "pricing"]
    pricing = rows["pricing"]
    assert (pricing["dist"], pricing["version"], pricing["ref"]) == (
        "shop-pricing",
        "1.2.0",
        "shop_pricing:Pricing",
    )
    assert pricing["module_version"] == "1.2.0"
    assert pricing["manifest"]["kernel"] == ">=0.1,<1"
    assert pricing["manifest"]["rpc"] == ["inventory.reserve"]
    assert pricing["compatible"] is True
    assert pricing["pin"] == "unpinned"
    assert pricing["loadable"] is True
    assert rows["future"]["compatible"] is False
    assert rows["future"]["loadable"] is False
    assert rows["loose"]["manifest"] is None
    assert rows["loose"]["loadable"] is True


def test_the_app_decides_pins_and_fails_on_a_plugin_it_cannot_load(
    site: Path, tmp_path: Path
) -> None:
    pin = digest(metadata.Distribution.at(site / "shop_pricing-1.2.0.dist-info"))
    app = tmp_path / "app.toml"
    app.write_text(
        f'[kernel]\nmodules = ["pricing", "loose"]\n[plugins.pins]\nshop-pricing = "{pin}"\n'
    )
    code, rows = _rows(site, "--app", str(app))
    assert code == 0
    assert rows["pricing"]["pin"] == "ok"
    assert rows["pricing"]["used"] is True
    assert rows["future"]["used"] is False  # incompatible, but the app does not use it

    app.write_text(
        '[kernel]\nmodules = ["pricing", "future", "shipping"]\n'
        f'[plugins.pins]\nshop-pricing = "sha256:{"0" * 64}"\n'
    )
    code, rows = _rows(site, "--app", str(app))
    assert code == 2
    assert rows["pricing"]["pin"] == "mismatch"
    assert rows["pricing"]["manifest"] is None  # not imported
    assert "differ from its pin" in rows["pricing"]["error"]
    assert rows["shipping"]["error"] == "not installed"
    assert rows["future"]["loadable"] is False

    code, text = _plugins(site, "--app", str(app))
    assert code == 2
    assert "pricing  shop-pricing 1.2.0  (used by the app)  pin: mismatch" in text
    assert "kernel >=2 (INCOMPATIBLE)" in text
    assert "no manifest: unrestricted" in text


def test_the_human_listing(site: Path) -> None:
    code, text = _plugins(site)
    assert code == 0
    assert text.splitlines()[0] == "3 plugins"
    assert "may use: rpc inventory.reserve; emit pricing.>" in text


def test_a_bad_app_config_exits_2(site: Path, tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text('[plugins]\npins = "all"\n')
    code, text = _plugins(site, "--app", str(app))
    assert code == 2
    assert "plugins.pins: must be a table" in text
