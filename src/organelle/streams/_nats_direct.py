"""Batched reads for ``JetStreamLog``: one ``DIRECT.GET`` request, many records.

A claim used to fetch its records one ``STREAM.MSG.GET`` round trip at a
time. A batched direct get (``{"seq": N, "next_by_subj": S, "batch": k}``,
nats-server 2.11+, streams with ``allow_direct``) answers with up to ``k``
messages of subject ``S`` from sequence ``N`` on, then an end-of-batch status
(``204``), or ``404`` when there is none: one round trip per batch, and no
server-side consumer to create, move or delete when a group's position jumps
(a release, a retry, another member). Replies arrive on one subscription
held for the connection's life, each request on a token of its own.

A direct get may be served by any replica, so it can lag the last
acknowledged append by a moment on a cluster; a claim then simply finds the
newest records on its next look. Used by ``organelle.streams.nats`` only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any
from urllib.parse import unquote

from organelle.errors import TransportError, UnavailableError
from organelle.streams._jetstream import H_HEADERS, H_KEY, RESERVED, timestamp
from organelle.streams.base import Record

__all__ = ["DirectBatches", "direct_record"]

_END = frozenset({"204", "404"})  # end of batch; no message at all


class DirectBatches:
    """Batched direct gets over one connection (``open`` subscribes, ``close`` drops it)."""

    def __init__(self, nc: Any, timeout_s: float) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._prefix = f"{nc.new_inbox()}."
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[list[Any], asyncio.Future[str]]] = {}
        self._sub: Any = None

    async def open(self) -> DirectBatches:
        """Subscribe to the replies' inbox."""
        self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._reply)
        return self

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
        if status not in _END:
            raise TransportError(f"JetStream refused a direct get on {js_stream}: {status}")
        return got


def direct_record(stream: str, partition: int, msg: Any) -> Record:
    """A ``Record`` from a direct-get reply (the server adds ``Nats-*`` headers)."""
    raw: dict[str, str] = msg.headers
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
