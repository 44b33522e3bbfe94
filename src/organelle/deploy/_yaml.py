"""Writing manifests: one YAML file per object (PyYAML, from the ``deploy`` extra)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from organelle.errors import ConfigError

__all__ = ["dump_yaml", "write_manifests"]


def dump_yaml(data: Any) -> str:
    """``data`` as block-style YAML, keys in the order given, multi-line strings as ``|``.

    Raises:
        ConfigError: PyYAML is not installed.
    """
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "rendering manifests needs PyYAML: pip install 'organelle[deploy]'"
        ) from None

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002 - shared dicts stay written out
            return True

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _text)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def write_manifests(objects: Iterable[dict[str, Any]], out: str | Path) -> list[Path]:
    """Write each object to ``out/<kind>-<name>.yaml`` (the folder is created); return the paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for obj in objects:
        path = folder / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(dump_yaml(obj), encoding="utf-8")
        written.append(path)
    return written
