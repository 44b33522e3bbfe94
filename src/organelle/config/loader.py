"""Loading app config: a TOML (or YAML) file, then ``ORGANELLE__…`` environment overrides.

``ORGANELLE__MODULES__INVENTORY__LOW_STOCK=3`` sets ``modules.inventory.low_stock``;
values are read as JSON when they parse (numbers, booleans, lists) and as
plain strings otherwise.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from organelle._extras import install_hint
from organelle.errors import ConfigError

__all__ = ["ENV_PREFIX", "apply_env", "import_object", "load_file", "merge"]

ENV_PREFIX = "ORGANELLE__"


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` config file into a dict.

    Raises:
        ConfigError: missing file, unknown format or a syntax error (with position).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    elif p.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"{p}: YAML config needs PyYAML: pip install 'organelle[yaml]'"
            ) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    else:
        raise ConfigError(f"{p}: unknown config format {p.suffix!r}; use .toml or .yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a table of sections")
    return data


def apply_env(config: dict[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return ``config`` with ``ORGANELLE__SECTION__KEY`` variables applied on top."""
    environ = os.environ if environ is None else environ
    result = merge({}, config)
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key segment")
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = _parse_env_value(raw)
    return result


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, values replace)."""
    result = dict(base)
    for key, value in override.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            result[key] = merge(current, value)
        elif isinstance(value, Mapping):
            result[key] = merge({}, value)
        else:
            result[key] = value
    return result


def import_object(ref: str, *, where: str = "") -> Any:
    """Import ``"package.module:attr"`` (``attr`` may be dotted).

    Raises:
        ConfigError: naming the reference and why it cannot be imported.
    """
    label = f"{where}: " if where else ""
    if not isinstance(ref, str) or ":" not in ref:
        raise ConfigError(f"{label}{ref!r} must look like 'package.module:Name'")
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        hint = install_hint(exc)
        fix = f"; {hint}" if hint else ""
        raise ConfigError(f"{label}cannot import {module_name!r}: {exc}{fix}") from None
    except Exception as exc:  # a broken module: SyntaxError, an error at import time
        raise ConfigError(
            f"{label}importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{label}{module_name!r} has no attribute {attr!r}") from None
    return obj


def extend_path(folders: list[str], base: Path) -> None:
    """Put ``folders`` (relative to ``base``) at the front of ``sys.path``."""
    for folder in reversed(folders):
        resolved = str((base / folder).resolve())
        if resolved not in sys.path:
            sys.path.insert(0, resolved)
