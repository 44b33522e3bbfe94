"""Names that explain themselves: no two classes of the project share a name.

``*Options`` is what a decorator or a config entry says of one thing
(``RpcOptions``, ``JobOptions``, ``NatsOptions``); ``*Spec`` is the description
a part keeps of it (``ModuleSpec``, ``JobSpec``, ``StreamSpec``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "organelle"


def test_no_two_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(SRC)))
    shared = {name: files for name, files in where.items() if len(set(files)) > 1}
    assert shared == {}


def test_options_are_said_and_specs_are_kept() -> None:
    from organelle.gateway import RouteOptions
    from organelle.module import ConsumeOptions, CronOptions, JobOptions, RpcOptions
    from organelle.module import SubscriptionOptions as OnOptions

    for cls in (ConsumeOptions, CronOptions, JobOptions, RpcOptions, OnOptions, RouteOptions):
        assert "Options of" in (cls.__doc__ or "")
