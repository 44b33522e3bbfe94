"""Wire codecs: JSON (the default, so any client can speak to organelle) and MessagePack.

Both are msgspec underneath. Builtins, dataclasses, msgspec Structs, datetime,
UUID, Decimal and bytes are native to msgspec; pydantic models are encoded
through ``model_dump(mode="json")`` and rebuilt with ``model_validate`` when a
target type is given. Pydantic is never imported here: a model can only reach
the codec if the user already imported it.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol, TypeVar, cast, overload

import msgspec

from organelle.errors import ValidationError

__all__ = ["Codec", "JsonCodec", "MsgpackCodec", "codec_for", "to_builtins"]

T = TypeVar("T")


def _is_pydantic_model(obj_type: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None
        and isinstance(obj_type, type)
        and issubclass(obj_type, pydantic.BaseModel)
    )


def _enc_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if dump is not None and _is_pydantic_model(type(obj)):
        return dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise NotImplementedError(f"cannot encode an object of type {type(obj).__name__}")


def _dec_hook(obj_type: type, obj: Any) -> Any:
    if _is_pydantic_model(obj_type):
        if isinstance(obj, obj_type):
            return obj
        try:
            return cast("Any", obj_type).model_validate(obj)
        except ValueError as exc:
            raise ValueError(_pydantic_summary(exc)) from None
    raise NotImplementedError(f"cannot decode into {obj_type!r}")


def _pydantic_summary(exc: ValueError) -> str:
    """One line per problem, ``loc: msg; …``, instead of pydantic's multi-line report."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def to_builtins(obj: Any, builtin_types: tuple[type, ...] = ()) -> Any:
    """Turn any encodable object into JSON-like builtins (dicts, lists, str...).

    ``builtin_types`` (bytes, datetime, UUID, Decimal…) are kept as they are.
    """
    return msgspec.to_builtins(obj, enc_hook=_enc_hook, builtin_types=builtin_types or None)


def convert(obj: Any, target: type[T]) -> T:
    """Convert builtins (or compatible objects) into ``target``, validating them.

    Raises:
        ValidationError: the value does not fit the type.
    """
    try:
        return msgspec.convert(obj, target, dec_hook=_dec_hook, from_attributes=True)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise ValidationError(str(exc), errors=[{"field": "$", "message": str(exc)}]) from exc


class Codec(Protocol):
    """Encodes Python objects to bytes and back, optionally into a type."""

    name: str
    content_type: str

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj``; raises ``ValidationError`` for what cannot be encoded."""
        ...

    @overload
    def decode(self, data: bytes | bytearray | memoryview) -> Any: ...
    @overload
    def decode(self, data: bytes | bytearray | memoryview, target: type[T]) -> T: ...
    def decode(self, data: bytes | bytearray | memoryview, target: Any = Any) -> Any:
        """Decode bytes; with ``target``, validate into that type."""
        ...


class _MsgspecCodec:
    name = ""
    content_type = ""

    def __init__(self, encoder: Any, decoder_factory: Any) -> None:
        self._encoder = encoder
        self._decoder_factory = decoder_factory
        self._decoders: dict[Any, Any] = {}

    def encode(self, obj: Any) -> bytes:
        try:
            return cast("bytes", self._encoder.encode(obj))
        except (TypeError, NotImplementedError, OverflowError, ValueError) as exc:
            raise ValidationError(
                f"cannot encode value: {exc}", errors=[{"field": "$", "message": str(exc)}]
            ) from exc

    def decode(self, data: bytes | bytearray | memoryview, target: Any = Any) -> Any:
        decoder = self._decoders.get(target)
        if decoder is None:
            decoder = self._decoder_factory(target, dec_hook=_dec_hook)
            self._decoders[target] = decoder
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ValidationError(
                f"malformed {self.name} payload: {exc}",
                errors=[{"field": "$", "message": str(exc)}],
            ) from exc
        except (ValueError, TypeError) as exc:  # a dec_hook (pydantic) rejected the value
            raise ValidationError(str(exc), errors=[{"field": "$", "message": str(exc)}]) from exc
        except RecursionError:  # msgspec's answer to hostile nesting: bad input, not a bug
            raise _too_deep(self.name, "$") from None


def _too_deep(what: str, field: str) -> ValidationError:
    message = f"malformed {what} payload: nested too deeply"
    return ValidationError(message, errors=[{"field": field, "message": "nested too deeply"}])


class JsonCodec(_MsgspecCodec):
    """UTF-8 JSON; bytes travel as base64 strings, Decimal as strings."""

    name = "json"
    content_type = "application/json"

    def __init__(self) -> None:
        super().__init__(msgspec.json.Encoder(enc_hook=_enc_hook), msgspec.json.Decoder)


class MsgpackCodec(_MsgspecCodec):
    """MessagePack: smaller and faster; bytes travel as bin."""

    name = "msgpack"
    content_type = "application/msgpack"

    def __init__(self) -> None:
        super().__init__(msgspec.msgpack.Encoder(enc_hook=_enc_hook), msgspec.msgpack.Decoder)


_CODECS: dict[str, Codec] = {}


def codec_for(name: str) -> Codec:
    """Return the shared codec for ``"json"`` or ``"msgpack"``.

    Raises:
        ValidationError: the codec name is unknown (e.g. from a wire header).
    """
    codec = _CODECS.get(name)
    if codec is None:
        if name == "json":
            codec = JsonCodec()
        elif name == "msgpack":
            codec = MsgpackCodec()
        else:
            raise ValidationError(
                f"unknown codec {name!r}; expected 'json' or 'msgpack'",
                errors=[{"field": "codec", "message": "unknown codec"}],
            )
        _CODECS[name] = codec
    return codec
