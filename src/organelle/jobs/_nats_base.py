"""Connection, stream and bucket setup, and the subject/consumer layout of ``NatsJobQueue``.

Kept apart from the queue's operations: this is everything that decides where
a job lives on the server (its band's subject, its durable consumer and that
consumer's ``ack_wait``) and how a claim pulls from it (``_Puller``). The
design is described in ``organelle.jobs.nats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import msgspec

from organelle._jetstream_pub import JsPublisher
from organelle.errors import UnavailableError
from organelle.jobs._nats_pull import _Puller
from organelle.transport.nats_connect import NatsConnectOptions

BANDS = (2, 1, 0, -1, -2)  # served in this order
_BAND_TOKEN = {2: "~p2", 1: "~p1", -1: "~n1", -2: "~n2"}
_TOKEN_BAND = {v: k for k, v in _BAND_TOKEN.items()}
HIGH_PRIORITY = 10
# A claim of one never-banded name skips the survey for this long after the last one;
# the wake subscription sees bands published meanwhile, and a survey this often also
# catches the ones it missed (published while the connection was down).
SURVEY_S = 1.0
# Waiting workers are woken by a tiny core-NATS message on WAKE_PREFIX + the job's
# subject, not by a copy of every job (its headers parsed by nats-py: ~25 us a
# job in each worker). Per subject, at most one wake is sent each WAKE_GAP_S; one
# asked for within the gap goes out at its end.
WAKE_PREFIX = "_ORGANELLE_WAKE."
WAKE_GAP_S = 0.002
_enc, _dec = msgspec.json.Encoder(), msgspec.json.Decoder()


class _NatsJobsBase:
    """Connection state and layout shared by every path of ``NatsJobQueue``."""

    def __init__(
        self,
        servers: NatsConnectOptions | Sequence[str] | str,
        *,
        stream: str = "ORGANELLE_JOBS",
        ack_wait_s: float = 30.0,
        duplicate_window_s: float = 120.0,
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connect_options = NatsConnectOptions.coerce(servers)
        self.servers = self.connect_options.urls
        self.stream = stream
        self.ack_wait_s = ack_wait_s
        self.duplicate_window_s = duplicate_window_s
        self.retention_s = retention_s
        self.clock = clock
        self.bucket = f"{stream}_STATE"
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._pub: JsPublisher | None = None  # the job's own writes (records, messages)
        self._pullers: dict[tuple[str, int], _Puller] = {}
        self._ack_wait: dict[tuple[str, int], float] = {}
        # (id, token) -> (msg, kv rev, record as claimed): a settle writes from the
        # record it holds, by compare-and-set on that revision, without reading it first
        self._msgs: dict[tuple[str, int], tuple[Any, int, dict[str, Any]]] = {}
        # Name tokens seen on a priority band's subject (by a survey of the stream,
        # or on the wake subscription since): a claim of one name never seen there
        # pulls band 0 directly, without asking the stream where its messages are.
        self._banded: set[str] = set()
        self._surveyed_at = -SURVEY_S  # monotonic time of the last survey made while watching
        self._watching = False
        self._deferred: dict[str, float] = {}
        # Jobs this queue enqueued, by id -> (name, run_at), until a claim here takes
        # them (or FRESH_S passes: another node's worker took them): ``next_due``.
        self._fresh: dict[str, tuple[str, float]] = {}
        self._wake = asyncio.Event()
        self._woken: dict[str, float] = {}  # subject -> loop time of the last wake sent
        self._trailing: dict[str, asyncio.TimerHandle] = {}  # wakes due at the gap's end
        self._sending: set[asyncio.Task[None]] = set()

    async def open(self) -> Self:
        """Connect, create the stream and bucket if missing, watch for new jobs.

        Raises:
            UnavailableError: no server accepted the connection within
                ``connect_options.open_budget_s`` (none up, credentials refused, TLS failed).
        """
        if self._nc is not None:
            return self
        from nats.aio.client import Client

        async def quiet(_exc: Exception) -> None:
            """Connection trouble surfaces on the calls it hits; keep the log clean."""

        nc = Client()
        try:
            try:  # nats-py keeps trying forever when no server accepts the first connect
                async with asyncio.timeout(self.connect_options.open_budget_s):
                    await nc.connect(
                        **self.connect_options.connect_kwargs(),
                        name=f"organelle-jobs:{self.stream}",
                        max_reconnect_attempts=-1,
                        error_cb=quiet,
                    )
            except TimeoutError:
                raise UnavailableError(
                    f"no NATS server accepted the job queue's connection at {self.servers}"
                ) from None
            self._nc, self._js = nc, nc.jetstream()
            await self._layout()
            self._pub = JsPublisher(nc)
            await self._pub.open()
        except BaseException:
            self._nc = self._js = self._pub = None
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        return self

    async def _layout(self) -> None:
        """Create (or update) the work-queue stream and the state bucket; watch for jobs."""
        import nats.js.errors
        from nats.js import api

        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            duplicate_window=self.duplicate_window_s,
        )
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self._js.update_stream(config)
        self._kv = await self._js.create_key_value(bucket=self.bucket, history=1)
        kv_info = await self._js.stream_info(f"KV_{self.bucket}")
        if not kv_info.config.allow_msg_ttl:  # succeeded records expire by message TTL
            kv_info.config.allow_msg_ttl = True
            await self._js.update_stream(kv_info.config)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _watch(self) -> None:
        """Subscribe to the stream's wake subjects: wake-ups, and bands seen since.

        Only a queue that claims or waits needs it; a producer-only queue never
        subscribes.
        """
        if not self._watching:
            self._watching = True
            await self._nc.subscribe(f"{WAKE_PREFIX}{self.stream}.>", cb=self._on_publish)

    async def _on_publish(self, msg: Any) -> None:
        self._seen(msg.subject[len(WAKE_PREFIX) :])

    def _seen(self, subject: str) -> None:
        """A job was published on ``subject``: note its band, wake this queue's waiters."""
        band, _, name = subject[len(self.stream) + 1 :].partition(".")
        if band in _TOKEN_BAND:
            self._banded.add(name)
        self._wake.set()

    async def _signal(self, subject: str) -> None:
        """Wake the workers waiting on ``subject``: a job was just published there.

        Within ``WAKE_GAP_S`` of the last wake this sends none now but one at
        the gap's end: a worker woken by the last one may have looked before
        this job landed, and must look again.
        """
        if self._watching:  # this queue's own claims see it at once, not a round trip later
            self._seen(subject)
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._woken.get(subject)
        if last is None or now - last >= WAKE_GAP_S:
            self._woken[subject] = now
            await self._nc.publish(WAKE_PREFIX + subject, b"")
        elif subject not in self._trailing:
            self._trailing[subject] = loop.call_at(last + WAKE_GAP_S, self._trail, subject)

    def _trail(self, subject: str) -> None:
        del self._trailing[subject]
        if self._nc is None:
            return
        self._woken[subject] = asyncio.get_running_loop().time()
        task = asyncio.get_running_loop().create_task(self._send_wake(subject))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_wake(self, subject: str) -> None:
        with contextlib.suppress(Exception):  # closed meanwhile: nobody to wake
            await self._nc.publish(WAKE_PREFIX + subject, b"")

    async def _write(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """A JetStream write (a record or a job's message); its stream sequence."""
        if self._pub is None:
            raise UnavailableError("the job queue is closed")
        return await self._pub.publish(subject, payload, headers)

    def _subject(self, name: str, band: int = 0) -> str:
        if band == 0:
            return f"{self.stream}.{_token(name)}"
        return f"{self.stream}.{_BAND_TOKEN[band]}.{_token(name)}"

    def _durable(self, name: str, band: int = 0) -> str:
        key = name if band == 0 else f"{band}:{name}"
        return f"{self.stream}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    async def _consumer(self, name: str, band: int, lease_s: float | None) -> float:
        """Make sure the consumer of (name, band) exists, with ``ack_wait = lease_s`` if given.

        Returns its ``ack_wait``. Creating an existing durable with another
        ``ack_wait`` updates it (an editable field).
        """
        from nats.js import api
        from nats.js.errors import NotFoundError

        known = self._ack_wait.get((name, band))
        if known is not None and (lease_s is None or known == lease_s):
            return known
        durable = self._durable(name, band)
        if lease_s is None:
            with contextlib.suppress(NotFoundError):
                info = await self._js.consumer_info(self.stream, durable)
                self._ack_wait[name, band] = float(info.config.ack_wait)
                return self._ack_wait[name, band]
        wait_s = lease_s or self.ack_wait_s
        config = api.ConsumerConfig(
            durable_name=durable,
            filter_subject=self._subject(name, band),
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=wait_s,
            max_deliver=-1,  # attempts are counted in the record, which dead-letters
            max_ack_pending=-1,
        )
        info = await self._js.add_consumer(self.stream, config)
        self._ack_wait[name, band] = float(info.config.ack_wait)
        return self._ack_wait[name, band]

    async def _puller(self, name: str, band: int) -> _Puller:
        puller = self._pullers.get((name, band))
        if puller is None:
            wait_s = await self._consumer(name, band, None)
            durable = self._durable(name, band)
            puller = _Puller(
                self._nc,
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{durable}",
                max_age_s=wait_s / 4,
            )
            await puller.open()
            self._pullers[name, band] = puller
        return puller

    async def _present(self) -> dict[str, int]:
        """Messages in the stream per subject (in flight and delayed ones included)."""
        info = await self._js.stream_info(self.stream, subjects_filter=f"{self.stream}.>")
        present = dict(info.state.subjects or {})
        skip = len(self.stream) + 1
        for subject in present:
            band, _, name = subject[skip:].partition(".")
            if band in _TOKEN_BAND:
                self._banded.add(name)
        if self._watching:
            self._surveyed_at = time.monotonic()
        return present

    async def close(self) -> None:
        """Drain and close the connection."""
        nc, self._nc = self._nc, None
        self._watching = False
        self._surveyed_at = -SURVEY_S
        pullers, self._pullers = list(self._pullers.values()), {}
        for puller in pullers:  # fetched ahead, never claimed: back to the stream now
            await puller.close()
        self._ack_wait.clear()
        for handle in self._trailing.values():
            handle.cancel()
        self._trailing.clear()
        for task in list(self._sending):
            task.cancel()
        pub, self._pub = self._pub, None
        if pub is not None:
            await pub.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


def _band(priority: int) -> int:
    """The priority band: 2 (≥ 10), 1 (1…9), 0, -1 (-1…-9), -2 (≤ -10)."""
    if priority == 0:
        return 0
    size = 2 if abs(priority) >= HIGH_PRIORITY else 1
    return size if priority > 0 else -size


@functools.lru_cache(maxsize=4096)
def _token(name: str) -> str:
    """A job name as subject tokens: kept if it is a safe dotted name, else hashed."""
    if re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", name):
        return name
    return "h" + hashlib.sha256(name.encode()).hexdigest()[:24]
