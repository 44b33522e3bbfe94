"""RBAC: wildcard permissions, role inheritance, and the authorizer's guard."""

from __future__ import annotations

import pytest

from organelle.auth import Principal, Rbac
from organelle.auth.api_keys import ApiKeys, hash_key
from organelle.auth.rbac import permission_matches
from organelle.context import root_context
from organelle.errors import ConfigError, ForbiddenError, UnauthenticatedError


@pytest.mark.parametrize(
    ("pattern", "permission", "expected"),
    [
        ("orders.read", "orders.read", True),
        ("orders.read", "orders.write", False),
        ("orders.*", "orders.read", True),
        ("orders.*", "orders.items.read", True),
        ("orders.*", "orders", False),
        ("*", "anything.at.all", True),
        ("*.read", "orders.read", True),
        ("*.read", "orders.items.read", False),
        ("orders.*.read", "orders.items.read", True),
        ("orders.*.read", "orders.items.write", False),
    ],
)
def test_permission_patterns(pattern: str, permission: str, expected: bool) -> None:
    assert permission_matches(pattern, permission) is expected


def test_inheritance_and_grants() -> None:
    rbac = Rbac(
        {"reader": ["things.read"], "writer": ["things.write"], "admin": ["*"]},
        {"writer": ["reader"], "admin": ["writer"]},
    )
    assert rbac.grants(frozenset({"writer"}), "things.read")
    assert not rbac.grants(frozenset({"reader"}), "things.write")
    assert rbac.grants(frozenset({"admin"}), "billing.refund")
    assert rbac.expand(frozenset({"admin"})) == {"admin", "writer", "reader"}
    assert not rbac.grants(frozenset(), "things.read")


def test_bad_inheritance_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        Rbac({"a": []}, {"a": ["ghost"]})
    with pytest.raises(ConfigError, match="cycle"):
        Rbac({"a": [], "b": []}, {"a": ["b"], "b": ["a"]})


def test_guard_checks_roles_through_inheritance_and_permissions() -> None:
    auth = Rbac({"reader": ["x.read"], "admin": ["*"]}, {"admin": ["reader"]}).authorizer()
    guard = auth.guard_for("m.f", ("reader",), ("x.read",))
    assert guard is not None
    assert auth.guard_for("m.open", (), ()) is None
    guard(root_context(principal=Principal(id="a", roles=frozenset({"admin"}))))
    guard(root_context(principal=Principal(id="r", roles=frozenset({"reader"}))))
    with pytest.raises(UnauthenticatedError):
        guard(root_context())
    with pytest.raises(ForbiddenError):
        guard(root_context(principal=Principal(id="n", roles=frozenset({"nobody"}))))
    strict = auth.guard_for("m.g", (), ("x.write",))
    assert strict is not None
    with pytest.raises(ForbiddenError):
        strict(root_context(principal=Principal(id="r", roles=frozenset({"reader"}))))


def test_api_keys_are_looked_up_by_hash() -> None:
    keys = ApiKeys({hash_key("k-123"): {"id": "ci", "roles": ["writer"]}})
    principal = keys.lookup("k-123")
    assert principal is not None
    assert principal.id == "ci"
    assert principal.type == "api_key"
    assert keys.lookup("k-124") is None
    assert keys.lookup("x" * 10_000) is None
    with pytest.raises(ConfigError):
        ApiKeys({"k-123": {"id": "plain"}})
