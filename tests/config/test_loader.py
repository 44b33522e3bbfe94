from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pydantic
import pytest

from organelle import ConfigError, Kernel, Module
from organelle.config import apply_env, import_object, load_file


class Stock(Module):
    name = "stock"

    class Config(pydantic.BaseModel):
        low_stock: int = 5
        tags: list[str] = []

    started: ClassVar[list[int]] = []


APP = """
[kernel]
modules = ["tests.config.test_loader:Stock"]
call_timeout_s = 3

[modules.stock]
low_stock = 2
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_from_config_toml(tmp_path: Path) -> None:
    k = Kernel.from_config(write(tmp_path, "app.toml", APP), environ={})
    assert k.module("stock").config.low_stock == 2
    assert k.settings.call_timeout_s == 3


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "ORGANELLE__MODULES__STOCK__LOW_STOCK": "7",
        "ORGANELLE__MODULES__STOCK__TAGS": '["a", "b"]',
        "ORGANELLE__KERNEL__CALL_TIMEOUT_S": "1.5",
        "UNRELATED": "x",
    }
    k = Kernel.from_config(write(tmp_path, "app.toml", APP), environ=env)
    assert k.module("stock").config.low_stock == 7
    assert k.module("stock").config.tags == ["a", "b"]
    assert k.settings.call_timeout_s == 1.5


def test_env_override_invalid_names_key(tmp_path: Path) -> None:
    env = {"ORGANELLE__MODULES__STOCK__LOW_STOCK": "lots"}
    with pytest.raises(ConfigError, match="modules.stock.low_stock"):
        Kernel.from_config(write(tmp_path, "app.toml", APP), environ=env)


def test_yaml(tmp_path: Path) -> None:
    text = "kernel:\n  modules: ['tests.config.test_loader:Stock']\nmodules:\n  stock:\n    low_stock: 9\n"
    k = Kernel.from_config(write(tmp_path, "app.yaml", text), environ={})
    assert k.module("stock").config.low_stock == 9


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("app.toml", "[kernel\n", "invalid TOML"),
        ("app.yaml", "a: [1,\n", "invalid YAML"),
        ("app.ini", "x=1", "unknown config format"),
        ("app.yaml", "- 1\n- 2\n", "top level must be a table"),
        (
            "app.toml",
            '[kernel]\nmodules = ["nope.nothing:X"]\n',
            r"kernel.modules\[0\]: cannot import 'nope.nothing'",
        ),
        (
            "app.toml",
            '[kernel]\nmodules = ["tests.config.test_loader:Nope"]\n',
            "has no attribute 'Nope'",
        ),
        # a name without a colon is a plugin's entry-point name (docs/plugins.md)
        ("app.toml", '[kernel]\nmodules = ["no_colon"]\n', "no plugin named 'no_colon'"),
        ("app.toml", "[kernel]\ncall_timeout_s = 'x'\n", "kernel.call_timeout_s"),
        ("app.toml", "modules = 3\n", "modules"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Kernel.from_config(write(tmp_path, name, text), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_file(tmp_path / "nope.toml")


def test_apply_env_nested_and_json() -> None:
    out = apply_env({"a": {"b": 1}}, {"ORGANELLE__A__C": "true", "ORGANELLE__X": "plain text"})
    assert out == {"a": {"b": 1, "c": True}, "x": "plain text"}
    with pytest.raises(ConfigError, match="empty key"):
        apply_env({}, {"ORGANELLE__A____B": "1"})


def test_import_object_dotted() -> None:
    assert import_object("organelle.kernel:Kernel.from_config") == Kernel.from_config


def test_pythonpath_relative_to_config(tmp_path: Path) -> None:
    pkg = tmp_path / "lib" / "myapp_pkg_xyz"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from organelle import Module\nclass Thing(Module):\n    name = 'thing'\n"
    )
    app = write(
        tmp_path,
        "app.toml",
        '[kernel]\npythonpath = ["lib"]\nmodules = ["myapp_pkg_xyz:Thing"]\n',
    )
    assert "thing" in Kernel.from_config(app, environ={}).modules()
