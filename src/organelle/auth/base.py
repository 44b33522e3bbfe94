"""Principals and the authorizer port that guards RPC methods on every call path.

A principal travels in the request context (``context().principal``), so a
handler sees who called, and nested calls, events and remote calls carry it
on. ``@rpc(roles=…, permissions=…)`` is enforced by the kernel itself, not by
the HTTP edge: a direct ``kernel.call_with(…, principal=p)`` is checked alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from organelle.errors import ForbiddenError, UnauthenticatedError

__all__ = ["Authorizer", "Guard", "Principal", "RoleAuthorizer"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who makes a request.

    Attributes:
        id: stable identifier (a user id, a service name, an API key id).
        type: ``"user"``, ``"service"``, ``"api_key"``…
        roles: role names granted to it.
        claims: the raw claims it was built from (a JWT's payload, …).
    """

    id: str
    type: str = "user"
    roles: frozenset[str] = field(default_factory=frozenset)
    claims: Mapping[str, Any] = field(default_factory=dict)


Guard = Callable[[Any], None]
"""Checks a request context; raises ``UnauthenticatedError`` / ``ForbiddenError``."""


class Authorizer(Protocol):
    """Builds the guard of one RPC method from its declared roles and permissions."""

    def guard_for(
        self, target: str, roles: tuple[str, ...], permissions: tuple[str, ...]
    ) -> Guard | None:
        """Return a guard, or ``None`` when the method is open to everyone."""
        ...


def _roles_of(principal: Any) -> frozenset[str]:
    roles = getattr(principal, "roles", None)
    if roles is None and isinstance(principal, Mapping):
        roles = principal.get("roles")
    return roles if isinstance(roles, frozenset) else frozenset(roles or ())


class RoleAuthorizer:
    """The default authorizer: ``roles`` needs any one of the roles.

    ``permissions`` need an RBAC mapping of roles to permissions (dotted,
    with ``*`` wildcards); ``organelle.auth.rbac`` provides it, and without one
    a method that declares permissions refuses everyone rather than everyone
    getting in.
    """

    def __init__(
        self,
        grants: Callable[[frozenset[str], str], bool] | None = None,
        *,
        expand: Callable[[frozenset[str]], frozenset[str]] | None = None,
    ) -> None:
        self._grants = grants
        self._expand = expand

    def guard_for(
        self, target: str, roles: tuple[str, ...], permissions: tuple[str, ...]
    ) -> Guard | None:
        """Return the check for ``target``, or ``None`` if it declares nothing."""
        if not roles and not permissions:
            return None
        wanted = frozenset(roles)
        grants, expand = self._grants, self._expand

        def guard(ctx: Any) -> None:
            principal = getattr(ctx, "principal", None)
            if principal is None:
                raise UnauthenticatedError(f"{target} needs an authenticated caller")
            have = _roles_of(principal)
            if wanted and not ((expand(have) if expand else have) & wanted):
                raise ForbiddenError(
                    f"{target} needs one of the roles {', '.join(sorted(wanted))}",
                    details={"target": target, "roles": sorted(wanted)},
                )
            for perm in permissions:
                if grants is None or not grants(have, perm):
                    raise ForbiddenError(
                        f"{target} needs the permission {perm!r}",
                        details={"target": target, "permission": perm},
                    )

        return guard
