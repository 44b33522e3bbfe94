"""The context in NATS headers, both ways; see ``docs/nats.md`` for the table.

Header names are matched case-insensitively on the way in (any NATS client
may write them) and written in one canonical spelling on the way out. A
request carries only what is set: a root call with no meta costs two headers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from organelle._native import speedups
from organelle.codec import Codec, codec_for
from organelle.context import Context, _next_seq
from organelle.envelope import rebuild
from organelle.errors import OrganelleError, RemoteError, ValidationError

__all__ = [
    "H_CODEC",
    "H_ERROR",
    "H_NODE",
    "H_RETRY",
    "H_TYPE",
    "context_from",
    "decode_error",
    "event_context",
    "header_map",
    "headers_for",
    "parse_headers",
    "reply_headers",
    "typed_result",
]

H_ID = "Organelle-Id"
H_CORR = "Organelle-Correlation-Id"
H_CAUSE = "Organelle-Causation-Id"
H_TIMEOUT = "Organelle-Timeout-Ms"
H_CODEC = "Organelle-Codec"
H_PRINCIPAL = "Organelle-Principal"
H_PTYPE = "Organelle-Principal-Type"
H_ROLES = "Organelle-Roles"
H_META = "Organelle-Meta"
H_ERROR = "Organelle-Error"
H_RETRY = "Organelle-Retry"
H_TYPE = "Organelle-Type"
H_NODE = "Organelle-Node"
_TRACE = ("traceparent", "tracestate")
_STATUS_AT = 9  # "NATS/1.0 503": the status code starts here
_STATUS_END = 12

_meta_encoder = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(dict[str, Any])
_monotonic = time.monotonic


def _clean(value: object) -> str:
    """A header value on one line (CR/LF would end the header block)."""
    text = value if isinstance(value, str) else str(value)
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text


def _principal_fields(principal: Any) -> tuple[str, str, str] | None:
    """``(id, type, roles)`` of a principal object, mapping or plain id; ``None`` if anonymous."""
    if principal is None:
        return None
    if isinstance(principal, str):
        return principal, "", ""
    get = principal.get if isinstance(principal, Mapping) else None
    pid = get("id") if get else getattr(principal, "id", None)
    if pid is None:
        return None
    ptype = (get("type") if get else getattr(principal, "type", "")) or ""
    roles = (get("roles") if get else getattr(principal, "roles", ())) or ()
    return str(pid), str(ptype), ",".join(sorted(str(r) for r in roles))


def headers_for(
    ctx: Context, codec: str, *, timeout: bool, extra: Mapping[str, str] | str | None = None
) -> bytes:
    """The header block of an outgoing request (``timeout``) or event (``extra``: its ``ce-*``).

    Raises:
        ValidationError: ``meta`` holds a value that cannot be encoded as JSON.
    """
    parts = ["NATS/1.0\r\n", H_ID, ": ", ctx.request_id, "\r\n"]
    if ctx.corr is not None:
        parts += [H_CORR, ": ", ctx.correlation_id, "\r\n"]
    if ctx.cause is not None:
        parts += [H_CAUSE, ": ", ctx.causation_id or "", "\r\n"]
    if timeout and ctx.deadline is not None:
        ms = max(1, int((ctx.deadline - _monotonic()) * 1000))
        parts += [H_TIMEOUT, ": ", str(ms), "\r\n"]
    if codec != "json":
        parts += [H_CODEC, ": ", codec, "\r\n"]
    who = _principal_fields(ctx.principal)
    if who is not None:
        _principal_part(parts, who)
    if ctx.meta:
        _meta_part(parts, ctx.meta)
    if isinstance(extra, str):  # ready-made lines (an event's ce-* headers)
        parts.append(extra)
    elif extra:
        for name, value in extra.items():
            parts += [name, ": ", _clean(value), "\r\n"]
    parts.append("\r\n")
    return "".join(parts).encode()


def _principal_part(parts: list[str], who: tuple[str, str, str]) -> None:
    parts += [H_PRINCIPAL, ": ", _clean(who[0]), "\r\n"]
    if who[1]:
        parts += [H_PTYPE, ": ", _clean(who[1]), "\r\n"]
    if who[2]:
        parts += [H_ROLES, ": ", _clean(who[2]), "\r\n"]


def _meta_part(parts: list[str], meta: dict[str, Any]) -> None:
    """Trace keys as their W3C headers, the rest as one JSON header."""
    rest = {k: v for k, v in meta.items() if k not in _TRACE}
    for key in _TRACE:
        if key in meta:
            parts += [key, ": ", _clean(meta[key]), "\r\n"]
    if rest:
        try:
            encoded = _meta_encoder.encode(rest).decode()
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"context meta cannot cross the wire: {exc}",
                errors=[{"field": "meta", "message": str(exc)}],
            ) from None
        parts += [H_META, ": ", encoded, "\r\n"]


def reply_headers(
    codec: str,
    error: str | None = None,
    *,
    retry: bool = False,
    type_name: str | None = None,
    node: str | None = None,
) -> bytes:
    """The header block of a reply; empty for a plain JSON success (plain clients read the body).

    ``type_name`` names the class of the result (``envelope/_wire.py``); an
    error reply names the ``node`` that served it (successes stay header-free).
    """
    if error is None and codec == "json" and type_name is None:
        return b""
    parts = ["NATS/1.0\r\n"]
    if codec != "json":
        parts += [H_CODEC, ": ", codec, "\r\n"]
    if type_name is not None:
        parts += [H_TYPE, ": ", _clean(type_name), "\r\n"]
    if error is not None:
        parts += [H_ERROR, ": ", error, "\r\n"]
    if retry:
        parts += [H_RETRY, ": 1\r\n"]
    if error is not None and node:
        parts += [H_NODE, ": ", _clean(node), "\r\n"]
    parts.append("\r\n")
    return "".join(parts).encode()


def parse_headers(block: bytes | None) -> tuple[int, dict[str, str]]:
    """``(status, headers)`` of a header block; names lower-cased, status 0 when absent.

    Every message read goes through here: the lines are read in C where the
    extension is built (``_speedups.header_lines``), else by ``_read_lines``.
    """
    if not block:
        return 0, {}
    cut = block.find(b"\r\n")
    if cut < 0:
        first, out = block.decode(errors="replace"), {}
    else:
        if _c_lines is not None and type(block) is bytes:
            out = _c_lines(block, cut + 2)
        else:
            out = _read_lines(block[cut + 2 :])
        if cut <= _STATUS_AT:  # "NATS/1.0": no status (bytes are never fewer than chars)
            return 0, out
        first = block[:cut].decode(errors="replace")
    status = 0
    if len(first) > _STATUS_AT:
        code = first[_STATUS_AT:_STATUS_END]
        status = int(code) if code.isdigit() else 0
    return status, out


def header_map(block: bytes) -> dict[str, str]:
    """The headers of a block (``parse_headers`` without the status): what an event needs.

    A block with no status line goes to the C reader at once where it is built.
    """
    if _c_lines is not None and type(block) is bytes and block.startswith(_NO_STATUS):
        out: dict[str, str] = _c_lines(block, _NO_STATUS_LEN)
        return out
    return parse_headers(block)[1]


_NO_STATUS = b"NATS/1.0\r\n"
_NO_STATUS_LEN = len(_NO_STATUS)


def _read_lines(rest: bytes) -> dict[str, str]:
    """The ``name: value`` lines of a header block after its first line (the pure path).

    The lines that repeat from message to message (an event type's
    ``ce-source``, ``ce-type``, ``content-type``…: ``_STEADY``) are kept
    parsed, so only the per-message ones (ids, time) are split again; header
    names are lower-cased once each (``_NAMES``).
    """
    out: dict[str, str] = {}
    lines = _LINES
    for line in rest.decode(errors="replace").split("\r\n"):
        pair = lines.get(line)
        if pair is None:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            pair = (_NAMES.get(name) or _name(name), value.strip())
            if pair[0] in _STEADY:
                if len(lines) >= _MAX_KEPT:
                    lines.clear()
                lines[line] = pair
        out[pair[0]] = pair[1]
    return out


_c_lines = None if speedups is None else speedups.header_lines
# Headers whose line is the same for every message of one kind (an event type
# from one source, a codec): worth keeping parsed. Ids, times and keys are not.
_STEADY = frozenset(
    (
        "ce-source",
        "ce-type",
        "ce-specversion",
        "ce-dataschema",
        "ce-dataversion",
        "content-type",
        "organelle-codec",
        "organelle-type",
    )
)
_LINES: dict[str, tuple[str, str]] = {}
_NAMES: dict[str, str] = {}
_MAX_KEPT = 1024  # a peer that makes names or types up per message stays bounded


def _name(raw: str) -> str:
    """The lower-cased, stripped form of a header name as written (kept for the next time)."""
    name = raw.strip().lower()
    if len(_NAMES) >= _MAX_KEPT:
        _NAMES.clear()
    _NAMES[raw] = name
    return name


def codec_of(headers: Mapping[str, str]) -> Codec:
    """The codec a message announces (JSON when it says nothing).

    Raises:
        ValidationError: an unknown codec name.
    """
    return codec_for(headers.get("organelle-codec", "json") or "json")


def _meta_of(raw: str) -> dict[str, Any]:
    """The ``Organelle-Meta`` header decoded.

    Raises:
        ValidationError: not a JSON object, or nested too deeply.
    """
    try:
        return _meta_decoder.decode(raw)
    except RecursionError:  # msgspec's answer to hostile nesting
        raise ValidationError(
            f"header {H_META} is nested too deeply",
            errors=[{"field": H_META, "message": "nested too deeply"}],
        ) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(
            f"header {H_META} must be a JSON object: {exc}",
            errors=[{"field": H_META, "message": str(exc)}],
        ) from None


def context_from(headers: Mapping[str, str], topic: str | None = None) -> Context:
    """Rebuild the sender's context: ids, remaining time as a local deadline, principal, meta.

    Raises:
        ValidationError: a malformed timeout or meta header.
    """
    if not headers:
        return Context(_next_seq(), None, None, None, None, {}, topic)
    deadline = None
    timeout = headers.get("organelle-timeout-ms")
    if timeout is not None:
        try:
            deadline = _monotonic() + float(timeout) / 1000
        except ValueError:
            raise ValidationError(
                f"header {H_TIMEOUT} must be a number of milliseconds, got {timeout!r}",
                errors=[{"field": H_TIMEOUT, "message": "not a number"}],
            ) from None
        if deadline != deadline:  # NaN  # noqa: PLR0124
            raise ValidationError(f"header {H_TIMEOUT} is not a number")
    raw_meta = headers.get("organelle-meta")
    meta = _meta_of(raw_meta) if raw_meta else {}
    for key in _TRACE:
        if key in headers:
            meta[key] = headers[key]
    principal = None
    pid = headers.get("organelle-principal")
    if pid:
        from organelle.auth.base import Principal

        roles = headers.get("organelle-roles", "")
        principal = Principal(
            id=pid,
            type=headers.get("organelle-principal-type") or "user",
            roles=frozenset(r for r in roles.split(",") if r),
        )
    return Context(
        headers.get("organelle-id") or _next_seq(),
        deadline,
        headers.get("organelle-correlation-id"),
        headers.get("organelle-causation-id"),
        principal,
        meta,
        topic,
    )


def event_context(headers: Mapping[str, str], topic: str) -> Context:
    """``context_from`` for an event: the plain case (ids only) read with fewer lookups.

    Raises:
        ValidationError: as ``context_from``.
    """
    if (
        "organelle-meta" in headers
        or "organelle-principal" in headers
        or "traceparent" in headers
        or "tracestate" in headers
        or "organelle-timeout-ms" in headers
        or not headers
    ):
        return context_from(headers, topic)
    get = headers.get
    return Context(
        get("organelle-id") or _next_seq(),
        None,
        get("organelle-correlation-id"),
        get("organelle-causation-id"),
        None,
        {},
        topic,
    )


def decode_error(codec: Codec, data: bytes, code: str) -> OrganelleError:
    """The error of an error reply; a reply that cannot be read still keeps its code."""
    try:
        body = codec.decode(data)
    except ValidationError:
        body = None
    if not isinstance(body, dict):
        return RemoteError(f"unreadable error reply ({code})", remote_code=code)
    body.setdefault("code", code)
    return OrganelleError.from_wire(body)


def typed_result(headers: Mapping[str, str], value: Any) -> Any:
    """A decoded result rebuilt as the class its ``Organelle-Type`` names, if known here."""
    return rebuild(headers.get("organelle-type"), value)
