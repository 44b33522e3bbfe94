"""Role-based access control: roles grant dotted permissions, with wildcards and inheritance.

A permission is dotted (``orders.read``). A granted pattern's ``*`` matches
exactly one token, except as the last token, where it matches one or more
(``orders.*`` covers ``orders.read`` and ``orders.items.read``; ``*`` alone
covers everything). Roles may inherit other roles, so ``admin`` can include
``writer`` which includes ``reader``; ``@rpc(roles=["reader"])`` then admits
an admin too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from organelle.auth.base import RoleAuthorizer
from organelle.errors import ConfigError

__all__ = ["Rbac", "RbacAuthorizer", "permission_matches"]

_MEMO_MAX = 4096


def permission_matches(pattern: str, permission: str) -> bool:
    """Whether a granted ``pattern`` covers ``permission`` (see the module docstring)."""
    if pattern in {permission, "*"}:
        return True
    want = pattern.split(".")
    have = permission.split(".")
    for i, token in enumerate(want):
        last = i == len(want) - 1
        if token == "*" and last:  # noqa: S105 - a wildcard, not a password
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


class Rbac:
    """Roles to permissions, with inheritance; the policy behind ``RbacAuthorizer``.

    Args:
        roles: role name to the permission patterns it grants.
        inherits: role name to the roles it includes.

    Raises:
        ConfigError: an inherited role is unknown, or inheritance has a cycle.
    """

    def __init__(
        self,
        roles: Mapping[str, Iterable[str]],
        inherits: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self._grants = {role: tuple(perms) for role, perms in roles.items()}
        self._inherits = {role: tuple(parents) for role, parents in (inherits or {}).items()}
        for role, parents in self._inherits.items():
            for parent in parents:
                if parent not in self._grants and parent not in self._inherits:
                    raise ConfigError(f"auth.rbac.inherits.{role}: unknown role {parent!r}")
        for role in self._inherits:
            self._closure(role, ())
        self._memo: dict[tuple[frozenset[str], str], bool] = {}
        self._expanded: dict[frozenset[str], frozenset[str]] = {}

    def _closure(self, role: str, path: tuple[str, ...]) -> frozenset[str]:
        if role in path:
            raise ConfigError(f"auth.rbac.inherits: cycle {' -> '.join((*path, role))}")
        found = {role}
        for parent in self._inherits.get(role, ()):
            found |= self._closure(parent, (*path, role))
        return frozenset(found)

    def expand(self, roles: frozenset[str]) -> frozenset[str]:
        """The roles given plus every role they inherit."""
        known = self._expanded.get(roles)
        if known is None:
            known = frozenset().union(*(self._closure(r, ()) for r in roles)) if roles else roles
            if len(self._expanded) < _MEMO_MAX:
                self._expanded[roles] = known
        return known

    def grants(self, roles: frozenset[str], permission: str) -> bool:
        """Whether any of ``roles`` (or a role they inherit) grants ``permission``."""
        key = (roles, permission)
        known = self._memo.get(key)
        if known is None:
            known = any(
                permission_matches(pattern, permission)
                for role in self.expand(roles)
                for pattern in self._grants.get(role, ())
            )
            if len(self._memo) < _MEMO_MAX:
                self._memo[key] = known
        return known

    def authorizer(self) -> RbacAuthorizer:
        """The kernel authorizer enforcing this policy on every call path."""
        return RbacAuthorizer(self)


class RbacAuthorizer(RoleAuthorizer):
    """An ``Authorizer``: ``roles`` needs one of them (inheritance counts), ``permissions`` all."""

    def __init__(self, rbac: Rbac) -> None:
        super().__init__(rbac.grants, expand=rbac.expand)
        self.rbac = rbac
