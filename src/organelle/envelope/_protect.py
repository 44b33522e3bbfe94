"""Protected fields: what ``@event(secret=…, personal=…)`` marks is encrypted on the wire.

Before an event is encoded, each marked top-level field's value is encoded
with the event's codec and sealed with AES-GCM under the active field key;
the field then carries ``enc:<kid>:<base64(nonce + ciphertext)>``. The
associated data binds the ciphertext to the event type and the field name, so
it cannot be moved to another field or event type. A receiver holding ``kid``
puts the value back; one without it gets the ``enc:…`` string, never the
plaintext. ``mask()`` replaces the same fields by ``"***"`` for logs, the
dashboard and exports.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import datetime as dt
import decimal
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from organelle.codec import to_builtins
from organelle.envelope._envelope import Envelope
from organelle.envelope._event import EventType, event_type, registered
from organelle.envelope._seal import KID, crypto
from organelle.errors import ConfigError, ValidationError

__all__ = ["ENC_PREFIX", "MASKED", "FieldKeys", "mask", "protect", "protected", "unprotect"]

ENC_PREFIX = "enc:"
MASKED = "***"
_NONCE = 12
_AES_SIZES = (16, 24, 32)
# What each codec encodes natively: kept as they are so the body is byte-for-byte
# what encoding the object itself would give.
_NATIVE = (
    bytes,
    bytearray,
    memoryview,
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldKeys:
    """AES-GCM keys by id: decrypt with any, encrypt with ``active`` (if set)."""

    keys: Mapping[str, bytes] = field(default_factory=dict)
    active: str | None = None
    _aead: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            if self.active is not None:
                raise ConfigError(f"the field key {self.active!r} is not among the field keys")
            return
        lib = crypto("field protection")
        for kid, key in self.keys.items():
            if not KID.match(kid):
                raise ConfigError(f"field key id {kid!r}: letters, digits, '.', '_' or '-'")
            if len(key) not in _AES_SIZES:
                raise ConfigError(
                    f"field key {kid!r}: AES needs 16, 24 or 32 bytes, not {len(key)}"
                )
            self._aead[kid] = lib.AESGCM(key)
        if self.active is not None and self.active not in self.keys:
            raise ConfigError(f"the field key {self.active!r} is not among the field keys")

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        """``enc:<kid>:<base64>`` of ``plaintext`` under the active key."""
        if self.active is None:
            raise ConfigError("no field key is active")
        nonce = os.urandom(_NONCE)
        sealed = self._aead[self.active].encrypt(nonce, plaintext, aad)
        return f"{ENC_PREFIX}{self.active}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, value: str, aad: bytes) -> bytes | None:
        """The plaintext of an ``enc:`` value; ``None`` when its key is not held here.

        Raises:
            ValidationError: the value is malformed or fails authentication
                (changed, or sealed for another field), ``details["reason"]``
                ``"field"``.
        """
        kid, _, text = value[len(ENC_PREFIX) :].partition(":")
        aead = self._aead.get(kid)
        if aead is None:
            return None
        try:
            raw = base64.b64decode(text, validate=True)
            out: bytes = aead.decrypt(raw[:_NONCE], raw[_NONCE:], aad)
        except (binascii.Error, ValueError, Exception) as exc:  # InvalidTag among them
            message = f"a protected field does not decrypt with key {kid!r}"
            raise ValidationError(
                message,
                errors=[{"field": "$", "message": message}],
                details={"reason": "field", "error": type(exc).__name__},
            ) from None
        return out


def protected(meta: EventType) -> tuple[str, ...]:
    """The fields an event type protects: its ``secret`` then ``personal`` ones."""
    return tuple(dict.fromkeys((*meta.secret, *meta.personal)))


def _aad(event_name: str, wire_name: str) -> bytes:
    return b"organelle-field-v1\0" + event_name.encode() + b"\0" + wire_name.encode()


def _wire_names(meta: EventType) -> dict[str, str]:
    """Attribute name -> the name the codec writes (a msgspec ``rename``)."""
    cls = meta.cls
    if hasattr(cls, "__struct_fields__"):
        return {f.name: f.encode_name for f in msgspec.structs.fields(cls)}
    return {}


def protect(data: Any, keys: FieldKeys, encode: Callable[[Any], bytes], event_name: str) -> Any:
    """``data`` with its protected fields sealed: a dict ready to encode, or ``data`` itself.

    Only instances of an ``@event`` type that marks fields change, and only
    when a field key is active; the copy is made of builtins (the object
    itself is never changed).
    """
    meta = event_type(data)
    if meta is None or keys.active is None:
        return data
    names = protected(meta)
    if not names:
        return data
    doc = to_builtins(data, _NATIVE)
    if not isinstance(doc, dict):
        return data
    renamed = _wire_names(meta)
    for name in names:
        wire = renamed.get(name, name)
        if wire in doc:
            doc[wire] = keys.seal(encode(doc[wire]), _aad(event_name, wire))
    return doc


def unprotect(data: Any, keys: FieldKeys, decode: Callable[[bytes], Any], event_name: str) -> Any:
    """``data`` (a received dict) with each ``enc:`` value this node holds the key of opened.

    Values sealed with a key not held here stay as they are.

    Raises:
        ValidationError: a value sealed with a held key fails to open (see ``FieldKeys.open``).
    """
    if not isinstance(data, dict) or not keys.keys:
        return data
    out: dict[str, Any] | None = None
    for name, value in data.items():
        if isinstance(value, str) and value.startswith(ENC_PREFIX):
            plain = keys.open(value, _aad(event_name, name))
            if plain is not None:
                if out is None:
                    out = dict(data)
                out[name] = decode(plain)
    return data if out is None else out


def mask(obj: Any, as_type: type | EventType | None = None) -> Any:
    """A copy of ``obj`` with its ``secret`` and ``personal`` fields replaced by ``"***"``.

    ``obj`` is an instance of an ``@event`` type (a copy of the same type is
    returned), an ``Envelope`` (its data masked; a dict by the type
    registered under the envelope's ``type`` and ``dataversion``), or a dict
    (masked as ``as_type`` says). Anything else comes back unchanged.

    Example::

        log.info("placed: %r", mask(order_placed))
    """
    if isinstance(obj, Envelope):
        meta = _meta(as_type) or registered(obj.type, obj.dataversion)
        return obj.with_data(mask(obj.data, meta))
    meta = event_type(obj) or _meta(as_type)
    if meta is None:
        return obj
    names = protected(meta)
    if not names:
        return obj
    if isinstance(obj, dict):
        wire = _wire_names(meta)
        return {
            k: MASKED if k in names or k in {wire.get(n) for n in names} else v
            for k, v in obj.items()
        }
    return _replaced(obj, names)


def _meta(as_type: type | EventType | None) -> EventType | None:
    if as_type is None or isinstance(as_type, EventType):
        return as_type
    return event_type(as_type)


def _replaced(obj: Any, names: tuple[str, ...]) -> Any:
    """A copy of an event object with ``names`` set to the mask, skipping validation."""
    values = dict.fromkeys(names, MASKED)
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.replace(obj, **values)
    model_copy = getattr(obj, "model_copy", None)
    if callable(model_copy):
        return model_copy(update=values)
    if dataclasses.is_dataclass(obj):
        twin = copy.copy(obj)
        for name, value in values.items():
            object.__setattr__(twin, name, value)
        return twin
    return obj
