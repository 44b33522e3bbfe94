"""The JetStream side of ``JetStreamLog``: record layout, group positions, error mapping.

A record is one message: the payload as-is (other NATS clients read it
plainly), the key percent-encoded in ``Organelle-Key`` (a NATS header value
cannot hold line breaks or edge spaces) and user headers as NATS headers when
they survive the trip unchanged, else as JSON in ``Organelle-Headers``. A
stream's partition count lives in its config's metadata, its retention in
the server's own limits. Group positions are KV entries changed by
compare-and-set (``Positions``). Used by ``organelle.streams.nats`` only.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import msgspec
import nats.errors
from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

from organelle.errors import (
    OrganelleError,
    StreamNotFoundError,
    TransportError,
    UnavailableError,
    ValidationError,
)
from organelle.streams.base import Record, StreamSpec

H_KEY, H_HEADERS = "Organelle-Key", "Organelle-Headers"
META_PARTITIONS = "organelle.partitions"
NO_MESSAGE, NO_STREAM, IN_USE = 10037, 10059, 10058  # JetStream API error codes
RESERVED = ("nats-", "organelle-")  # header names the server or this backend interpret
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # header names nats-py accepts
_DUP_WINDOW_S = 120.0


@contextlib.contextmanager
def mapped() -> Iterator[None]:
    """Raise nats-py errors as organelle errors: nothing raw escapes the port."""
    try:
        yield
    except OrganelleError:
        raise
    except nats.errors.MaxPayloadError as exc:
        raise ValidationError("record larger than the server's max_payload") from exc
    except APIError as exc:
        if exc.err_code == NO_STREAM:
            raise StreamNotFoundError(f"JetStream: {exc.description}") from exc
        if exc.code == 503:  # noqa: PLR2004 - JetStream off, or no leader yet
            raise UnavailableError(f"JetStream unavailable: {exc.description}") from exc
        raise TransportError(f"JetStream refused: {exc.description}") from exc
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise UnavailableError(f"NATS: {type(exc).__name__}: {exc}") from exc


async def get_msg(nc: Any, js_stream: str, ask: dict[str, Any], timeout_s: float) -> Any:
    """One ``STREAM.MSG.GET`` (at the stream leader: reads follow acknowledged writes).

    Returns the raw message dict, or ``None`` when no message matches. nats-py's
    own ``get_msg`` parses headers as e-mail and mangles non-ASCII values.
    """
    reply = await nc.request(
        f"$JS.API.STREAM.MSG.GET.{js_stream}", json.dumps(ask).encode(), timeout_s
    )
    body = json.loads(reply.data)
    error = body.get("error")
    if error is not None and error.get("err_code") != NO_MESSAGE:
        APIError.from_error(error)  # raises the matching nats-py error
    return body.get("message")


def retention(spec: StreamSpec) -> dict[str, Any]:
    """Stream limits for ``spec`` (the duplicate window may not exceed ``max_age``)."""
    age = spec.max_age_s or 0.0
    return {
        "max_age": age,
        "max_msgs_per_subject": spec.max_records or -1,
        "duplicate_window": min(age, _DUP_WINDOW_S) if age else _DUP_WINDOW_S,
    }


def partition_count(stream: str, config: Any) -> int:
    """The partition count kept in a stream's metadata."""
    value = (config.metadata or {}).get(META_PARTITIONS)
    if value is None:
        raise ValidationError(f"the JetStream stream of {stream!r} was not made by organelle")
    return int(value)


def spec_of(stream: str, config: Any) -> StreamSpec:
    """The ``StreamSpec`` a stream's config encodes."""
    per_subject = config.max_msgs_per_subject
    return StreamSpec(
        partitions=partition_count(stream, config),
        max_age_s=config.max_age or None,
        max_records=per_subject if per_subject and per_subject > 0 else None,
    )


