"""Escaping arbitrary keys into the NATS KV key alphabet ``[-/_=.A-Za-z0-9]``.

The escaping is per dot-separated token, so a key keeps its subject
hierarchy: ``"orders.é"`` becomes ``"orders.=C3=A9"``. Inside a token every
byte outside ``[-/_A-Za-z0-9]`` is written ``=XX`` (UTF-8, upper-case hex;
``=`` itself becomes ``=3D``), and an empty token (``"a..b"``, a leading or
trailing dot) becomes a lone ``=``. The mapping is a bijection, so nothing is
ever mangled, and a key prefix that ends at a dot maps to a subject filter.
"""

from __future__ import annotations

import re

__all__ = ["decode_key", "encode_key", "subject_filter"]

_SAFE = frozenset(b"-/_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ESCAPE = re.compile(r"=([0-9A-F]{2})")
_TOKEN_OK = re.compile(r"^[-/_A-Za-z0-9]+$")


def _encode_token(token: str) -> str:
    if not token:
        return "="
    if _TOKEN_OK.match(token):
        return token
    return "".join(chr(b) if b in _SAFE else f"={b:02X}" for b in token.encode())


def _decode_token(token: str) -> str:
    if token == "=":  # noqa: S105 - the escaped empty token, not a secret
        return ""
    if "=" not in token:
        return token
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(token[i]))
            i += 1
    return out.decode()


def encode_key(key: str) -> str:
    """Escape ``key`` into a valid NATS KV key (one subject token per dotted part)."""
    return ".".join(_encode_token(t) for t in key.split("."))


def decode_key(encoded: str) -> str:
    """Invert ``encode_key``."""
    return ".".join(_decode_token(t) for t in encoded.split("."))


def subject_filter(prefix: str) -> str:
    """Widest-but-tight subject filter covering every key that starts with ``prefix``.

    The complete dotted tokens of the prefix are matched by the server; the
    partial last token is left to the caller to check.
    """
    head, _, _ = prefix.rpartition(".")
    if not head and not prefix.startswith("."):
        return ">"
    return encode_key(head) + ".>"
