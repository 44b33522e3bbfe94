"""The module dependency graph: requirement parsing, checks and start order.

Checked as a whole before anything starts, so a bad graph never leaves half a
system running.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from organelle.errors import DefinitionError, DependencyError

__all__ = ["Dependency", "Node", "parse_dependency", "parse_version", "start_levels"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class Dependency:
    """One entry of ``requires`` / ``optional``: a module name and a version range."""

    name: str
    specifier: SpecifierSet
    optional: bool = False

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


@dataclass(frozen=True, slots=True)
class Node:
    """What the graph needs to know about a module."""

    name: str
    version: Version
    deps: tuple[Dependency, ...]


def valid_name(name: object) -> bool:
    """Module names are lowercase identifiers (dashes allowed), no dots."""
    return isinstance(name, str) and bool(_NAME.match(name))


def parse_version(owner: str, version: object) -> Version:
    """Parse a module version; semver-style strings such as ``"1.2.0"``."""
    if not isinstance(version, str):
        raise DefinitionError(f"module {owner!r}: version must be a string, got {version!r}")
    try:
        return Version(version)
    except InvalidVersion:
        raise DefinitionError(
            f"module {owner!r}: version {version!r} is not a valid version (e.g. '1.2.0')"
        ) from None


def parse_dependency(owner: str, text: object, *, optional: bool = False) -> Dependency:
    """Parse ``"pricing"`` or ``"pricing>=1.2,<2"``."""
    if not isinstance(text, str):
        raise DefinitionError(f"module {owner!r}: dependency {text!r} must be a string")
    # packaging.requirements (markers, tags, sysconfig) costs ~20 ms to import:
    # paid by the first module with a dependency, not by ``import organelle``.
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise DefinitionError(f"module {owner!r}: invalid dependency {text!r}: {exc}") from None
    if req.extras or req.marker or req.url:
        raise DefinitionError(
            f"module {owner!r}: dependency {text!r} may only hold a name and a version range"
        )
    name = req.name
    if not valid_name(name):
        raise DefinitionError(f"module {owner!r}: dependency name {name!r} is not a module name")
    if name == owner:
        raise DefinitionError(f"module {owner!r} cannot depend on itself")
    return Dependency(name=name, specifier=req.specifier, optional=optional)


def start_levels(
    nodes: dict[str, Node], *, present: dict[str, Version] | None = None
) -> list[list[str]]:
    """Check the graph and return start levels: each level's modules may start together.

    ``present`` names modules outside ``nodes`` that are already running (for
    adding a module at runtime); they satisfy dependencies but are not ordered.

    Raises:
        DependencyError: unknown dependency, version mismatch, or a cycle (named).
    """
    present = present or {}
    versions = {**present, **{n.name: n.version for n in nodes.values()}}
    edges: dict[str, list[str]] = {}
    for node in nodes.values():
        targets: list[str] = []
        for dep in node.deps:
            version = versions.get(dep.name)
            if version is None:
                if dep.optional:
                    continue
                raise DependencyError(
                    f"module {node.name!r} requires {dep.name!r}, which is not registered",
                    details={"module": node.name, "requires": dep.name},
                )
            if dep.specifier and not dep.specifier.contains(version, prereleases=True):
                raise DependencyError(
                    f"module {node.name!r} requires {dep}, but {dep.name!r} is version {version}",
                    details={"module": node.name, "requires": str(dep), "found": str(version)},
                )
            if dep.name in nodes:
                targets.append(dep.name)
        edges[node.name] = targets
    depth = _depths(edges)
    levels: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for name in nodes:
        levels[depth[name]].append(name)
    return levels


def _depths(edges: dict[str, list[str]]) -> dict[str, int]:
    """Each module's level (1 + its deepest dependency's); raises on a cycle, naming it.

    One depth-first walk with its own stack, not recursion: a chain of
    thousands of modules must not hit Python's recursion limit.
    """
    depth: dict[str, int] = {}
    on_path: dict[str, int] = {}  # grey: name -> its index in ``path``
    for root, deps in edges.items():
        if root in depth:
            continue
        path = [root]
        on_path[root] = 0
        todo = [iter(deps)]
        while todo:
            for dep in todo[-1]:
                if dep in on_path:
                    cycle = [*path[on_path[dep] :], dep]
                    raise DependencyError(
                        "dependency cycle: " + " -> ".join(cycle),
                        details={"cycle": cycle},
                    )
                if dep not in depth:
                    on_path[dep] = len(path)
                    path.append(dep)
                    todo.append(iter(edges[dep]))
                    break
            else:  # every dependency placed: this one goes one level above the deepest
                todo.pop()
                name = path.pop()
                del on_path[name]
                depth[name] = 1 + max((depth[d] for d in edges[name]), default=-1)
    return depth