def headers_out(key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The NATS headers of a record (see the module docstring)."""
    out: dict[str, str] = {} if key is None else {H_KEY: quote(key, safe="")}
    odd: dict[str, str] = {}
    for name, value in (headers or {}).items():
        plain = _TOKEN.fullmatch(name) and not name.lower().startswith(RESERVED)
        if plain and value.isprintable() and value == value.strip():
            out[name] = value
        else:
            odd[name] = value
    if odd:
        out[H_HEADERS] = json.dumps(odd)  # ASCII-only, one line
    return out


def to_record(stream: str, partition: int, msg: dict[str, Any]) -> Record:
    """A ``Record`` from a raw ``STREAM.MSG.GET`` message."""
    raw: dict[str, str] = {}
    for line in base64.b64decode(msg.get("hdrs") or "").split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            raw[name.strip().decode("ascii", "replace")] = value.strip().decode("utf-8", "replace")
    headers = {k: v for k, v in raw.items() if not k.lower().startswith(RESERVED)}
    if H_HEADERS in raw:
        headers.update(json.loads(raw[H_HEADERS]))
    return Record(
        stream=stream,
        partition=partition,
        offset=int(msg["seq"]),
        key=unquote(raw[H_KEY]) if H_KEY in raw else None,
        data=base64.b64decode(msg.get("data") or ""),
        headers=headers,
        ts=timestamp(msg["time"]),
    )


def timestamp(text: str) -> float:
    """Seconds since the epoch from the server's RFC 3339 UTC time (nanosecond fraction)."""
    whole, _, fraction = text.removesuffix("Z").partition(".")
    seconds = _whole_seconds(whole)
    return seconds + float(f"0.{fraction or 0}")


@functools.lru_cache(maxsize=64)
def _whole_seconds(whole: str) -> float:
    """A batch's records mostly share their second: parse it once."""
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()


def letter_out(rec: Record, error: str, ts: float) -> bytes:
    """A dead letter's payload: JSON with the data in base64."""
    data = base64.b64encode(rec.data).decode()
    keys = ("partition", "offset", "key", "data", "error", "ts")
    return json.dumps(
        dict(zip(keys, (rec.partition, rec.offset, rec.key, data, error, ts), strict=True))
    ).encode()


def letter_in(msg: dict[str, Any]) -> dict[str, object]:
    """A dead letter as ``dead_letters`` lists it, from a raw message."""
    letter: dict[str, object] = json.loads(base64.b64decode(msg["data"]))
    return {**letter, "data": base64.b64decode(str(letter["data"]))}


async def pending(js: Any, js_stream: str, subject: str, seq: int) -> int:
    """Messages on ``subject`` from ``seq`` on: a throwaway consumer counts them."""
    config = api.ConsumerConfig(
        filter_subject=subject,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=seq,
        ack_policy=api.AckPolicy.NONE,
        mem_storage=True,
        inactive_threshold=10.0,  # the server drops it even if our delete is lost
    )
    consumer = await js.add_consumer(js_stream, config)
    with contextlib.suppress(Exception):
        await js.delete_consumer(js_stream, consumer.name)
    return int(consumer.num_pending)


class Pos(msgspec.Struct, frozen=True):
    """A group's state in one partition: what it reads next and who holds the lease."""

    next: int
    owner: str | None = None
    until: float = 0.0
    attempts: int = 0


_pos_dec = msgspec.json.Decoder(Pos)
_pos_enc = msgspec.json.Encoder()


class Positions:
    """Group positions in a KV bucket, one key per (stream, group, partition).

    Every change but ``put`` is a compare-and-set on the entry's revision.
    The last entry read or written is remembered, so a holder committing
    record after record tries its compare-and-set without reading first; a
    stale memory only costs a failed set and a fresh read.
    """

    def __init__(self, js: Any, kv: Any, bucket: str) -> None:
        self._js, self._kv, self._bucket = js, kv, bucket
        self._known: dict[str, tuple[Pos, int]] = {}

    @classmethod
    async def open(cls, js: Any, bucket: str, replicas: int) -> Positions:
        """Bind the bucket, creating it if missing."""
        try:
            kv = await js.create_key_value(
                bucket=bucket, history=1, storage=api.StorageType.FILE, replicas=replicas
            )
        except APIError as exc:  # made by another version: use it as it is
            if exc.err_code != IN_USE:
                raise
            kv = await js.key_value(bucket)
        return cls(js, kv, bucket)

    @staticmethod
    def key(group: str, stream: str, partition: int) -> str:
        """The entry of a group's partition (names hold no dots)."""
        return f"{stream}.{group}.{partition}"

    def known(self, key: str) -> tuple[Pos, int] | None:
        """The entry as this process last read or wrote it (may be stale)."""
        return self._known.get(key)

    async def load(self, key: str) -> tuple[Pos, int] | None:
        """The entry and its revision, or ``None``."""
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            self._known.pop(key, None)
            return None
        loaded = _pos_dec.decode(entry.value), int(entry.revision)
        self._known[key] = loaded
        return loaded

    async def save(self, key: str, pos: Pos, rev: int | None) -> bool:
        """Write ``pos`` unless the entry changed since ``rev`` (``None``: absent)."""
        try:
            if rev is None:
                new = await self._kv.create(key, _pos_enc.encode(pos))
            else:
                new = await self._kv.update(key, _pos_enc.encode(pos), last=rev)
        except KeyWrongLastSequenceError:
            self._known.pop(key, None)
            return False
        self._known[key] = (pos, int(new))
        return True

    async def put(self, key: str, pos: Pos) -> None:
        """Overwrite the entry (``seek``)."""
        rev = await self._kv.put(key, _pos_enc.encode(pos))
        self._known[key] = (pos, int(rev))

    async def of_stream(self, stream: str) -> list[tuple[str, int, Pos]]:
        """Every group's entries on ``stream`` as (group, partition, pos), sorted."""
        subjects = f"$KV.{self._bucket}.{stream}.*.*"
        info = await self._js.stream_info(f"KV_{self._bucket}", subjects_filter=subjects)
        rows = []
        for subject in info.state.subjects or {}:
            _, group, part = subject.rsplit(".", 2)
            loaded = await self.load(self.key(group, stream, int(part)))
            if loaded is not None:
                rows.append((group, int(part), loaded[0]))
        return sorted(rows, key=lambda r: (r[0], r[1]))
