"""The CloudEvents 1.0 envelope of an event or stream record, and its binary-mode headers.

Every event and stream record has one. In memory it is ``Envelope``: the
context attributes plus ``data`` (the payload). On the wire it travels in
CloudEvents **binary content mode**: each attribute a ``ce-<name>`` header,
``datacontenttype`` the ``content-type`` header, the payload the body — the
way the CloudEvents HTTP and NATS bindings lay it out, so any CloudEvents SDK
reads organelle's events and writes events organelle handlers take.

Header values are percent-encoded where the binding asks for it (outside
printable ASCII, and ``%``, ``"`` and space), and decoded on the way in.
Extension names are the CloudEvents rule (lowercase letters and digits, at
most 20): ``correlationid``, ``causationid``, ``traceparent``,
``dataversion`` (the event type's version) and ``partitionkey``.

A local emit builds no envelope unless a handler asks for one (an
``Envelope[T]`` parameter or an idempotent handler): then it is built once
per event and shared by every handler.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

from organelle._native import speedups
from organelle.errors import ValidationError

__all__ = [
    "CE_PREFIX",
    "CONSTANT",
    "SPECVERSION",
    "Envelope",
    "Incoming",
    "constant_lines",
    "from_headers",
    "header_lines",
    "to_headers",
    "utc_text",
]

T = TypeVar("T")

SPECVERSION = "1.0"
CE_PREFIX = "ce-"
_REQUIRED = ("id", "source", "type", "specversion")
_EXT = re.compile(r"^[a-z0-9]{1,20}$")
# Printable ASCII the binding leaves alone (not space, ``%`` or ``"``).
_SAFE = frozenset(c for c in range(0x21, 0x7F) if chr(c) not in '%"')
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# Outside printable ASCII, ``"`` (0x22) or ``%`` (0x25): one negated class (an
# alternation made ``search`` cost twice as much).
_UNSAFE = re.compile(r"[^\x21\x23\x24\x26-\x7e]")


def quote(value: str) -> str:
    """Percent-encode what a header value may not hold as is (UTF-8 bytes)."""
    if _UNSAFE.search(value) is None:
        return value
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in value.encode())


def unquote(value: str) -> str:
    """Undo ``quote`` (invalid UTF-8 is replaced, never raised)."""
    if "%" not in value:
        return value
    raw = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), value.encode())
    return raw.decode(errors="replace")


class Envelope(msgspec.Struct, Generic[T], frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One event: CloudEvents context attributes and ``data``.

    A handler that annotates its parameter ``Envelope[OrderPlaced]`` gets the
    whole envelope, ``data`` converted to ``OrderPlaced``; one annotated
    ``OrderPlaced`` gets the data alone.
    """

    id: str
    source: str
    type: str
    data: T
    specversion: str = SPECVERSION
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    traceparent: str | None = None
    dataversion: int | None = None
    partitionkey: str | None = None
    extensions: dict[str, str] = msgspec.field(default_factory=dict)

    def with_data(self, data: Any) -> Envelope[Any]:
        """The same envelope around other data (the payload converted for a handler)."""
        return msgspec.structs.replace(self, data=data)

    def attributes(self) -> dict[str, str]:
        """The context attributes as strings (``time`` in RFC 3339), extensions included."""
        out: dict[str, str] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": self.specversion,
        }
        if self.time is not None:
            out["time"] = _rfc3339(self.time)
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        out.update(self.extensions)
        return out


_OPTIONAL = (
    "subject",
    "datacontenttype",
    "dataschema",
    "correlationid",
    "causationid",
    "traceparent",
    "dataversion",
    "partitionkey",
)
_KNOWN = frozenset((*_REQUIRED, "time", "data", "extensions", *_OPTIONAL))
# On organelle's wire ``datacontenttype``, ``correlationid``, ``causationid`` and
# ``traceparent`` already travel as headers of their own (content-type, the
# context's ids, W3C trace context); ``header_lines`` leaves them out and
# ``from_headers`` reads them from there.
_FROM = {
    "correlationid": "organelle-correlation-id",
    "causationid": "organelle-causation-id",
    "traceparent": "traceparent",
}


