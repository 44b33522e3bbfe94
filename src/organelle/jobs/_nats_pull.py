"""``_Puller``: ``no_wait`` pulls from one durable consumer, with one batch fetched ahead.

nats-py's ``fetch`` waits out its timeout on an empty consumer; a claim that
looks at several bands needs an answer at once ("404 No Messages"), so pulls
are raw requests. A pull waited for and a pull fetched ahead reply to two
inboxes, so the end of one (a status message) is never taken for the end of
the other (pulled messages carry their own subject, not the request's).

**Fetching ahead.** When a pull comes back full (the consumer has a backlog),
the next batch of the same size is requested at once, without waiting for
it: the next claim finds it already here and saves the pull's round trip. A
message fetched ahead is delivered to this process but not claimed: nothing
is written for it until a claim takes it, so if the process dies it comes back
after the consumer's ``ack_wait`` like any unacknowledged delivery. One older
than ``max_age_s`` (a quarter of ``ack_wait``) is given back (``nak``) rather
than claimed, so a lease handed out always has most of its ``ack_wait`` ahead;
``close`` gives back the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import msgspec

PULL_TIMEOUT_S = 2.0  # a no_wait pull answers at once; this only bounds a lost reply
AHEAD_MIN = 4  # fetch ahead only for claims this large: a busy worker, not a one-off claim
_enc = msgspec.json.Encoder()


class _Pull:
    """One outstanding pull request: how many it asked for, how many came, whether it ended."""

    __slots__ = ("done", "got", "want")

    def __init__(self, want: int) -> None:
        self.want = want
        self.got = 0
        self.done = asyncio.Event()


class _Puller:
    """Pulls from one durable consumer into a private inbox (one reply subject per request)."""

    def __init__(self, nc: Any, api_subject: str, *, max_age_s: float) -> None:
        self._nc = nc
        self._api = api_subject
        self._inboxes = (nc.new_inbox(), nc.new_inbox())  # waited for, fetched ahead
        self._current: list[_Pull | None] = [None, None]
        self._ready: deque[tuple[float, Any]] = deque()  # (arrival, message), not claimed yet
        self._ahead: _Pull | None = None
        self._lock = asyncio.Lock()
        self.max_age_s = max_age_s

    async def open(self) -> None:
        for lane, inbox in enumerate(self._inboxes):

            async def on_msg(msg: Any, lane: int = lane) -> None:
                self._on_msg(lane, msg)

            await self._nc.subscribe(inbox, cb=on_msg)

    def _on_msg(self, lane: int, msg: Any) -> None:
        pull = self._current[lane]
        if _is_status(msg):  # 404 no messages / 408: that pull is over
            if pull is not None:
                pull.done.set()
            return
        self._ready.append((time.monotonic(), msg))  # also a late reply of a pull that gave up
        if pull is not None:
            pull.got += 1
            if pull.got >= pull.want:
                pull.done.set()

    async def _request(self, n: int, lane: int) -> _Pull:
        pull = self._current[lane] = _Pull(n)
        request = _enc.encode({"batch": n, "no_wait": True})
        await self._nc.publish(self._api, request, reply=self._inboxes[lane])
        return pull

    @staticmethod
    async def _wait(pull: _Pull) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pull.done.wait(), PULL_TIMEOUT_S)

    async def _take_ready(self, n: int, out: list[Any]) -> None:
        oldest = time.monotonic() - self.max_age_s
        while self._ready and len(out) < n:
            arrived, msg = self._ready.popleft()
            if arrived < oldest:  # fetched ahead too long ago: give it back
                with contextlib.suppress(Exception):
                    await msg.nak()
                continue
            out.append(msg)

    async def pull(self, n: int) -> list[Any]:
        """Up to ``n`` messages deliverable now (none: an empty list, at once)."""
        async with self._lock:
            out: list[Any] = []
            if self._ahead is not None:
                await self._wait(self._ahead)
                self._ahead = None
            await self._take_ready(n, out)
            if len(out) < n:
                await self._wait(await self._request(n - len(out), 0))
                await self._take_ready(n, out)
            if len(out) == n >= AHEAD_MIN:
                self._ahead = await self._request(n, 1)
            return out

    async def close(self) -> None:
        """Give back what was fetched ahead and never claimed (redelivered at once)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:  # still arriving: wait, or what comes later waits out ack_wait
            await self._wait(ahead)
        ready, self._ready = self._ready, deque()
        for _, msg in ready:
            with contextlib.suppress(Exception):
                await msg.nak()


def _is_status(msg: Any) -> bool:
    return bool(msg.headers and msg.headers.get("Status")) and not msg.data
