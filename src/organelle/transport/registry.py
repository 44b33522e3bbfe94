"""The cluster registry: every node, its modules, versions and methods, in NATS KV.

Each node writes one key (its name) of a JetStream KV bucket every
``heartbeat_s``; the bucket's TTL (``registry_ttl_s``) removes the key of a
node that stops, and readers also ignore an entry whose last heartbeat is
older than its TTL, so a dead node disappears within ``registry_ttl_s`` even
when the bucket was created with another TTL. A clean stop deletes the key at
once. The registry is advisory (``wait_for``, ``organelle nodes``, telling
"unknown module" from "nobody answers"); calls never wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from organelle.errors import CallTimeoutError, TransportError
from organelle.transport._nats_options import NatsOptions

if TYPE_CHECKING:
    from organelle.module import ModuleSpec

__all__ = ["Announcer", "ModuleEntry", "NatsRegistry", "NodeInfo", "read_cluster"]

log = logging.getLogger("organelle.transport.registry")
_KEY_BAD = re.compile(r"[^-_=A-Za-z0-9]")


class ModuleEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One module a node serves.

    ``options``: per RPC method, what callers on other nodes need to know of
    it (``idempotent``, its declared call ``policy``), only for methods that
    declare either.
    """

    version: str
    methods: list[str] = msgspec.field(default_factory=list)
    events: list[str] = msgspec.field(default_factory=list)
    options: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


