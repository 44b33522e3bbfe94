r"""Signing events on the wire: HMAC-SHA256 or Ed25519, with key ids for rotation.

What is signed is one canonical byte string over the headers that say what
the event is and the body *as sent* (after compression)::

    organelle-signature-v1\n
    <name>:<value>\n          one line per covered header, sorted by name
    \n
    <body>

Covered headers are every ``ce-*`` header, ``content-type``, ``traceparent``,
``tracestate`` and every ``Organelle-*`` header but the signature itself —
names lower-cased, values with surrounding spaces stripped (what a NATS
header parser gives). Changing, adding or removing any of them, or a byte of
the body, breaks the signature; headers a relay adds (``Nats-*``) do not.

The signature travels as ``Organelle-Signature: <kid>:<alg>:<base64>``, with
``alg`` ``hmac-sha256`` or ``ed25519``. A verifier looks the key up by
``kid`` in its keyring and uses *that key's* algorithm: the header's ``alg``
must agree, so a message can never choose how it is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from organelle.errors import ConfigError, SignatureError

__all__ = [
    "ALGORITHMS",
    "KID",
    "SIGNATURE_HEADER",
    "Keyring",
    "SigningKey",
    "canonical",
    "crypto",
]

SIGNATURE_HEADER = "Organelle-Signature"
ALGORITHMS = ("hmac-sha256", "ed25519")
KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SIG_LOWER = SIGNATURE_HEADER.lower()
_PREAMBLE = b"organelle-signature-v1\n"
_COVERED_EXACT = frozenset(("content-type", "traceparent", "tracestate"))
_MIN_HMAC_BYTES = 16


def crypto(what: str) -> Any:
    """The ``cryptography`` package's primitives module, or a clear ``ConfigError``."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.hazmat.primitives.ciphers import aead
    except ImportError:
        raise ConfigError(
            f"{what} needs the cryptography package: pip install 'organelle[crypto]'"
        ) from None

    class _Crypto:
        Ed25519PrivateKey = ed25519.Ed25519PrivateKey
        Ed25519PublicKey = ed25519.Ed25519PublicKey
        AESGCM = aead.AESGCM
        load_pem_private_key = staticmethod(serialization.load_pem_private_key)
        load_pem_public_key = staticmethod(serialization.load_pem_public_key)

    return _Crypto


def _covered(name: str) -> bool:
    return (
        name.startswith("ce-")
        or name in _COVERED_EXACT
        or (name.startswith("organelle-") and name != _SIG_LOWER)
    )


def canonical(headers: Mapping[str, str], body: bytes) -> bytes:
    """The bytes a signature covers (see the module docstring).

    Raises:
        SignatureError: a covered header value holds a line break (the lines
            would be ambiguous), reason ``bad_signature``.
    """
    lines = []
    for name, value in headers.items():
        lower = name.strip().lower()
        if _covered(lower):
            text = value.strip()
            if "\n" in text or "\r" in text:
                raise SignatureError(
                    f"header {lower!r} holds a line break", details={"reason": "bad_signature"}
                )
            lines.append(f"{lower}:{text}\n")
    lines.sort()
    return b"".join((_PREAMBLE, "".join(lines).encode(), b"\n", body))


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    """One key of a keyring.

    Attributes:
        kid: its id, as it appears in the signature header.
        alg: ``hmac-sha256`` or ``ed25519``.
        secret: the HMAC shared secret.
        private: the Ed25519 private key (a ``cryptography`` object; signers only).
        public: the Ed25519 public key (verifiers).
    """

    kid: str
    alg: str
    secret: bytes = b""
    private: Any = None
    public: Any = None

    def __post_init__(self) -> None:
        if not KID.match(self.kid):
            raise ConfigError(f"key id {self.kid!r}: letters, digits, '.', '_' or '-' (1-64)")
        if self.alg == "hmac-sha256":
            if len(self.secret) < _MIN_HMAC_BYTES:
                raise ConfigError(
                    f"key {self.kid!r}: an HMAC secret needs at least {_MIN_HMAC_BYTES} bytes"
                )
        elif self.alg == "ed25519":
            if self.public is None and self.private is not None:
                object.__setattr__(self, "public", self.private.public_key())
            if self.public is None:
                raise ConfigError(f"key {self.kid!r}: an ed25519 key needs a public or private key")
        else:
            raise ConfigError(f"key {self.kid!r}: unknown algorithm {self.alg!r}")

    def sign(self, data: bytes) -> bytes:
        """The raw signature of ``data``."""
        if self.alg == "hmac-sha256":
            return hmac.new(self.secret, data, hashlib.sha256).digest()
        if self.private is None:
            raise ConfigError(f"key {self.kid!r} has no private key to sign with")
        out: bytes = self.private.sign(data)
        return out

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's over ``data``."""
        if self.alg == "hmac-sha256":
            return hmac.compare_digest(
                hmac.new(self.secret, data, hashlib.sha256).digest(), signature
            )
        try:
            self.public.verify(signature, data)
        except Exception:
            return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Keyring:
    """The signing keys of a node: verify with any, sign with ``active`` (if set).

    Example::

        ring = Keyring(keys={"k1": SigningKey(kid="k1", alg="hmac-sha256", secret=s)},
                       active="k1")
        value = ring.sign(headers, body)          # the Organelle-Signature header value
        ring.verify({**headers, "organelle-signature": value}, body)
    """

    keys: Mapping[str, SigningKey] = field(default_factory=dict)
    active: str | None = None

    def __post_init__(self) -> None:
        if self.active is not None:
            key = self.keys.get(self.active)
            if key is None:
                raise ConfigError(f"the signing key {self.active!r} is not in the keyring")
            if key.alg == "ed25519" and key.private is None:
                raise ConfigError(f"the signing key {self.active!r} has no private key")

    def sign(self, headers: Mapping[str, str], body: bytes) -> str:
        """The ``Organelle-Signature`` value for an event with these headers and body."""
        if self.active is None:
            raise ConfigError("no signing key is active")
        key = self.keys[self.active]
        raw = key.sign(canonical(headers, body))
        return f"{key.kid}:{key.alg}:{base64.b64encode(raw).decode()}"

    def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """Check the event's signature; return the key id it was signed with.

        ``headers`` are the received ones (names lower-cased).

        Raises:
            SignatureError: ``details["reason"]`` is ``unsigned`` (no signature
                header), ``unknown_kid`` (a key this node does not hold) or
                ``bad_signature`` (malformed, another algorithm than the key's,
                or not matching: the headers or body were changed).
        """
        value = headers.get(_SIG_LOWER)
        if not value:
            raise SignatureError("the event is not signed", details={"reason": "unsigned"})
        kid, _, rest = value.strip().partition(":")
        alg, _, text = rest.partition(":")
        key = self.keys.get(kid)
        if key is None:
            raise SignatureError(
                f"the event is signed with key {kid[:64]!r}, which this node does not hold",
                details={"reason": "unknown_kid", "kid": kid[:64]},
            )
        if alg != key.alg:
            raise SignatureError(
                f"key {kid!r} is {key.alg}, the signature says {alg[:32]!r}",
                details={"reason": "bad_signature", "kid": kid},
            )
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(
                "the signature is not base64", details={"reason": "bad_signature", "kid": kid}
            ) from None
        if not key.verify(canonical(headers, body), raw):
            raise SignatureError(
                f"the event's signature (key {kid!r}) does not match its headers and body",
                details={"reason": "bad_signature", "kid": kid},
            )
        return kid
