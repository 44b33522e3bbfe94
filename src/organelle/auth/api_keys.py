"""API keys: principals for machines, looked up by the SHA-256 of the key.

Config holds only hashes (``organelle.auth.api_keys.hash_key("…")`` makes
one), so a leaked config file does not leak usable keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from organelle.auth.base import Principal
from organelle.errors import ConfigError

__all__ = ["ApiKeys", "hash_key"]

_HEX_LEN = 64
MAX_KEY_BYTES = 512


def hash_key(key: str) -> str:
    """The SHA-256 hex digest to put in config for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Maps key hashes to principals.

    Args:
        keys: ``{sha256_hex: {"id": ..., "roles": [...], "type": "api_key"}}``.
    """

    def __init__(self, keys: Mapping[str, Mapping[str, Any]]) -> None:
        self._by_hash: dict[str, Principal] = {}
        for digest, entry in keys.items():
            if len(digest) != _HEX_LEN or not all(c in "0123456789abcdef" for c in digest):
                raise ConfigError(
                    f"auth.api_keys: {digest[:8]!r}… is not a lowercase SHA-256 hex digest "
                    "(use organelle.auth.api_keys.hash_key)"
                )
            ident = entry.get("id")
            if not isinstance(ident, str) or not ident:
                raise ConfigError(f"auth.api_keys.{digest[:8]}…: needs an id")
            roles: Iterable[str] = entry.get("roles", ())
            self._by_hash[digest] = Principal(
                id=ident,
                type=str(entry.get("type", "api_key")),
                roles=frozenset(roles),
                claims={"key_id": ident},
            )

    def lookup(self, key: str) -> Principal | None:
        """The principal for ``key``, or ``None`` if it is unknown."""
        if not key or len(key) > MAX_KEY_BYTES:
            return None
        return self._by_hash.get(hash_key(key))
