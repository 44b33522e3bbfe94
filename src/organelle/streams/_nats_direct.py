"""Batched reads for ``JetStreamLog``: one ``DIRECT.GET`` request, many records.

A claim used to fetch its records one ``STREAM.MSG.GET`` round trip at a
time. A batched direct get (``{"seq": N, "next_by_subj": S, "batch": k}``,
nats-server 2.11+, streams with ``allow_direct``) answers with up to ``k``
messages of subject ``S`` from sequence ``N`` on, then an end-of-batch status
(``204``), or ``404`` when there is none: one round trip per batch, and no
server-side consumer to create, move or delete when a group's position jumps
(a release, a retry, another member). Replies arrive on one subscription
held for the connection's life, each request on a token of its own.

The replies are taken off the connection's parser before nats-py builds a
message of them: a direct get adds six ``Nats-*`` headers to each record, and
nats-py's header parsing (a character-by-character check of every name), its
message object and its per-subscription queue cost more than the rest of a
record's consumption together. The connection is the log's own, and the hook
only takes messages of this one subscription; should a nats-py release call
its message handler differently, ``open`` leaves the hook out and replies take
the ordinary path.

A direct get may be served by any replica, so it can lag the last
acknowledged append by a moment on a cluster; a claim then simply finds the
newest records on its next look. Used by ``organelle.streams.nats`` only.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
from collections.abc import Coroutine, Mapping
from typing import Any
from urllib.parse import unquote

from organelle.errors import TransportError, UnavailableError
from organelle.streams._jetstream import H_HEADERS, H_KEY, RESERVED, timestamp
from organelle.streams.base import Record

__all__ = ["DirectBatches", "ReadAhead", "direct_record"]

_END = frozenset({"204", "404"})  # end of batch; no message at all
_HOOKED = ["sid", "subject", "reply", "data", "headers"]  # nats-py's _process_msg


def parse_headers(raw: bytes) -> dict[str, str]:
    """A NATS header block (``NATS/1.0`` line first) as a dict; values UTF-8, stripped."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:  # one decode, not two a line
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


class DirectBatches:
    """Batched direct gets over one connection (``open`` subscribes, ``close`` drops it)."""

    def __init__(self, nc: Any, timeout_s: float, *, hook: bool = True) -> None:
        self._nc = nc
        self._hook = hook
        self.hooked = False  # whether replies skip nats-py's message path
        self._timeout_s = timeout_s
        self._prefix = f"{nc.new_inbox()}."
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[list[Any], asyncio.Future[str]]] = {}
        self._sub: Any = None

    async def open(self) -> DirectBatches:
        """Subscribe to the replies' inbox, and take its messages off the parser if we can."""
        nc = self._nc
        self._sub = sub = await nc.subscribe(f"{self._prefix}*", cb=self._reply)
        process = getattr(nc, "_process_msg", None)
        if (
            not self._hook
            or process is None
            or list(inspect.signature(process).parameters) != _HOOKED
        ):
            return self
        sid, raw = sub._id, self._raw  # private to nats-py: see the module docstring

        async def hooked(
            sid_: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
        ) -> None:
            if sid_ == sid:
                raw(subject, data, headers)
            else:
                await process(sid_, subject, reply, data, headers)

        nc._process_msg = hooked  # the log's own connection, one subscription's messages
        self.hooked = True
        return self

    def _raw(self, subject: bytes, data: bytes, headers: bytes | None) -> None:
        """A reply straight from the parser: a record, or the status ending a batch."""
        waiting = self._waiting.get(subject[len(self._prefix) :].decode())
        if waiting is None:  # a late reply to a request that timed out
            return
        got, done = waiting
        if headers and headers[8:9] != b" ":  # "NATS/1.0\r\n...": a record
            got.append(_Reply(parse_headers(headers), data))
        elif not done.done():  # "NATS/1.0 204 EOB": a status
            done.set_result(headers[9:12].decode() if headers else "?")

    async def close(self) -> None:
        """Drop the subscription; requests still waiting fail as unavailable."""
        sub, self._sub = self._sub, None
        for _, done in self._waiting.values():
            if not done.done():
                done.set_exception(UnavailableError("the stream log was closed"))
        self._waiting.clear()
        if sub is not None:
            await sub.unsubscribe()

    async def _reply(self, msg: Any) -> None:
        waiting = self._waiting.get(msg.subject[len(self._prefix) :])
        if waiting is None:  # a late reply to a request that timed out
            return
        got, done = waiting
        headers = msg.headers or {}
        if "Nats-Sequence" in headers:  # a record (a user header may be named Status)
            got.append(msg)
        elif not done.done():
            done.set_result(headers.get("Status", "?"))

    async def fetch(self, js_stream: str, subject: str, seq: int, limit: int) -> list[Any]:
        """Up to ``limit`` messages on ``subject`` with sequence >= ``seq``, in order.

        Raises:
            UnavailableError: no complete answer within the timeout.
            TransportError: the server refused the request.
        """
        token = str(next(self._tokens))
        got: list[Any] = []
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (got, done)
        ask = {"seq": max(seq, 1), "next_by_subj": subject, "batch": limit}
        try:
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{js_stream}",
                json.dumps(ask).encode(),
                reply=f"{self._prefix}{token}",
            )
            try:
                status = await asyncio.wait_for(done, self._timeout_s)
            except TimeoutError:
                raise UnavailableError(
                    f"JetStream: no answer to a direct get on {js_stream} "
                    f"within {self._timeout_s} s"
                ) from None
        finally:
            del self._waiting[token]
        if status == "503":  # no responders: the stream is gone, or has no leader yet
            raise UnavailableError(f"JetStream: nothing answered a direct get on {js_stream}")
        if status not in _END:
            raise TransportError(f"JetStream refused a direct get on {js_stream}: {status}")
        return got


