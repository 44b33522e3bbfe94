"""The JSON shapes of the dashboard API, one Struct per answer (docs/dashboard.md lists them).

Typed so the API is a contract a script can rely on, not whatever the
kernel's internals look like today: each collector copies what it reads
into these, and nothing else is ever encoded. Keyword-only and frozen: a
view is a snapshot.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "DeadCountView",
    "DeadLetterView",
    "DeadLettersView",
    "EventsView",
    "JobTypeView",
    "JobsView",
    "ModuleView",
    "ModulesView",
    "NodeModuleView",
    "NodeView",
    "NodesView",
    "Overview",
    "RpcTable",
    "RpcView",
    "StreamGroupView",
    "StreamMemberView",
    "StreamPartitionView",
    "StreamPositionView",
    "StreamSpecView",
    "StreamView",
    "StreamsView",
    "SubscriptionView",
    "WorkerView",
]


class Overview(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/overview``: this node at a glance."""

    node: str
    host: str
    pid: int
    organelle: str
    python: str
    state: str
    """``starting``, ``serving``, ``draining`` or ``stopped``."""
    accepting: bool
    started_at: float | None
    """Wall-clock seconds when ``Kernel.start()`` finished; ``None`` until it has."""
    uptime_s: float | None
    now: float
    transport: str
    storage: str
    modules: int
    modules_by_state: dict[str, int]
    rpc_methods: int
    subscriptions: int
    refresh_s: float


class ModuleView(msgspec.Struct, kw_only=True, frozen=True):
    """One registered module."""

    name: str
    version: str
    state: str
    requires: list[str]
    optional: list[str]
    rpc_methods: list[str]
    subscriptions: list[str]
    error: str | None


class ModulesView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/modules``."""

    modules: list[ModuleView]


class RpcView(msgspec.Struct, kw_only=True, frozen=True):
    """One RPC method this node serves; durations are of calls whose handler suspended."""

    target: str
    module: str
    calls: int
    errors: int
    error_codes: dict[str, int]
    in_flight: int
    timed: int
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None


class BreakerView(msgspec.Struct, kw_only=True, frozen=True):
    """One circuit breaker of the call policies (``key``: target, module or ``target@node``)."""

    key: str
    state: str
    consecutive_failures: int
    opened: int
    retry_after_s: float


class RpcTable(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/rpc``: counters since the stats were switched on, and call policies."""

    bounds_s: list[float]
    methods: list[RpcView]
    breakers: list[BreakerView] = msgspec.field(default_factory=list)
    policy_counts: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)


class SubscriptionView(msgspec.Struct, kw_only=True, frozen=True):
    """One event subscription and its delivery counters."""

    module: str
    handler: str
    pattern: str
    delivery: str
    priority: int
    delivered: int
    failed: int
    skipped: int
    duplicates: int = 0
    last_error: dict[str, Any] | None


class EventsView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/events``."""

    subscriptions: list[SubscriptionView]


class JobTypeView(msgspec.Struct, kw_only=True, frozen=True):
    """One job type this node registered, with its due backlog."""

    name: str
    max_attempts: int
    timeout_s: float | None
    concurrency: int | None
    rate: float | None
    lease_s: float
    cron: str | None
    backlog: int


class WorkerView(msgspec.Struct, kw_only=True, frozen=True):
    """This node's job worker, counted since it started."""

    in_flight: int
    started: int
    succeeded: int
    retried: int
    dead: int
    lost: int
    released: int
    paused: list[str] | None = None
    """Job names this worker does not claim now; ``None``: this worker cannot pause."""


class JobsView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/jobs``; ``enabled`` is false when this node has no job queue."""

    enabled: bool
    reason: str = ""
    types: list[JobTypeView] = msgspec.field(default_factory=list)
    backlog: dict[str, int] = msgspec.field(default_factory=dict)
    """Due jobs waiting for a worker, per job name (also names other nodes run)."""
    dead: int = 0
    dead_capped: bool = False
    """``dead`` stopped counting at the cap: there are more."""
    worker: WorkerView | None = None


class DeadLetterView(msgspec.Struct, kw_only=True, frozen=True):
    """One dead job: its params (credential-like keys masked) and its last attempt's error."""

    id: str
    name: str
    attempts: int
    max_attempts: int
    created_at: float
    updated_at: float
    params: dict[str, Any]
    error_type: str | None
    error: str | None


class DeadLettersView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/jobs/dead?limit=&offset=``: dead jobs, oldest first."""

    enabled: bool
    limit: int
    offset: int
    items: list[DeadLetterView]


class NodeModuleView(msgspec.Struct, kw_only=True, frozen=True):
    """A module as a node announces it."""

    version: str
    methods: list[str]
    events: list[str]


class NodeView(msgspec.Struct, kw_only=True, frozen=True):
    """One node of the cluster (this one alone without a transport)."""

    node: str
    host: str
    pid: int
    started: float
    last_seen: float
    alive: bool
    local: bool
    modules: dict[str, NodeModuleView]


class NodesView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/nodes``; ``error`` says why the registry could not be read."""

    clustered: bool
    this: str
    nodes: list[NodeView]
    error: str | None = None


class StreamSpecView(msgspec.Struct, kw_only=True, frozen=True):
    """A stream's layout and retention (``None``: unbounded)."""

    partitions: int
    max_age_s: float | None
    max_records: int | None


class StreamPartitionView(msgspec.Struct, kw_only=True, frozen=True):
    """A partition's retained offsets (``first > last``: empty)."""

    partition: int
    first: int
    last: int


class StreamPositionView(msgspec.Struct, kw_only=True, frozen=True):
    """Where a group stands in one partition; ``owner`` holds (or last held) its lease."""

    partition: int
    next_offset: int
    lag: int
    owner: str | None


class StreamMemberView(msgspec.Struct, kw_only=True, frozen=True):
    """One ``@consume`` member on this node, counted since it started."""

    module: str
    handler: str
    done: int
    failed: int
    dead: int
    lost: int
    in_flight: int
    last_error: dict[str, Any] | None
    duplicates: int = 0


class DeadCountView(msgspec.Struct, kw_only=True, frozen=True):
    """Dead letters counted up to a cap; ``more``: the cap was passed."""

    count: int
    more: bool


class StreamGroupView(msgspec.Struct, kw_only=True, frozen=True):
    """A consumer group of a stream: its positions, this node's members, its dead letters."""

    group: str
    lag: int | None
    """Summed over the partitions the group has positions in; ``None``: the log was not read."""
    positions: list[StreamPositionView]
    members: list[StreamMemberView]
    """Empty when the group runs on other nodes only."""
    dead_letters: DeadCountView | None
    """``None`` when the log could not be read."""


class StreamView(msgspec.Struct, kw_only=True, frozen=True):
    """One stream a local ``@consume`` member reads; ``error`` says why the log was not read."""

    stream: str
    spec: StreamSpecView | None
    partitions: list[StreamPartitionView]
    groups: list[StreamGroupView]
    error: str | None = None


class StreamsView(msgspec.Struct, kw_only=True, frozen=True):
    """``GET <path>/api/streams``; ``enabled`` is false when this node has no stream log."""

    enabled: bool
    streams: list[StreamView]
