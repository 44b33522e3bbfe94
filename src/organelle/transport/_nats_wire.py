"""A lean NATS client protocol for the data path: PUB/HPUB, SUB/UNSUB, MSG/HMSG.

Why not nats-py here: its per-message machinery (a ``Msg`` object, a queue
and a task hop per subscription, a flusher task) costs more than the whole
organelle dispatch. This layer parses the socket buffer in ``data_received``
and hands each message to a plain callback synchronously; writes go to one
buffer flushed once per loop iteration, so a burst of replies or requests
costs one syscall. Reconnects walk the server pool with backoff and replay
every subscription; the owner is told on loss and on return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from organelle.errors import OrganelleError, TransportError, UnavailableError
from organelle.transport._nats_auth import connect_fields
from organelle.transport._nats_options import NatsOptions, Server

__all__ = ["Handler", "NatsWire"]

log = logging.getLogger("organelle.transport.nats")

Handler = Callable[[bytes, bytes | None, bytes | None, bytes], None]
"""``(subject, reply, headers, payload)``: called synchronously for each message."""

_CRLF = b"\r\n"
_MAX_CONTROL = 4096  # a control line longer than this is a protocol error
_FLUSH_BYTES = 1 << 18  # write at once past this much pending output
_CLOSE_WAIT_S = 1.0  # how long close() waits for a graceful (TLS) close before aborting


class _Proto(asyncio.Protocol):
    """One connection attempt's protocol; it owns the socket until ``shut``/``discard``."""

    def __init__(self, wire: NatsWire) -> None:
        self.wire = wire
        self.transport: asyncio.Transport | None = None  # what we write to (TLS over raw)
        self.raw: asyncio.Transport | None = None  # the socket's own transport
        self.gone = asyncio.Event()  # set once connection_lost ran: the socket is closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called twice over TLS: first with the socket, then with the TLS layer over it.
        if self.raw is None:
            self.raw = transport  # type: ignore[assignment]
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.wire._feed(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()
        self.wire._lost(self, exc)

    async def discard(self) -> None:
        """Abort the socket and let the loop run the close that ``abort()`` schedules.

        Why the extra turn: ``abort()`` only queues the socket's close (with
        ``call_soon``). A failed connect that raised at once could leave the
        socket open if the caller then stopped its loop, and it would surface as
        a ``ResourceWarning`` wherever the garbage collector next runs. The raw
        transport is aborted too because it is the only handle on the socket
        while a TLS handshake is under way or after it failed.
        """
        for transport in (self.transport, self.raw):
            if transport is not None:
                transport.abort()
        await asyncio.sleep(0)

    async def shut(self, wait_s: float) -> None:
        """Close gracefully (flush; over TLS, exchange close_notify), then ``discard``.

        Why wait: over TLS ``close()`` returns before the server has answered
        the close_notify, and the socket stays open until it does; a process
        (or a test) that stops its loop meanwhile leaks it. The wait is bounded
        because a server that never answers must not hold up a shutdown.
        """
        try:
            if self.transport is not None and not self.gone.is_set():
                self.transport.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self.gone.wait()
        finally:
            await self.discard()

    def pause_writing(self) -> None:
        self.wire._set_writable(writable=False)

    def resume_writing(self) -> None:
        self.wire._set_writable(writable=True)


class NatsWire:
    """One connection to a NATS server pool, kept alive until ``close()``.

    Args:
        options: servers, credentials, TLS and timing.
        on_lost: called (synchronously) when the connection drops.
        on_back: called once a reconnect has replayed every subscription.
    """

    def __init__(
        self,
        options: NatsOptions,
        *,
        on_lost: Callable[[], None] = lambda: None,
        on_back: Callable[[], None] = lambda: None,
    ) -> None:
        self.options = options
        self.on_lost = on_lost
        self.on_back = on_back
        self.pool: list[Server] = list(options.servers)
        self.info: dict[str, Any] = {}
        self.max_payload = 1 << 20
        self._proto: _Proto | None = None
        self._buf = bytearray()
        self._need = 0
        self._subs: dict[int, tuple[bytes, Handler]] = {}
        self._leaving: set[int] = set()  # unsubscribed, still handling what is on its way
        self._next_sid = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._pongs: deque[asyncio.Future[None]] = deque()
        self._info_wait: asyncio.Future[None] | None = None
        self._connected = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        # Both events as one plain flag, read by every publish (an Event's
        # ``is_set`` is a Python call): connected and not paused by the socket.
        self.ready = False
        self._up = False  # ``_connected`` as a plain flag
        self._closing = False
        self._reconnector: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._outstanding = 0
        self._current = 0

    # -- state -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether a connection is up (subscriptions replayed)."""
        return self._connected.is_set()

    def _set_connected(self, *, up: bool) -> None:
        if up:
            self._connected.set()
        else:
            self._connected.clear()
        self._up = up
        self.ready = up and self._writable.is_set()

    def _set_writable(self, *, writable: bool) -> None:
        if writable:
            self._writable.set()
        else:
            self._writable.clear()
        self.ready = writable and self._up

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a connection; return whether there is one."""
        if self._connected.is_set():
            return True
        if timeout_s <= 0 or self._closing:
            return False
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout_s)
        finally:
            waiter.cancel()
        return self._connected.is_set()

    async def writable(self) -> None:
        """Wait while the socket's write buffer is over its high-water mark."""
        if not self._writable.is_set():
            await self._writable.wait()

    # -- connect / reconnect -------------------------------------------------------------
    async def connect(self) -> None:
        """Connect to the first server of the pool that answers.

        Raises:
            TransportError: no server could be reached (each one's reason listed).
        """
        reasons = []
        for i, server in enumerate(self.pool):
            try:
                await self._handshake(server)
            except (OSError, TimeoutError, TransportError) as exc:
                reason = str(exc) or type(exc).__name__  # a timeout has no text
                reasons.append(f"{server.url}: {reason}")
                continue
            self._current = i
            self._pinger = asyncio.get_running_loop().create_task(self._ping_loop())
            return
        raise TransportError("cannot connect to NATS: " + "; ".join(reasons))

    async def _handshake(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        self._buf.clear()
        self._info_wait = loop.create_future()
        proto = _Proto(self)
        self._proto = proto
        try:
            async with asyncio.timeout(opts.connect_timeout_s):
                await loop.create_connection(lambda: proto, server.host, server.port)
                await self._info_wait
                tls = self._tls_for_info()
                if tls is not None:
                    assert proto.transport is not None  # noqa: S101 - set by connection_made
                    proto.transport = await loop.start_tls(
                        proto.transport,
                        proto,
                        tls,
                        server_hostname=opts.tls_hostname or server.host,
                    )
                self._still_open(proto)
                pong = loop.create_future()
                self._pongs.append(pong)
                lines = [
                    b"CONNECT "
                    + json.dumps(connect_fields(self.options, self.info)).encode()
                    + _CRLF
                ]
                lines += [
                    self._sub_line(sid, spec)
                    for sid, (spec, _) in self._subs.items()
                    if sid not in self._leaving
                ]
                lines.append(b"PING\r\n")
                self._raw_write(proto, b"".join(lines))
                await pong
        except BaseException:
            # Any failure or cancellation (TLS, auth, INFO, timeout): the socket is
            # closed before the error propagates, never left to the garbage collector.
            self._proto = None
            self._fail_pongs(UnavailableError("connection attempt failed"))
            await proto.discard()
            raise
        self._outstanding = 0
        self._set_writable(writable=True)
        self._set_connected(up=True)

    @staticmethod
    def _still_open(proto: _Proto) -> None:
        """Raise if the server hung up while we awaited INFO or TLS.

        Why: the loss was reported before the PONG waiter existed, so nothing
        would fail it and the handshake would hang until its timeout.
        """
        if proto.gone.is_set():
            raise UnavailableError("connection closed during handshake")

    def _tls_for_info(self) -> ssl.SSLContext | None:
        """The TLS context to upgrade with, decided on the server's INFO; ``None``: plain.

        TLS when the server requires it (verified with the system CAs unless
        ``tls_ca`` is set) or when this client asks for it (a ``tls://`` URL or
        any TLS file): asked for but not offered is refused, never downgraded.
        """
        tls = self.options.tls_context()
        if tls is None:
            return ssl.create_default_context() if self.info.get("tls_required") else None
        if not (self.info.get("tls_required") or self.info.get("tls_available")):
            raise TransportError("the server does not offer TLS, but TLS is configured")
        return tls

    def _lost(self, proto: _Proto, exc: Exception | None) -> None:
        if proto is not self._proto:
            return  # an abandoned attempt
        self._proto = None
        was_up = self._connected.is_set()
        self._set_connected(up=False)
        self._set_writable(writable=True)
        self._out.clear()
        self._out_bytes = 0
        # The reason matters during a handshake: a TLS alert (say, a client certificate
        # the server refused) arrives here, not as an -ERR.
        self._fail_pongs(UnavailableError(f"NATS connection lost ({exc or 'closed by server'})"))
        if self._info_wait is not None and not self._info_wait.done():
            self._info_wait.set_exception(UnavailableError("connection closed during handshake"))
        if not was_up or self._closing:
            return
        log.warning("NATS connection lost (%s); reconnecting", exc or "closed by server")
        self.on_lost()
        self._reconnector = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        opts = self.options
        rounds = 0
        while not self._closing:
            n = len(self.pool)
            for k in range(1, n + 1):  # the next server first: the current one just failed
                i = (self._current + k) % n
                try:
                    await self._handshake(self.pool[i])
                except (OSError, TimeoutError, TransportError) as exc:
                    log.debug("reconnect to %s failed: %s", self.pool[i].url, exc)
                    continue
                self._current = i
                log.warning("NATS reconnected to %s", self.pool[i].url)
                self.on_back()
                return
            rounds += 1
            wait = min(opts.reconnect_max_wait_s, opts.reconnect_wait_s * 2**rounds)
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter

    async def _ping_loop(self) -> None:
        opts = self.options
        while not self._closing:
            await asyncio.sleep(opts.ping_interval_s)
            proto = self._proto
            if proto is None or not self._connected.is_set():
                continue
            if self._outstanding >= opts.max_outstanding_pings:
                log.warning("NATS server stopped answering pings; reconnecting")
                if proto.transport is not None:
                    proto.transport.abort()
                continue
            self._outstanding += 1
            self._raw_write(proto, b"PING\r\n")

    async def close(self) -> None:
        """Flush what is pending and disconnect; never raises.

        Returns once the socket is closed (within ``_CLOSE_WAIT_S`` of a
        server that does not answer a TLS close_notify).
        """
        self._closing = True
        tasks = {t for t in (self._reconnector, self._pinger) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        proto = self._proto
        if proto is not None and self._connected.is_set():
            with contextlib.suppress(Exception):
                await self.flush(1.0)
        self._set_connected(up=False)
        self._proto = None
        self._fail_pongs(UnavailableError("NATS connection closed"))
        if proto is not None:
            await proto.shut(_CLOSE_WAIT_S)

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, subject: str, handler: Handler, queue: str | None = None) -> int:
        """Subscribe; returns the sid. Replayed after every reconnect."""
        self._next_sid += 1
        sid = self._next_sid
        spec = f"{subject} {queue}".encode() if queue else subject.encode()
        self._subs[sid] = (spec, handler)
        if self._connected.is_set():
            self._write(self._sub_line(sid, spec))
        return sid

    def unsubscribe(self, sid: int) -> None:
        """Stop a subscription; messages already in our buffer still reach no handler."""
        if self._subs.pop(sid, None) is not None and self._connected.is_set():
            self._write(b"UNSUB %d\r\n" % sid)

    async def leave(self, sid: int, timeout_s: float = 5.0) -> None:
        """Stop a subscription without losing what the server already sent it.

        ``UNSUB`` goes out at once, but the handler keeps taking the messages
        on their way until a PING round trip proves none are left (the server
        answers the PING after everything it sent before the ``UNSUB``).
        """
        if sid not in self._subs or sid in self._leaving:
            return
        self._leaving.add(sid)
        try:
            if self._connected.is_set():
                self._write(b"UNSUB %d\r\n" % sid)
                with contextlib.suppress(OrganelleError, TimeoutError):
                    await self.flush(timeout_s)
        finally:
            self._leaving.discard(sid)
            self._subs.pop(sid, None)

    @staticmethod
    def _sub_line(sid: int, spec: bytes) -> bytes:
        return b"SUB %s %d\r\n" % (spec, sid)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Round trip to the server: everything written before is processed after this.

        Raises:
            UnavailableError: not connected, or the connection dropped meanwhile.
            CallTimeoutError: no answer within ``timeout_s`` (as ``TimeoutError``).
        """
        if not self._connected.is_set():
            raise UnavailableError("not connected to NATS")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        self._write(b"PING\r\n")
        async with asyncio.timeout(timeout_s):
            await fut

    # -- writing ------------------------------------------------------------------------
    def publish(
        self, subject: bytes, payload: bytes, reply: bytes | None = None, headers: bytes = b""
    ) -> None:
        """Queue one message; written with everything else queued in this loop iteration.

        Raises:
            UnavailableError: not connected (the caller waits for ``connected`` first).
        """
        if not self._up:
            raise UnavailableError("not connected to NATS")
        if headers:
            hl = len(headers)
            if reply is None:
                self._write(
                    b"HPUB %s %d %d\r\n%s%s\r\n"
                    % (subject, hl, hl + len(payload), headers, payload)
                )
            else:
                self._write(
                    b"HPUB %s %s %d %d\r\n%s%s\r\n"
                    % (subject, reply, hl, hl + len(payload), headers, payload)
                )
        elif reply is None:
            self._write(b"PUB %s %d\r\n%s\r\n" % (subject, len(payload), payload))
        else:
            self._write(b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(payload), payload))

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > _FLUSH_BYTES:
            self._flush_out()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_out)

    def write_now(self) -> None:
        """Write what is queued now rather than at the end of this loop iteration.

        For a writer that knows no more is coming soon (the last reply of a
        batch, the only call in flight): one loop iteration less on its way out.
        """
        if self._out:
            self._flush_out()

    def _flush_out(self) -> None:
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_bytes = 0
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.write(data)

    @staticmethod
    def _raw_write(proto: _Proto, data: bytes) -> None:
        if proto.transport is not None:
            proto.transport.write(data)

    def _fail_pongs(self, exc: Exception) -> None:
        while self._pongs:
            fut = self._pongs.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: nobody may be waiting any more

    # -- reading ------------------------------------------------------------------------
    def _feed(self, proto: _Proto, data: bytes) -> None:
        if proto is not self._proto:
            return
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:  # a large message still arriving: no re-parse
                return
            data = bytes(self._buf)
            self._buf.clear()
        try:
            pos = self._parse(data)
        except (ValueError, IndexError) as exc:
            log.error("NATS protocol error (%s); dropping the connection", exc)  # noqa: TRY400
            if proto.transport is not None:
                proto.transport.abort()
            return
        if pos < len(data):
            self._buf += data[pos:]

    def _parse(self, buf: bytes) -> int:  # noqa: C901, PLR0912, PLR0915 - one flat dispatch on the op
        """Handle every complete message in ``buf``; return where the incomplete rest starts."""
        pos = 0
        end_all = len(buf)
        subs = self._subs
        self._need = 0
        while pos < end_all:
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                if end_all - pos > _MAX_CONTROL:
                    raise ValueError("control line too long")
                return pos
            op = buf[pos : pos + 4]
            if op == b"MSG ":
                args = buf[pos + 4 : eol].split()
                start = eol + 2
                nxt = start + int(args[-1]) + 2
                if nxt > end_all:
                    self._need = nxt - pos
                    return pos
                entry = subs.get(int(args[1]))
                pos = nxt
                if entry is not None:
                    reply = args[2] if len(args) == 4 else None  # noqa: PLR2004
                    try:
                        entry[1](args[0], reply, None, buf[start : nxt - 2])
                    except Exception:  # a handler bug must not kill the connection
                        log.exception("NATS message handler failed on %r", args[0])
            elif op == b"HMSG":
                args = buf[pos + 5 : eol].split()
                start = eol + 2
                hend = start + int(args[-2])
                nxt = start + int(args[-1]) + 2
                if nxt > end_all:
                    self._need = nxt - pos
                    return pos
                entry = subs.get(int(args[1]))
                pos = nxt
                if entry is not None:
                    reply = args[2] if len(args) == 5 else None  # noqa: PLR2004
                    try:
                        entry[1](args[0], reply, buf[start:hend], buf[hend : nxt - 2])
                    except Exception:  # a handler bug must not kill the connection
                        log.exception("NATS message handler failed on %r", args[0])
            elif op == b"PING":
                self._write(b"PONG\r\n")
                pos = eol + 2
            elif op == b"PONG":
                self._outstanding = 0
                if self._pongs:
                    fut = self._pongs.popleft()
                    if not fut.done():
                        fut.set_result(None)
                pos = eol + 2
            elif op == b"INFO":
                self._on_info(buf[pos + 5 : eol])
                pos = eol + 2
            elif op == b"-ERR":
                self._on_error(buf[pos + 5 : eol].decode(errors="replace"))
                pos = eol + 2
            else:  # +OK and anything unknown
                pos = eol + 2
        return pos

    def _on_info(self, raw: bytes) -> None:
        info = json.loads(raw)
        self.info = info
        self.max_payload = int(info.get("max_payload", self.max_payload))
        if self.options.discover:
            for url in info.get("connect_urls", ()):
                host, _, port = str(url).rpartition(":")
                server = Server(host.strip("[]"), int(port), self.pool[0].tls)
                if host and server not in self.pool:
                    self.pool.append(server)
        if self._info_wait is not None and not self._info_wait.done():
            self._info_wait.set_result(None)

    def _on_error(self, text: str) -> None:
        message = text.strip().strip("'")
        log.error("NATS server error: %s", message)
        if self._pongs and not self._connected.is_set():  # refused during the handshake
            fut = self._pongs.popleft()
            if not fut.done():
                fut.set_exception(TransportError(f"NATS refused the connection: {message}"))
