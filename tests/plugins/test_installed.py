"""A plugin installed with pip is found by name, held to its manifest, and pinned by hash.

The distribution is a real wheel installed by pip into a folder of its own,
put on ``sys.path`` of a child Python only: nothing is installed into the
environment running the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from organelle.errors import PluginError
from organelle.plugins import Pins, Plugin, digest, parse_pins, verify
from tests.plugins.wheels import build_wheel, pip_install

SRC = Path(__file__).resolve().parents[2] / "src"

APP_MODULES = """
from organelle import Module, rpc


class Inventory(Module):
    name = "inventory"

    @rpc
    async def reserve(self, sku: str) -> str:
        return f"reserved {sku}"

    @rpc
    async def release(self, sku: str) -> str:
        return f"released {sku}"
"""

# Runs in the child: load the app, try each call, report what happened as JSON.
CHILD = """
import asyncio, json, sys
from organelle import Kernel

async def main() -> None:
    out = {}
    try:
        kernel = Kernel.from_config(sys.argv[1])
    except Exception as exc:
        out["load"] = [type(exc).__name__, getattr(exc, "code", ""), str(exc)]
        out["imported"] = "shop_pricing" in sys.modules
        print(json.dumps(out))
        return
    async with kernel:
        for target in ("pricing.quote", "pricing.peek"):
            try:
                out[target] = ["ok", await kernel.call(target, sku="A1")]
            except Exception as exc:
                out[target] = [type(exc).__name__, getattr(exc, "code", ""), str(exc)]
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding shop-pricing 1.2.0, installed there by pip."""
    root = tmp_path_factory.mktemp("plugin")
    target = root / "site"
    pip_install(build_wheel(root / "dist"), target)
    return target


def _app(folder: Path, plugins: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app_modules.py").write_text(APP_MODULES)
    (folder / "child.py").write_text(CHILD)
    app = folder / "app.toml"
    app.write_text(
        '[kernel]\nstorage = "memory://"\npythonpath = ["."]\n'
        f'modules = ["app_modules:Inventory", "pricing"]\n{plugins}'
    )
    return app


def _run(app: Path, site: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)])}
    done = subprocess.run(
        [sys.executable, str(app.parent / "child.py"), str(app)],
        capture_output=True,
        text=True,
        env=env,
        cwd=app.parent,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_installed_into_a_fresh_venv_by_pip(tmp_path: Path) -> None:
    """The must-hold of issue 16: found by name in a new venv, refused outside its manifest."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    # organelle's own dependencies from this environment; the plugin goes into the venv itself
    here = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "organelle-deps.pth").write_text(f"{SRC}\n{here}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            str(build_wheel(tmp_path / "dist")),
        ],
        check=True,
        timeout=90,
    )
    assert (Path(purelib) / "shop_pricing-1.2.0.dist-info" / "RECORD").is_file()
    app = _app(tmp_path / "app")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(python), str(app.parent / "child.py"), str(app)],
        capture_output=True,
        text=True,
        env=env,
        cwd=app.parent,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["pricing.quote"] == ["ok", "reserved A1"]
    assert out["pricing.peek"][:2] == ["PermissionDeniedError", "organelle.plugin.denied"]


CHECK_CHILD = """
import asyncio, json
from organelle.testing import fake_module
from organelle.testing.plugins import check_plugin

async def reserve(sku: str) -> str:
    return sku

async def main() -> None:
    found = await check_plugin("pricing", modules=[fake_module("inventory", "1.0.0", reserve=reserve)])
    print(json.dumps({"name": found.name, "version": found.version, "rpc": found.manifest.rpc}))

asyncio.run(main())
"""


def test_the_test_kit_checks_an_installed_plugin_by_name(site: Path, tmp_path: Path) -> None:
    (tmp_path / "check.py").write_text(CHECK_CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)])}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "check.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"name": "pricing", "version": "1.2.0", "rpc": ["inventory.reserve"]}


