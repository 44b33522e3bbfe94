"""Kernel settings: the ``[kernel]`` section, validated with a precise message."""

from __future__ import annotations

from typing import Any

import msgspec

from organelle.config._urls import url_problem
from organelle.errors import ConfigError

__all__ = ["KernelSettings", "parse_settings"]


class KernelSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``[kernel]`` section of an app config.

    Attributes:
        modules: ``"package.module:Class"`` references to load, or the names of
            installed plugins (``"pricing"``: the ``organelle.modules`` entry point).
        app: the app's name: the namespace of its deterministic event ids and
            the first part of its events' CloudEvents ``source``.
        inbox_window_s: how long an idempotent handler remembers an event id
            (a repeat later than this runs again).
        outbox_interval_s: how often the outbox relay looks for messages a
            committed transaction left unsent (a crash right after the commit).
        pythonpath: folders (relative to the config file) put on ``sys.path``
            before the modules are imported.
        transport: ``memory://`` (one kernel, in-process), ``memory://<name>`` (the
            kernels of this process on that name form a cluster) or, with the
            NATS extra, ``nats://…`` (several servers separated by commas).
        transport_options: backend-specific options (TLS, credentials, codec…),
            validated by the transport itself.
        node: this node's name in the cluster (default: host name and pid).
        prefer_local: call a module running in this process directly even when
            other nodes run it too (off: every call is balanced over the wire).
        storage: the Store URL (``sqlite:///path.db`` by default).
        jobs: the job queue URL (``sqlite:///…``, ``postgresql://…``, ``nats://…``);
            empty means ``sqlite:///organelle-jobs.db`` once a module declares a job.
        streams: the stream log URL (``sqlite:///…`` or ``nats://…``; default
            ``sqlite:///organelle-streams.db`` when a module uses ``@consume``).
        stream_specs: per stream, ``partitions``, ``max_age_s``, ``max_records``.
        blobs: the blob store URL of the claim-check (``file:///…``, ``memory://``,
            ``s3://…``, ``nats://…``; default ``file://organelle-blobs``, a
            directory made on first use).
        claim_check_above: event payloads and stream records whose encoded body
            is longer than this many bytes go to the blob store, the message
            carrying a reference (``ce-dataref``); 0 turns the claim-check off.
        claim_check_ttl_s: how long a claimed event payload is kept.
        claim_check_record_ttl_s: how long a claimed stream record's payload is
            kept when its stream has no ``max_age_s`` (``None``: as long as the
            blob store keeps it).
        job_worker: run a worker for this node's ``@job`` methods.
        job_scheduler: run this node's ``@cron`` schedules (each tick fires once
            per cluster however many nodes run them).
        job_slots: jobs the worker runs at once.
        persist_state: keep ``kernel.states`` values in the Store (namespace
            ``_state``) and restore them when the kernel starts.
        call_timeout_s: default deadline of an RPC call made from outside a handler.
        hook_timeout_s: default timeout of each lifecycle hook.
        drain_timeout_s: how long shutdown waits for in-flight calls and events.
        max_pending_events: emitted events queued before ``emit`` waits.
        max_concurrent_handlers: event handlers suspended at once before the
            dispatcher waits.
        validate: validate RPC params and event payloads from type hints.
        log_level: root level of organelle's loggers.
        restart_on_crash: restart a module whose ``spawn``ed work crashes.
        restart_backoff_s: first restart delay; doubles while it keeps crashing.
        restart_backoff_max_s: the longest restart delay.
        restart_reset_s: a module that ran this long before crashing restarts
            at the shortest delay again.
        log_levels: per-module levels, e.g. ``{"inventory": "DEBUG"}``.
        log_format: ``console`` (readable, development) or ``json`` (one JSON
            object per line, production).
        gc_freeze: once started, move every object alive to Python's permanent
            GC generation (``gc.freeze()``), so collections stop rescanning the
            modules, routes and contracts: with thousands of modules that keeps
            an event burst as cheap as with ten. ``organelle run`` turns it on;
            leave it off where one process starts and drops many kernels (tests),
            since frozen cyclic garbage is never collected.
        log_file: also write to this file, rotated at ``log_file_max_bytes``
            keeping ``log_file_backups`` old files (empty: stderr only).
        ops_port: port of the ops HTTP server (``/health/live``,
            ``/health/ready``, ``/metrics``); ``None`` keeps it off, 0 picks one.
        ops_host: address it binds (loopback by default).
        metrics: collect Prometheus metrics when run with ``organelle run``.
        tracing: OpenTelemetry spans (needs the ``otel`` extra).
        tracing_endpoint: OTLP/HTTP endpoint spans are exported to (empty:
            the globally configured tracer provider, if any).
        health_timeout_s: timeout of each health check.
        config_watch: reload the config file when it changes.
        cluster_config: take part in cluster-wide config: read the layer in the
            Store at start, validate and apply changes with the other nodes
            (``docs/cluster-config.md``).
        slow_call_s: under ``organelle run``, log a warning for each RPC call
            (served here or sent) that takes at least this long; ``None``: off.
            Watching calls takes them off the compiled path (about four times the
            cost of a local call that returns at once).
    """

    modules: list[str] = msgspec.field(default_factory=list)
    app: str = "organelle"
    inbox_window_s: float = 7 * 24 * 3600.0
    outbox_interval_s: float = 1.0
    pythonpath: list[str] = msgspec.field(default_factory=list)
    transport: str = "memory://"
    transport_options: dict[str, Any] = msgspec.field(default_factory=dict)
    node: str = ""
    prefer_local: bool = True
    storage: str = "sqlite:///organelle.db"
    persist_state: bool = False
    jobs: str = ""
    streams: str = ""
    stream_specs: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    blobs: str = ""
    claim_check_above: int = 1 << 20
    claim_check_ttl_s: float = 24 * 3600.0
    claim_check_record_ttl_s: float | None = None
    job_worker: bool = True
    job_scheduler: bool = True
    job_slots: int = 10
    call_timeout_s: float = 30.0
    hook_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
    max_pending_events: int = 10_000
    max_concurrent_handlers: int = 1_000
    validate: bool = True
    log_level: str = "INFO"
    restart_on_crash: bool = True
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    restart_reset_s: float = 60.0
    log_levels: dict[str, str] = msgspec.field(default_factory=dict)
    log_format: str = "console"
    gc_freeze: bool = False
    log_file: str = ""
    log_file_max_bytes: int = 10 * 1024 * 1024
    log_file_backups: int = 5
    ops_port: int | None = None
    ops_host: str = "127.0.0.1"
    metrics: bool = True
    tracing: bool = False
    tracing_endpoint: str = ""
    health_timeout_s: float = 2.0
    config_watch: bool = False
    cluster_config: bool = False
    slow_call_s: float | None = None

    def __post_init__(self) -> None:
        if self.log_format not in ("console", "json"):
            raise ValueError("log_format must be 'console' or 'json'")
        if self.ops_port is not None and not 0 <= self.ops_port <= 65535:  # noqa: PLR2004
            raise ValueError("ops_port must be between 0 and 65535")
        if not self.app or "/" in self.app:
            raise ValueError("app must be a non-empty name without '/'")
        if self.health_timeout_s <= 0:
            raise ValueError("health_timeout_s must be > 0")
        if self.slow_call_s is not None and self.slow_call_s < 0:
            raise ValueError("slow_call_s must be >= 0")
        for name in (
            "call_timeout_s",
            "hook_timeout_s",
            "drain_timeout_s",
            "inbox_window_s",
            "outbox_interval_s",
            "claim_check_ttl_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        self._check_claims()
        for name in ("max_pending_events", "max_concurrent_handlers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def _check_claims(self) -> None:
        if self.claim_check_above < 0:
            raise ValueError("claim_check_above must be >= 0")
        if self.claim_check_record_ttl_s is not None and self.claim_check_record_ttl_s <= 0:
            raise ValueError("claim_check_record_ttl_s must be > 0")


def parse_settings(section: Any) -> KernelSettings:
    """Validate the ``[kernel]`` section.

    Raises:
        ConfigError: naming the key (``kernel.<key>``) and the reason.
    """
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError("kernel: the [kernel] section must be a table")
    try:
        settings = msgspec.convert(section, KernelSettings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason, _, where = text.partition(" - at `$.")
        key = where.rstrip("`").split(".")[0].split("[")[0] if where else ""
        if not key and "unknown field" in reason:
            key = reason.split("`")[1] if "`" in reason else ""
        if not key and "missing required field" in reason:
            key = reason.split("`")[1] if "`" in reason else ""
        label = f"kernel.{key}" if key else "kernel"
        raise ConfigError(f"{label}: {reason}", details={"key": label, "reason": reason}) from None
    # The backend URLs, checked now: the backends connect lazily, and a typo would
    # otherwise surface mid-run.
    for kind in ("transport", "storage", "jobs", "streams", "blobs"):
        problem = url_problem(kind, getattr(settings, kind))
        if problem is not None:
            key = f"kernel.{kind}"
            raise ConfigError(f"{key}: {problem}", details={"key": key, "reason": problem})
    return settings