class _Reply:
    """A record's reply as the hook keeps it (the two fields of nats-py's ``Msg`` we read)."""

    __slots__ = ("data", "headers")

    def __init__(self, headers: Mapping[str, str], data: bytes) -> None:
        self.headers, self.data = headers, data


def direct_record(stream: str, partition: int, msg: Any) -> Record:
    """A ``Record`` from a direct-get reply (the server adds ``Nats-*`` headers)."""
    raw: Mapping[str, str] = msg.headers
    headers = {k: v for k, v in raw.items() if not k.lower().startswith(RESERVED)}
    odd = raw.get(H_HEADERS)
    if odd is not None:
        headers.update(json.loads(odd))
    key = raw.get(H_KEY)
    return Record(
        stream=stream,
        partition=partition,
        offset=int(raw["Nats-Sequence"]),
        key=None if key is None else unquote(key),
        data=msg.data,
        headers=headers,
        ts=timestamp(raw["Nats-Time-Stamp"]),
    )


class ReadAhead:
    """The batch after a claimed one, read while that one is handled (records never change).

    Kept per (stream, group, partition) key with the sequence it reads from; a
    claim takes it only if the group is still there (not after a release, a
    retry or a dead letter), else it is dropped.
    """

    def __init__(self) -> None:
        self._reads: dict[str, tuple[int, asyncio.Task[list[Record]]]] = {}

    def start(self, key: str, seq: int, read: Coroutine[Any, Any, list[Record]]) -> None:
        """Run ``read`` (of the records from ``seq`` on) in the background."""
        self.drop(key)
        task = asyncio.get_running_loop().create_task(read)
        task.add_done_callback(_retrieved)
        self._reads[key] = (seq, task)

    async def take(self, key: str, seq: int, limit: int) -> list[Record]:
        """Up to ``limit`` records read ahead from ``seq``; empty if none (read them now)."""
        ahead = self._reads.pop(key, None)
        if ahead is None:
            return []
        start, task = ahead
        if start != seq:
            task.cancel()
            return []
        await asyncio.wait([task])  # a failed or cancelled read is simply read again
        if task.cancelled() or task.exception() is not None:
            return []
        return task.result()[:limit]

    def drop(self, key: str) -> None:
        """Forget what was read for ``key`` (the group moved elsewhere)."""
        ahead = self._reads.pop(key, None)
        if ahead is not None:
            ahead[1].cancel()

    def clear(self) -> None:
        """Cancel every read (closing)."""
        for _, task in self._reads.values():
            task.cancel()
        self._reads.clear()


def _retrieved(task: asyncio.Task[list[Record]]) -> None:
    """A read ahead nobody awaited: its error is not worth a "never retrieved" report."""
    if not task.cancelled():
        task.exception()