def rpc_options(spec: ModuleSpec) -> dict[str, dict[str, Any]]:
    """``ModuleEntry.options`` of a module: idempotence and declared policies by method."""
    out: dict[str, dict[str, Any]] = {}
    for name, meta in spec.rpcs.items():
        entry: dict[str, Any] = {}
        if meta.spec.idempotent:
            entry["idempotent"] = True
        if meta.spec.policy is not None:
            entry["policy"] = meta.spec.policy.to_dict()
        if entry:
            out[name] = entry
    return out


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One node as it announces itself (times are wall-clock seconds)."""

    node: str
    host: str = ""
    pid: int = 0
    started: float = 0.0
    ts: float = 0.0
    ttl_s: float = 6.0
    modules: dict[str, ModuleEntry] = msgspec.field(default_factory=dict)

    def alive(self, now: float | None = None) -> bool:
        """Whether the last heartbeat is younger than the TTL."""
        return (time.time() if now is None else now) - self.ts < self.ttl_s


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(NodeInfo).decode


def node_key(node: str) -> str:
    """The KV key of a node name (KV keys allow fewer characters than names)."""
    return _KEY_BAD.sub("_", node) or "_"


class NatsRegistry:
    """Reads and writes node entries in the registry bucket (a nats-py connection of its own).

    The data path uses organelle's lean client; the registry needs JetStream
    KV, which nats-py already speaks well, and is off the hot path.
    """

    def __init__(self, options: NatsOptions) -> None:
        self.options = options
        self._nc: Any = None
        self._kv: Any = None

    async def open(self) -> None:
        """Connect and open (or create) the bucket.

        Raises:
            TransportError: NATS or JetStream is unreachable.
        """
        import nats
        import nats.errors

        opts = self.options

        async def quiet(_exc: Exception) -> None:
            """Connection trouble is reported by the data path; keep the log clean."""

        nc = None
        budget = opts.connect_timeout_s * len(opts.servers) + 1
        try:
            async with asyncio.timeout(budget):
                nc = await nats.connect(
                    **opts.connect_kwargs(),
                    name=f"organelle-registry:{opts.node}",
                    reconnect_time_wait=opts.reconnect_wait_s,
                    max_reconnect_attempts=-1,
                    error_cb=quiet,
                )
                self._nc = nc
                await self.ensure()
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
            self._nc = None
            where = ", ".join(opts.urls)
            if isinstance(exc, TimeoutError):
                why = (
                    f"no NATS server answered at {where} within {budget:g}s "
                    "(is nats-server running there, and the address right?)"
                )
            else:
                why = f"{where}: {str(exc) or type(exc).__name__}"
            raise TransportError(
                f"NATS registry unavailable: {why}", details={"servers": list(opts.urls)}
            ) from exc

    async def ensure(self) -> None:
        """Open the bucket, creating it when missing (also after a broker lost it)."""
        import nats.js.errors
        from nats.js.api import KeyValueConfig, StorageType

        opts = self.options
        js = self._nc.jetstream(timeout=max(opts.heartbeat_s, 2.0))
        try:
            self._kv = await js.key_value(opts.bucket)
        except nats.js.errors.BucketNotFoundError:
            config = KeyValueConfig(
                bucket=opts.bucket,
                history=1,
                ttl=opts.registry_ttl_s,
                replicas=opts.registry_replicas or 1,
                storage=StorageType.FILE,
            )
            try:
                self._kv = await js.create_key_value(config)
            except nats.js.errors.BadRequestError:  # another node created it meanwhile
                self._kv = await js.key_value(opts.bucket)

    @property
    def connected(self) -> bool:
        """Whether the registry connection is up."""
        return self._nc is not None and bool(self._nc.is_connected)

    async def put(self, info: NodeInfo) -> None:
        """Write this node's entry (a heartbeat)."""
        await self._kv.put(node_key(info.node), _encode(info))

    async def remove(self, node: str) -> None:
        """Delete a node's entry (on a clean stop)."""
        await self._kv.purge(node_key(node))

    async def last_revision(self) -> int:
        """The bucket's last revision (one request): what a caught-up watch has seen."""
        js = self._nc.jetstream(timeout=max(self.options.heartbeat_s, 2.0))
        info = await js.stream_info(f"KV_{self.options.bucket}")
        return int(info.state.last_seq)

    async def watch(self) -> Any:
        """A watcher of every key (nats-py's ``KeyWatcher``): latest values, then each change."""
        return await self._kv.watchall()

    async def read(self) -> dict[str, NodeInfo]:
        """Every live node's entry, by node name (a listing plus one read per node)."""
        import nats.js.errors

        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return {}
        now = time.time()
        nodes: dict[str, NodeInfo] = {}
        for key in keys:
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            if not entry.value:
                continue
            try:
                info = _decode(entry.value)
            except msgspec.DecodeError:
                log.warning("ignoring a malformed registry entry %r", key)
                continue
            if info.alive(now):
                nodes[info.node] = info
        return nodes

    async def close(self) -> None:
        """Disconnect; never raises."""
        nc, self._nc, self._kv = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


