"""The settings of events on the wire: signing, compression and protected fields.

Given as ``[kernel.transport_options.security]`` (docs/event-security.md)::

    [kernel.transport_options.security]
    sign_kid = "k2"                       # sign with this key (absent: send unsigned)
    require_signatures = true             # drop unsigned, unknown-kid and tampered events
    keys.k1 = "env:ORG_SIGN_K1"           # a string: an HMAC-SHA256 shared secret
    keys.k2 = { alg = "ed25519", private = "file:/run/secrets/k2.pem" }
    compression = "zstd"                  # auto | zstd | gzip | none
    compress_above = 16384
    field_kid = "f1"
    field_keys.f1 = "env:ORG_FIELD_F1"    # AES-GCM: 16, 24 or 32 bytes

A key value is read as: ``env:NAME`` (the variable's value), ``file:PATH``
(the file's content, trailing white space dropped), else the text itself;
what that gives is then ``base64:…`` or ``hex:…`` decoded, a PEM block for
Ed25519, or else taken as UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from organelle.envelope._compress import zstd_available
from organelle.envelope._protect import FieldKeys
from organelle.envelope._seal import ALGORITHMS, KID, Keyring, SigningKey, crypto
from organelle.errors import ConfigError

__all__ = ["EventSecurity", "KeySpec", "SecuritySettings", "parse_security"]

_ED25519_RAW = 32


class KeySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One signing key in full form (a bare string is an HMAC secret).

    Attributes:
        alg: ``hmac`` (``hmac-sha256``) or ``ed25519``.
        secret: the HMAC shared secret.
        public: the Ed25519 public key (32 raw bytes as ``base64:``/``hex:``, or PEM).
        private: the Ed25519 private key (32-byte seed, or PEM); only a signer needs it.
    """

    alg: Literal["hmac", "hmac-sha256", "ed25519"] = "hmac"
    secret: str = ""
    public: str = ""
    private: str = ""


class SecuritySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[kernel.transport_options.security]`` as written (see the module docstring).

    Attributes:
        sign_kid: the key this node signs its events with (``None``: unsigned).
        keys: signing keys by id; a verifier accepts any of them.
        require_signatures: drop every event that is unsigned, signed with a
            key not in ``keys``, or whose signature does not match.
        compression: ``auto`` (zstd when ``zstandard`` is installed, else gzip),
            ``zstd``, ``gzip`` or ``none``.
        compress_above: bodies larger than this many bytes are compressed.
        compression_level: the algorithm's level (default: zstd 3, gzip 6).
        max_decompressed_bytes: the largest body a compressed event may unpack
            to (and the largest body this node sends); 0: the transport's max payload.
        field_kid: the key protected fields are encrypted with (``None``: sent plain).
        field_keys: AES-GCM keys by id; received fields are opened with any.
        log_interval_s: a reason for dropping events is logged at most once per interval.
    """

    sign_kid: str | None = None
    keys: dict[str, str | KeySpec] = msgspec.field(default_factory=dict)
    require_signatures: bool = False
    compression: Literal["auto", "zstd", "gzip", "none"] = "auto"
    compress_above: int = 16 * 1024
    compression_level: int | None = None
    max_decompressed_bytes: int = 0
    field_kid: str | None = None
    field_keys: dict[str, str] = msgspec.field(default_factory=dict)
    log_interval_s: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSecurity:
    """What a transport applies to events: keyrings and compression, resolved and checked.

    The default does nothing but compress bodies over 16 KiB (zstd if installed, else gzip).
    """

    signing: Keyring = field(default_factory=Keyring)
    require_signatures: bool = False
    compression: str | None = None
    compress_above: int = 16 * 1024
    compression_level: int | None = None
    max_decompressed_bytes: int = 0
    fields: FieldKeys = field(default_factory=FieldKeys)
    log_interval_s: float = 60.0

    @classmethod
    def default(cls) -> EventSecurity:
        """The settings of a transport whose options say nothing about security."""
        return cls(compression="zstd" if zstd_available() else "gzip")


def _bad(label: str, reason: str) -> ConfigError:
    return ConfigError(f"{label}: {reason}", details={"key": label})


def _read(label: str, value: str) -> str:
    """Follow an ``env:`` or ``file:`` reference."""
    if value.startswith("env:"):
        name = value[4:]
        found = os.environ.get(name)
        if not found:
            raise _bad(label, f"the environment variable {name!r} is not set")
        return found
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text(encoding="utf-8").rstrip()
        except OSError as exc:
            raise _bad(label, f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return value


def _material(label: str, value: str) -> bytes:
    """The bytes a key value stands for (references followed, ``base64:``/``hex:`` decoded)."""
    text = _read(label, value)
    try:
        if text.startswith("base64:"):
            return base64.b64decode(text[7:], validate=True)
        if text.startswith("hex:"):
            return bytes.fromhex(text[4:])
    except (binascii.Error, ValueError):
        raise _bad(label, "not valid base64/hex") from None
    if not text:
        raise _bad(label, "empty")
    return text.encode()


def _ed25519(label: str, value: str, *, private: bool) -> Any:
    lib = crypto("ed25519 signatures")
    raw = _material(label, value)
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = lib.load_pem_private_key(raw, None) if private else lib.load_pem_public_key(raw)
            wanted = lib.Ed25519PrivateKey if private else lib.Ed25519PublicKey
            if not isinstance(key, wanted):
                raise _bad(label, "the PEM key is not an Ed25519 key")
            return key
        if len(raw) != _ED25519_RAW:
            raise _bad(label, f"an Ed25519 key is 32 raw bytes (base64:/hex:), not {len(raw)}")
        kind = lib.Ed25519PrivateKey if private else lib.Ed25519PublicKey
        return kind.from_private_bytes(raw) if private else kind.from_public_bytes(raw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise _bad(label, f"not a usable Ed25519 key: {exc}") from None


def _ed25519_key(label: str, kid: str, spec: KeySpec) -> SigningKey:
    if spec.secret:
        raise _bad(label, "an ed25519 key has 'public' and/or 'private', not 'secret'")
    if not (spec.public or spec.private):
        raise _bad(label, "an ed25519 key needs 'public' (to verify) or 'private'")
    private = _ed25519(f"{label}.private", spec.private, private=True) if spec.private else None
    public = _ed25519(f"{label}.public", spec.public, private=False) if spec.public else None
    if (
        private is not None
        and public is not None
        and _raw_public(public) != _raw_public(private.public_key())
    ):
        raise _bad(label, "the public key is not the private key's")
    return SigningKey(kid=kid, alg="ed25519", private=private, public=public)


def _signing_key(label: str, kid: str, spec: str | KeySpec) -> SigningKey:
    if not KID.match(kid):
        raise _bad(label, "a key id is 1-64 letters, digits, '.', '_' or '-'")
    if isinstance(spec, str):
        spec = KeySpec(secret=spec)
    try:
        if spec.alg == "ed25519":
            return _ed25519_key(label, kid, spec)
        if spec.public or spec.private:
            raise _bad(label, "an hmac key has a 'secret', not 'public'/'private'")
        if not spec.secret:
            raise _bad(label, "an hmac key needs a 'secret'")
        return SigningKey(
            kid=kid, alg=ALGORITHMS[0], secret=_material(f"{label}.secret", spec.secret)
        )
    except ConfigError as exc:
        if exc.details.get("key"):
            raise
        raise _bad(label, exc.message) from None


def _raw_public(key: Any) -> bytes:
    from_key: bytes = key.public_bytes_raw()
    return from_key


def parse_security(raw: Any, label: str = "kernel.transport_options.security") -> EventSecurity:
    """Validate ``transport_options.security`` and resolve its keys.

    Raises:
        ConfigError: naming the key (``details["key"]``): an unknown option, a
            wrong type, a key that does not resolve or has the wrong size,
            ``sign_kid``/``field_kid`` not among the keys, ``require_signatures``
            without keys, ``zstd`` without ``zstandard``, Ed25519 or field keys
            without ``cryptography``.
    """
    if raw is None:
        return EventSecurity.default()
    if not isinstance(raw, dict):
        raise _bad(label, f"expected a table, got {raw!r}")
    try:
        settings = msgspec.convert(raw, SecuritySettings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason, _, where = text.partition(" - at `$.")
        key = where.rstrip("`") if where else ""
        if key.startswith("keys[...]"):  # msgspec does not name the dict key: find it
            key = _which_key(raw.get("keys"), key[len("keys[...]") :])
        if not key and "`" in reason:
            key = reason.split("`")[1]
        raise _bad(f"{label}.{key}" if key else label, reason) from None
    return build(settings, label)


def _which_key(keys: Any, rest: str) -> str:
    """``keys.<kid><rest>`` for the first full-form key that does not convert."""
    if isinstance(keys, dict):
        for kid, spec in keys.items():
            try:
                msgspec.convert(spec, str | KeySpec, strict=False)
            except msgspec.ValidationError:
                return f"keys.{kid}{rest}"
    return f"keys{rest}"


def _compression(settings: SecuritySettings, label: str) -> str | None:
    for name in ("compress_above", "max_decompressed_bytes"):
        if getattr(settings, name) < 0:
            raise _bad(f"{label}.{name}", "expected a non-negative number of bytes")
    if settings.compression == "auto":
        return "zstd" if zstd_available() else "gzip"
    if settings.compression == "zstd" and not zstd_available():
        raise _bad(f"{label}.compression", "zstd needs the zstandard package: organelle[zstd]")
    return None if settings.compression == "none" else settings.compression


def _keyring(settings: SecuritySettings, label: str) -> Keyring:
    keys = {
        kid: _signing_key(f"{label}.keys.{kid}", kid, spec) for kid, spec in settings.keys.items()
    }
    if settings.sign_kid is not None:
        key = keys.get(settings.sign_kid)
        if key is None:
            raise _bad(f"{label}.sign_kid", f"{settings.sign_kid!r} is not among the keys")
        if key.alg == "ed25519" and key.private is None:
            raise _bad(f"{label}.sign_kid", f"key {settings.sign_kid!r} has no private key")
    if settings.require_signatures and not keys:
        raise _bad(f"{label}.require_signatures", "needs at least one key to verify with")
    return Keyring(keys=keys, active=settings.sign_kid)


def _field_keys(settings: SecuritySettings, label: str) -> FieldKeys:
    field_keys: dict[str, bytes] = {}
    for kid, value in settings.field_keys.items():
        where = f"{label}.field_keys.{kid}"
        if not KID.match(kid):
            raise _bad(where, "a key id is 1-64 letters, digits, '.', '_' or '-'")
        field_keys[kid] = _material(where, value)
    if settings.field_kid is not None and settings.field_kid not in field_keys:
        raise _bad(f"{label}.field_kid", f"{settings.field_kid!r} is not among the field_keys")
    try:
        return FieldKeys(keys=field_keys, active=settings.field_kid)
    except ConfigError as exc:
        raise _bad(f"{label}.field_keys", exc.message) from None


def build(settings: SecuritySettings, label: str) -> EventSecurity:
    """``EventSecurity`` from parsed settings (see ``parse_security``)."""
    if settings.log_interval_s <= 0:
        raise _bad(f"{label}.log_interval_s", "expected a positive number of seconds")
    return EventSecurity(
        signing=_keyring(settings, label),
        require_signatures=settings.require_signatures,
        compression=_compression(settings, label),
        compress_above=settings.compress_above,
        compression_level=settings.compression_level,
        max_decompressed_bytes=settings.max_decompressed_bytes,
        fields=_field_keys(settings, label),
        log_interval_s=settings.log_interval_s,
    )
