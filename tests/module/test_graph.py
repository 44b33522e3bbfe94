from __future__ import annotations

import pytest
from packaging.version import Version

from organelle.errors import DefinitionError, DependencyError
from organelle.module._graph import Node, parse_dependency, start_levels


def node(name: str, version: str = "1.0.0", *deps: str, optional: tuple[str, ...] = ()) -> Node:
    parsed = tuple(parse_dependency(name, d) for d in deps)
    parsed += tuple(parse_dependency(name, d, optional=True) for d in optional)
    return Node(name, Version(version), parsed)


def graph(*nodes: Node) -> dict[str, Node]:
    return {n.name: n for n in nodes}


def test_levels_follow_dependencies() -> None:
    levels = start_levels(
        graph(
            node("orders", "1.0.0", "inventory", "pricing"),
            node("inventory", "1.0.0", "pricing"),
            node("pricing"),
            node("mail"),
        )
    )
    assert levels == [["pricing", "mail"], ["inventory"], ["orders"]]


def test_unknown_dependency_names_both() -> None:
    with pytest.raises(
        DependencyError, match="'orders' requires 'pricing', which is not registered"
    ):
        start_levels(graph(node("orders", "1.0.0", "pricing")))


def test_version_mismatch() -> None:
    with pytest.raises(DependencyError, match=r"requires pricing<2,>=1.2.*version 2.0.0"):
        start_levels(graph(node("orders", "1.0.0", "pricing>=1.2,<2"), node("pricing", "2.0.0")))


def test_cycle_is_named() -> None:
    with pytest.raises(DependencyError, match="dependency cycle: a -> b -> c -> a") as info:
        start_levels(
            graph(node("a", "1.0.0", "b"), node("b", "1.0.0", "c"), node("c", "1.0.0", "a"))
        )
    assert info.value.details["cycle"] == ["a", "b", "c", "a"]


def test_optional_dependency_orders_when_present_and_is_skipped_when_absent() -> None:
    assert start_levels(graph(node("a", optional=("b",)), node("b"))) == [["b"], ["a"]]
    assert start_levels(graph(node("a", optional=("b",)))) == [["a"]]


def test_present_modules_satisfy_dependencies() -> None:
    assert start_levels(graph(node("a", "1.0.0", "b>=1")), present={"b": Version("1.5")}) == [["a"]]


@pytest.mark.parametrize(
    "bad", ["", "pricing[x]", "pri cing", "Pricing.X", "pricing; python_version<'3'"]
)
def test_bad_dependency_strings(bad: str) -> None:
    with pytest.raises(DefinitionError):
        parse_dependency("orders", bad)


def test_self_dependency() -> None:
    with pytest.raises(DefinitionError, match="cannot depend on itself"):
        parse_dependency("orders", "orders>=1")


def test_a_chain_deeper_than_the_recursion_limit_gets_its_levels() -> None:
    # Listed dependents first, so every module waits on one not yet placed.
    n = 3_000
    nodes = graph(*(node(f"m{i}", "1.0.0", f"m{i + 1}") for i in range(n - 1)), node(f"m{n - 1}"))
    levels = start_levels(nodes)
    assert levels == [[f"m{i}"] for i in reversed(range(n))]


def test_a_cycle_at_the_end_of_a_long_chain_is_named() -> None:
    n = 3_000
    chain = [node(f"m{i}", "1.0.0", f"m{i + 1}") for i in range(n - 1)]
    closing = node(f"m{n - 1}", "1.0.0", f"m{n - 3}")
    with pytest.raises(DependencyError) as info:
        start_levels(graph(*chain, closing))
    assert info.value.details["cycle"] == [f"m{n - 3}", f"m{n - 2}", f"m{n - 1}", f"m{n - 3}"]


def test_levels_of_a_diamond_take_the_deepest_path() -> None:
    levels = start_levels(
        graph(
            node("top", "1.0.0", "left", "right"),
            node("left", "1.0.0", "base"),
            node("right", "1.0.0", "mid"),
            node("mid", "1.0.0", "base"),
            node("base"),
        )
    )
    assert levels == [["base"], ["left", "mid"], ["right"], ["top"]]