class Announcer:
    """Heartbeats this node's entry and keeps a live view of the cluster.

    The view follows a watch of the bucket: each node's heartbeat is pushed to
    every other node as it is written, so a heartbeat costs a node one write
    whatever the cluster's size (it used to list the bucket and read every
    entry: N + 2 round trips each period, one after another). The watch
    checks itself: a node must see its own heartbeat come back; when it does
    not within three periods (a broker restart lost the consumer, say), the
    watch is opened again, and until it is live the view is read in full.

    Args:
        registry: an opened registry.
        modules: returns what this node serves now.
    """

    def __init__(
        self, registry: NatsRegistry, modules: Callable[[], dict[str, ModuleEntry]]
    ) -> None:
        self.registry = registry
        self.modules = modules
        self.view: dict[str, NodeInfo] = {}
        self.read_once = False
        self._started = time.time()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self._follower: asyncio.Task[None] | None = None
        self._watch_live = False
        self._watch_opened = 0.0
        self._own_seen = 0.0
        self._own_key = node_key(registry.options.node)
        self._nodes_by_key: dict[str, str] = {}
        self._seen_rev = 0
        self._fresh_waiters = 0
        # After the broker was away, other nodes' entries may have lapsed while
        # they wait out their reconnect back-off: absence means nothing for a while.
        self._away = False
        self._back_at = -1e9

    def start(self) -> None:
        """Start heartbeating."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="organelle-registry")

    def touch(self) -> None:
        """Announce now (the set of served modules changed)."""
        self._wake.set()

    def info(self) -> NodeInfo:
        """This node's entry as of now."""
        opts = self.registry.options
        return NodeInfo(
            node=opts.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self._started,
            ts=time.time(),
            ttl_s=opts.registry_ttl_s,
            modules=self.modules(),
        )

    async def _run(self) -> None:
        period = self.registry.options.heartbeat_s
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            try:
                await self.registry.put(self.info())
                if self._away:
                    self._away, self._back_at = False, time.monotonic()
                await self._keep_watching(period)
            except Exception as exc:  # the broker may be away; the next beat retries
                log.debug("registry heartbeat failed: %s", exc)
                self._away = True
                await self._close_watch()
                with contextlib.suppress(Exception):
                    await self.registry.ensure()
            self._publish_view(prune=True)
            # A timer, not asyncio.timeout: a stop() racing a timeout must never be swallowed.
            timer = loop.call_later(period, self._wake.set)
            await self._wake.wait()
            timer.cancel()

    async def _keep_watching(self, period: float) -> None:
        """Open the watch when it is not open, or open it again when it went quiet."""
        now = time.monotonic()
        if self._watcher is not None:
            quiet_since = max(self._own_seen, self._watch_opened)
            follower = self._follower
            if (follower is None or not follower.done()) and now - quiet_since <= 3 * period:
                return
            log.debug("registry watch went quiet; opening it again")
            await self._close_watch()
        self._watcher = await self.registry.watch()
        self._watch_opened = now
        self._follower = asyncio.get_running_loop().create_task(
            self._follow(self._watcher), name="organelle-registry-watch"
        )
        if not self.read_once:  # the first view: do not make the caller wait for the watch
            await self.refresh()

    async def _follow(self, watcher: Any) -> None:
        """Apply each pushed entry to the view (``None`` marks the end of the initial values)."""
        async for entry in watcher:
            if entry is None:
                self._watch_live = True
                self.read_once = True
                self._changed.set()
                continue
            self._apply(entry)

    def _apply(self, entry: Any) -> None:
        key = entry.key
        self._seen_rev = max(self._seen_rev, int(entry.revision or 0))
        if key == self._own_key:
            self._own_seen = time.monotonic()
        if entry.operation is not None or not entry.value:  # a delete, a purge or an expiry
            node = self._nodes_by_key.pop(key, None)
            if node is not None and node in self.view:
                self.view = {n: i for n, i in self.view.items() if n != node}
                self._changed.set()
            return
        try:
            info = _decode(entry.value)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed registry entry %r", key)
            return
        self._nodes_by_key[key] = info.node
        known = self.view.get(info.node)
        if known is not None and known.modules == info.modules:
            self.view[info.node] = info  # a heartbeat: the same modules, a newer time
            if self._fresh_waiters:
                self._changed.set()
            return
        # Someone joined or changed what it serves: a new mapping, so views cached by
        # identity (the transport's versions by module) are rebuilt.
        self.view = {**self.view, info.node: info}
        self._changed.set()

    def _publish_view(self, *, prune: bool) -> None:
        """Hand out a fresh mapping once a period, without the nodes whose heartbeat stopped."""
        if not self._watch_live:
            return
        now = time.time()
        view = self.view
        if prune:
            view = {n: i for n, i in view.items() if i.alive(now)}
            if len(view) < len(self._nodes_by_key):
                self._nodes_by_key = {k: n for k, n in self._nodes_by_key.items() if n in view}
        self.view = dict(view)
        self._changed.set()

    async def _close_watch(self) -> None:
        # Quick: the heartbeat loop calls it when a put failed, and must not sit here
        # while the broker is away (the next beat after a restart re-announces the node).
        watcher, self._watcher = self._watcher, None
        follower, self._follower = self._follower, None
        self._watch_live = False
        if follower is not None:
            follower.cancel()
        if watcher is not None and self.registry.connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await watcher.stop()

    async def refresh(self, *, fresh: bool = False) -> dict[str, NodeInfo]:
        """The view as of now: the watched one while the watch is live, else read in full.

        ``fresh``: not older than this call — wait (one request, then the pushes
        already on their way) until the watch has seen the bucket's last revision.
        """
        if self._watch_live and fresh:
            last = await self.registry.last_revision()
            self._fresh_waiters += 1
            try:
                while self._watch_live and self._seen_rev < last:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.05):
                            await self._changed.wait()
            finally:
                self._fresh_waiters -= 1
        if self._watch_live:
            return self.view
        self.view = await self.registry.read()
        self._nodes_by_key = {node_key(n): n for n in self.view}
        self.read_once = True
        self._changed.set()
        return self.view

    def serving(self, module: str) -> bool | None:
        """Whether a live node announces ``module``; ``None`` when the view cannot tell.

        It cannot before the registry was first read, nor while this node's
        heartbeats fail or settle after an outage (``settling_s``).
        """
        if not self.read_once:
            return None
        now = time.time()
        if any(module in n.modules and n.alive(now) for n in self.view.values()):
            return True
        return None if self.settling_s() > 0 else False

    def settling_s(self) -> float:
        """How much longer other nodes may still be coming back after the broker was away.

        A node re-announces at its first heartbeat once reconnected, and may
        reconnect up to its longest back-off after the broker returned; until
        then its entry may have lapsed. Unbounded while this node's own
        heartbeats fail.
        """
        if self._away:
            return float("inf")
        opts = self.registry.options
        window = opts.reconnect_max_wait_s + 2 * opts.heartbeat_s + opts.registry_ttl_s
        return max(0.0, self._back_at + window - time.monotonic())

    def options(self, module: str) -> dict[str, dict[str, Any]] | None:
        """What the first live node serving ``module`` announces of its methods; ``None``: none."""
        now = time.time()
        for n in self.view.values():
            entry = n.modules.get(module)
            if entry is not None and n.alive(now):
                return entry.options
        return None

    def versions(self, module: str) -> dict[str, str]:
        """The version of ``module`` each live node announces, by node name."""
        now = time.time()
        return {
            n.node: n.modules[module].version
            for n in self.view.values()
            if module in n.modules and n.alive(now)
        }

    async def wait_for(
        self, module: str, timeout_s: float, accept: Callable[[str], bool] | None = None
    ) -> None:
        """Return once some live node announces ``module`` (in a version ``accept`` takes).

        Raises:
            CallTimeoutError: none did within ``timeout_s``; ``details["versions"]``
                lists what the cluster served instead (node -> version).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pause = 0.02
        while True:
            self._changed.clear()
            with contextlib.suppress(Exception):
                await self.refresh()
            found = self.versions(module) if self.read_once else {}
            if any(accept is None or accept(v) for v in found.values()):
                return
            left = deadline - loop.time()
            if left <= 0:
                raise CallTimeoutError(
                    f"module {module!r} did not become available in {timeout_s:g}s",
                    details={"module": module, "versions": found},
                )
            # Woken by the watch as soon as the view changes; polls while it is not live.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, left)):
                    await self._changed.wait()
            pause = min(pause * 2, 0.25)

    async def stop(self) -> None:
        """Stop heartbeating and delete this node's entry; never raises."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=2)
        await self._close_watch()
        if not self.registry.connected:
            return  # the entry expires by itself; do not wait for a broker that is away
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.registry.remove(self.registry.options.node)


async def read_cluster(options: NatsOptions) -> list[NodeInfo]:
    """Connect, read every live node's entry, disconnect (for ``organelle nodes``).

    Raises:
        TransportError: NATS unreachable.
    """
    registry = NatsRegistry(options)
    await registry.open()
    try:
        nodes = await registry.read()
    finally:
        await registry.close()
    return sorted(nodes.values(), key=lambda n: n.node)