def _rfc3339(when: datetime) -> str:
    """RFC 3339 text of ``when`` (``isoformat``, ``Z`` for UTC): what ``ce-time`` carries."""
    if when.tzinfo is UTC:
        return _utc_text(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# ``isoformat`` costs about a microsecond; an event's time is mostly in the same
# second as the last one's, so that second's text is kept and the fraction added.
# Key and text live in one tuple: a thread never pairs one second's key with
# another's text.
_second: tuple[tuple[int, ...], str] = ((), "")


def _py_utc_text(when: datetime) -> str:
    """``_rfc3339`` of a UTC time: the second's text reused, the microseconds appended.

    ``_utc_text`` is the C form of this where the extension is built (``ids.c``).
    """
    global _second  # noqa: PLW0603 - one cached second per process
    key = (when.second, when.minute, when.hour, when.day, when.month, when.year)
    kept = _second
    if kept[0] != key:
        kept = _second = (key, when.replace(microsecond=0, tzinfo=None).isoformat())
    micro = when.microsecond
    return f"{kept[1]}.{micro:06d}Z" if micro else f"{kept[1]}Z"


_utc_text: Callable[[datetime], str] = _py_utc_text if speedups is None else speedups.utc_text
utc_text = _utc_text


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValidationError(
            f"ce-time {text!r} is not an RFC 3339 timestamp",
            errors=[{"field": "ce-time", "message": "not RFC 3339"}],
        ) from None


def to_headers(env: Envelope[Any]) -> dict[str, str]:
    """The binary-mode headers of ``env``: ``ce-*`` and ``content-type``."""
    headers: dict[str, str] = {}
    for name, value in env.attributes().items():
        if name == "datacontenttype":
            headers["content-type"] = value
        else:
            headers[CE_PREFIX + name] = quote(value)
    return headers


def header_lines(env: Envelope[Any], content_type: str | None = None) -> str:
    """The binary-mode headers of ``env`` as header-block lines, one ``name: value`` each.

    The same headers as ``to_headers``, written in one pass: the hot path of
    every event that crosses the wire. ``content_type`` overrides
    ``datacontenttype`` (the transport knows its codec). What every event of
    one type from one source shares (``ce-source``, ``ce-type``,
    ``ce-specversion``, ``ce-dataschema``, ``ce-dataversion``,
    ``content-type``) is formatted once and kept (``constant_lines``).
    """
    media = content_type or env.datacontenttype
    key = (env.source, env.type, env.specversion, env.dataschema, env.dataversion, media)
    fixed = CONSTANT.get(key)
    if fixed is None:
        fixed = constant_lines(key)
    head, middle, tail = fixed
    out = f"ce-id: {quote(env.id)}\r\n{head}"
    when = env.time
    if when is not None:  # UTC (every time this node makes) straight to the C writer
        out += f"ce-time: {_utc_text(when) if when.tzinfo is UTC else _rfc3339(when)}\r\n"
    if env.subject is not None:
        out += f"ce-subject: {quote(env.subject)}\r\n"
    out += middle
    if env.partitionkey is not None:
        out += f"ce-partitionkey: {quote(env.partitionkey)}\r\n"
    if env.extensions:
        out += "".join(f"ce-{name}: {quote(value)}\r\n" for name, value in env.extensions.items())
    return out + tail


_ConstantKey = tuple[str, str, str, str | None, int | None, str | None]
CONSTANT: dict[_ConstantKey, tuple[str, str, str]] = {}
_MAX_CONSTANT = 4096  # topics are few; a node that makes them up per event stays bounded


def constant_lines(key: _ConstantKey) -> tuple[str, str, str]:
    """The lines of ``header_lines`` that are the same for every event of one type and source.

    ``(head, middle, tail)``: the lines before ``ce-time``, those between
    ``ce-subject`` and ``ce-partitionkey``, and ``content-type`` last, in the
    order ``to_headers`` has them.
    """
    source, kind, specversion, dataschema, dataversion, media = key
    head = (
        f"ce-source: {quote(source)}\r\nce-type: {quote(kind)}\r\n"
        f"ce-specversion: {quote(specversion)}\r\n"
    )
    middle = ""
    if dataschema is not None:
        middle += f"ce-dataschema: {quote(dataschema)}\r\n"
    if dataversion is not None:
        middle += f"ce-dataversion: {dataversion}\r\n"
    tail = "" if media is None else f"content-type: {media}\r\n"
    if len(CONSTANT) >= _MAX_CONSTANT:
        CONSTANT.clear()
    fixed = CONSTANT[key] = (head, middle, tail)
    return fixed


def _split(headers: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """The ``ce-*`` attributes (the carried ones filled in) and the content type."""
    attrs: dict[str, str] = {}
    content_type: str | None = None
    carried: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(CE_PREFIX):
            attrs[lower[len(CE_PREFIX) :]] = unquote(value)
        elif lower == "content-type":
            content_type = value
        else:
            carried[lower] = value
    if attrs:
        for attr, header in _FROM.items():
            found = carried.get(header)
            if attr == "correlationid" and found is None:
                found = carried.get("organelle-id")  # a root event: it is its own correlation
            if attr not in attrs and found is not None:
                attrs[attr] = found
    return attrs, content_type


def from_headers(headers: Mapping[str, str], data: Any) -> Envelope[Any] | None:
    """The envelope in binary-mode ``headers`` around ``data``; ``None`` if there is none.

    Header names are matched case-insensitively (any client may write them).

    Raises:
        ValidationError: ``ce-*`` headers are there but a required attribute
            is missing, the spec version is not 1.x, or ``ce-time`` or
            ``ce-dataversion`` does not parse.
    """
    attrs, content_type = _split(headers)
    if not attrs:
        return None
    missing = [a for a in _REQUIRED if not attrs.get(a)]
    if missing:
        raise ValidationError(
            f"CloudEvent lacks required attributes: {', '.join('ce-' + m for m in missing)}",
            errors=[{"field": "ce-" + m, "message": "required"} for m in missing],
        )
    if not attrs["specversion"].startswith("1."):
        raise ValidationError(
            f"CloudEvents specversion {attrs['specversion']!r} is not supported (1.x is)",
            errors=[{"field": "ce-specversion", "message": "unsupported"}],
        )
    version: int | None = None
    if "dataversion" in attrs:
        try:
            version = int(attrs["dataversion"])
        except ValueError:
            raise ValidationError(
                f"ce-dataversion {attrs['dataversion']!r} is not an integer",
                errors=[{"field": "ce-dataversion", "message": "not an integer"}],
            ) from None
    extensions = {k: v for k, v in attrs.items() if k not in _KNOWN and _EXT.match(k)}
    time_text = attrs.get("time")
    return Envelope(
        id=attrs["id"],
        source=attrs["source"],
        type=attrs["type"],
        specversion=attrs["specversion"],
        data=data,
        time=_parse_time(time_text) if time_text else None,
        subject=attrs.get("subject"),
        datacontenttype=content_type,
        dataschema=attrs.get("dataschema"),
        correlationid=attrs.get("correlationid"),
        causationid=attrs.get("causationid"),
        traceparent=attrs.get("traceparent"),
        dataversion=version,
        partitionkey=attrs.get("partitionkey"),
        extensions=extensions,
    )


class Incoming(msgspec.Struct, gc=False):
    """An event read off the wire with ``ce-*`` headers: the envelope is built on demand.

    Most handlers take the payload alone; only a handler that asks for the
    envelope (or is idempotent) pays for parsing the attributes. A Struct:
    one is made per event received, and its constructor runs in C.
    """

    headers: Mapping[str, str]
    data: Any

    def open(self) -> Envelope[Any]:
        """The envelope.

        Raises:
            ValidationError: the ``ce-*`` attributes are incomplete or malformed.
        """
        env = from_headers(self.headers, self.data)
        if env is None:
            raise ValidationError("an event without CloudEvents attributes")
        return env
