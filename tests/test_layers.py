"""The shape of the house: imports only run down the floors, and no file sits in a circle.

Every import counts — at module level, inside a function, under
``TYPE_CHECKING`` — because each is a dependency a reader has to hold in mind
(docs/architecture.md draws the floors).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The floor of each package (longest prefix wins). Lower floors never import higher ones.
FLOORS: dict[str, int] = {
    # 1. ground: what everything may use
    "organelle.errors": 1,
    "organelle.codec": 1,
    "organelle.context": 1,
    "organelle._native": 1,
    "organelle._coro": 1,
    "organelle._extras": 1,
    "organelle._jetstream_pub": 1,
    "organelle._version": 1,
    "organelle.config": 1,
    "organelle.envelope": 1,
    # 2. ports: the module model and each building block's Protocol plus backends
    "organelle.module": 2,
    "organelle.topics": 2,
    "organelle.auth": 2,
    "organelle.transport": 2,
    "organelle.storage": 2,
    "organelle.jobs": 2,
    "organelle.streams": 2,
    "organelle.blobs": 2,
    "organelle.flags": 2,
    "organelle.secrets": 2,
    "organelle.sagas": 2,
    "organelle.locks": 2,
    "organelle.plugins": 2,
    "organelle.cluster_config": 2,
    # 3. the kernel and its listeners
    "organelle.kernel": 3,
    "organelle.observability": 3,
    # 4. edges, built on the public API
    "organelle.gateway": 4,
    "organelle.dashboard": 4,
    "organelle.health": 4,
    "organelle.ops": 4,
    "organelle.contracts": 4,
    "organelle.testing": 4,
    "organelle.deploy": 4,
    "organelle.scaling": 4,
    # 5. the command line
    "organelle.cli": 5,
    # the package itself re-exports the public API from every floor
    "organelle": 6,
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in (SRC / "organelle").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every organelle source file ``name`` imports, by any kind of import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import sub`` imports the submodule when one exists.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                for a in node.names
                if a.name != "_speedups"  # the compiled extension: no source file
            ]
        else:
            continue
        for target in targets:
            if target.startswith("organelle"):
                resolved = _resolve(target)
                if resolved is not None and resolved != name:
                    yield resolved


GRAPH: dict[str, set[str]] = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def floor_of(name: str) -> int:
    best = max((p for p in FLOORS if name == p or name.startswith(p + ".")), key=len)
    return FLOORS[best]


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(GRAPH):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(GRAPH[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(GRAPH[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_every_source_file_has_a_floor() -> None:
    assert "organelle.kernel._kernel" in MODULES  # the walk found the tree
    unmapped = [n for n in MODULES if not any(n == p or n.startswith(p + ".") for p in FLOORS)]
    assert unmapped == []


def test_no_import_circles() -> None:
    circles = _circles()
    report = "\n".join(
        " -> ".join(c) + "\n" + "\n".join(f"    {m} imports {sorted(GRAPH[m] & set(c))}" for m in c)
        for c in circles
    )
    assert circles == [], f"files in import circles:\n{report}"


def test_imports_run_down_the_floors() -> None:
    upward = [
        f"{name} (floor {floor_of(name)}) imports {target} (floor {floor_of(target)})"
        for name, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if floor_of(target) > floor_of(name)
    ]
    assert upward == [], "imports that run up the floors:\n" + "\n".join(upward)


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    """The guard itself can fail: a made-up edge closes a circle and climbs a floor."""
    GRAPH["organelle.errors"].add("organelle.kernel._kernel")
    try:
        assert any("organelle.errors" in c for c in _circles())
        assert floor_of("organelle.kernel._kernel") > floor_of("organelle.errors")
    finally:
        GRAPH["organelle.errors"].discard("organelle.kernel._kernel")
