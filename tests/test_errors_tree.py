"""Every error class of the project lives in ``organelle.errors`` and is drawn in its tree."""

from __future__ import annotations

import ast
from pathlib import Path

import organelle.errors as errors_module
from organelle.errors import OrganelleError, error_class

SRC = Path(__file__).resolve().parents[1] / "src" / "organelle"


def _error_classes_outside_errors_py() -> list[str]:
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "errors.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                bases = {
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                }
                if bases & set(errors_module.__all__):
                    found.append(f"{path.relative_to(SRC)}:{node.name}")
    return found


def test_every_organelle_error_lives_in_errors_py() -> None:
    assert _error_classes_outside_errors_py() == []


def test_every_error_class_is_drawn_in_the_tree() -> None:
    tree = errors_module.__doc__ or ""
    classes = [
        obj
        for obj in vars(errors_module).values()
        if isinstance(obj, type) and issubclass(obj, OrganelleError)
    ]
    assert len(classes) >= 20
    for cls in classes:
        assert f" {cls.__name__}" in tree, f"{cls.__name__} is not drawn in errors.py's tree"
        assert cls.__name__ in errors_module.__all__


def test_one_lease_lost_error_and_its_old_codes_still_decode() -> None:
    assert error_class("organelle.lease_lost") is errors_module.LeaseLostError
    assert error_class("organelle.jobs.lease_lost") is errors_module.LeaseLostError
    assert error_class("organelle.stream.lease_lost") is errors_module.LeaseLostError
