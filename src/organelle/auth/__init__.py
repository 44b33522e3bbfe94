"""Identity and access: principals, and the guard on every RPC call path."""

from organelle.auth.base import Authorizer, Guard, Principal, RoleAuthorizer

__all__ = ["Authorizer", "Guard", "Principal", "RoleAuthorizer"]