def _dist(site: Path) -> metadata.Distribution:
    return metadata.Distribution.at(site / "shop_pricing-1.2.0.dist-info")


def test_found_by_name_and_refused_outside_its_manifest(site: Path, tmp_path: Path) -> None:
    out = _run(_app(tmp_path), site)
    assert out["pricing.quote"] == ["ok", "reserved A1"]
    kind, code, message = out["pricing.peek"]
    assert (kind, code) == ("PermissionDeniedError", "organelle.plugin.denied")
    assert "may not use rpc 'inventory.release'" in message


def test_a_matching_pin_loads_and_a_changed_file_is_refused_before_import(
    site: Path, tmp_path: Path
) -> None:
    pin = digest(_dist(site))
    assert pin.startswith("sha256:")
    assert len(pin) == 71
    plugins = f'[plugins.pins]\nshop-pricing = "{pin}"\n'
    assert _run(_app(tmp_path / "ok", plugins), site)["pricing.quote"] == ["ok", "reserved A1"]

    changed = tmp_path / "changed"
    changed_site = changed / "site"
    pip_install(build_wheel(changed / "dist"), changed_site)
    assert digest(_dist(changed_site)) == pin  # a fresh install of the same wheel: same pin
    cache = changed_site / "shop_pricing" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "__init__.cpython-311.pyc").write_bytes(b"compiled on first import")
    assert digest(_dist(changed_site)) == pin  # bytecode is not part of the pin
    added = changed_site / "shop_pricing" / "_fast.py"
    added.write_text("QUOTE = 0\n")
    assert digest(_dist(changed_site)) != pin  # a module nobody listed is a change too
    added.unlink()
    assert digest(_dist(changed_site)) == pin
    source = changed_site / "shop_pricing" / "__init__.py"
    source.write_text(source.read_text().replace('"inventory.reserve",', '"inventory.*",'))
    assert digest(_dist(changed_site)) != pin
    out = _run(_app(changed / "app", plugins), changed_site)
    kind, code, message = out["load"]
    assert (kind, code) == ("PluginPinError", "organelle.plugin.pin")
    assert "differ from its pin" in message
    assert out["imported"] is False  # refused before its code ran


def test_require_pins_refuses_an_unpinned_plugin(site: Path, tmp_path: Path) -> None:
    out = _run(_app(tmp_path, "[plugins]\nrequire_pins = true\n"), site)
    assert out["load"][:2] == ["PluginPinError", "organelle.plugin.pin"]
    assert "has no pin" in out["load"][2]


def test_an_unknown_plugin_name_says_how_to_get_one(site: Path, tmp_path: Path) -> None:
    app = _app(tmp_path)
    app.write_text(app.read_text().replace('"pricing"', '"shipping"'))
    kind, code, message = _run(app, site)["load"]
    assert (kind, code) == ("PluginError", "organelle.plugin")
    assert "no plugin named 'shipping' is installed" in message


def test_pins_are_checked_without_importing(site: Path) -> None:
    dist = _dist(site)
    plugin = Plugin("pricing", "shop_pricing:Pricing", dist)
    assert plugin.dist_name == "shop-pricing"
    assert plugin.version == "1.2.0"
    assert verify(plugin, Pins()) is False  # not pinned, not required
    assert verify(plugin, parse_pins({"pins": {"Shop_Pricing": digest(dist)}})) is True
    with pytest.raises(PluginError, match="differ from its pin"):
        verify(plugin, parse_pins({"pins": {"shop-pricing": "sha256:" + "0" * 64}}))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([], "must be a table"),
        ({"pin": {}}, "unknown key 'pin'"),
        ({"pins": {"x": "md5:abc"}}, "plugins.pins.x: expected 'sha256:'"),
        ({"require_pins": "yes"}, "must be true or false"),
    ],
)
def test_bad_plugins_sections(section: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pins(section)
