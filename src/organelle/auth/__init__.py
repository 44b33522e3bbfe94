"""Identity and access: principals, and the guard on every RPC call path.

``base`` (principals, the authorizer port) is always importable; ``rbac`` and
``api_keys`` need nothing extra; ``jwt`` and ``factory`` need the ``gateway``
extra (PyJWT, cryptography) and are imported on first use of their names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.auth.base import Authorizer, Guard, Principal, RoleAuthorizer
from organelle.auth.rbac import Rbac, RbacAuthorizer

if TYPE_CHECKING:
    from organelle.auth.api_keys import ApiKeys
    from organelle.auth.factory import Credentials, PrincipalFactory, principal_factory
    from organelle.auth.jwt import JwtVerifier

__all__ = [
    "ApiKeys",
    "Authorizer",
    "Credentials",
    "Guard",
    "JwtVerifier",
    "Principal",
    "PrincipalFactory",
    "Rbac",
    "RbacAuthorizer",
    "RoleAuthorizer",
    "principal_factory",
]

_LAZY = {
    "ApiKeys": "organelle.auth.api_keys",
    "Credentials": "organelle.auth.factory",
    "PrincipalFactory": "organelle.auth.factory",
    "principal_factory": "organelle.auth.factory",
    "JwtVerifier": "organelle.auth.jwt",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'organelle.auth' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
