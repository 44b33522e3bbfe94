"""``Manage``: every management operation on one node, as plain async methods.

The HTTP routes (``ops/_manage_http.py``), the ``ops`` module that serves them
to the cluster over the transport (``ops/_manage_rpc.py``) and the CLI all
call these methods, so each operation is written once and answers the same
JSON-able values everywhere. Bad input is a typed error with a stable code:
an unknown module is ``organelle.not_found``, an unknown job
``organelle.jobs.not_found``, a bad import path ``organelle.config``, a bad
argument ``organelle.validation``.

Modules, config and health need a running kernel; jobs, streams and KV need
only the ports, which is how the CLI reaches the SQLite files of an app that
has no cluster (``Manage.offline``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args

from organelle.errors import ConfigError, JobStateError, NotFoundError, ValidationError
from organelle.jobs.base import JobState

if TYPE_CHECKING:
    from organelle.health import Health
    from organelle.jobs.base import JobQueue, JobRecord
    from organelle.kernel import Kernel
    from organelle.storage.base import Store
    from organelle.streams.base import StreamLog

__all__ = ["MODULE_NAME", "OPERATIONS", "Manage", "effective_config"]

MODULE_NAME = "ops"
"""The name of the management module every clustered node serves (``ops.<operation>``)."""

OPERATIONS = frozenset({
    "modules", "load", "unload", "restart", "reload",
    "config", "config_reload", "config_diff", "health",
    "jobs", "job", "job_retry", "job_cancel", "dead_purge", "queues", "queue_pause", "queue_resume",
    "streams", "stream", "stream_seek", "stream_dead",
    "kv_get", "kv_put", "kv_delete", "kv_scan",
})  # fmt: skip
"""The operations ``Manage.run`` takes by name: the same names as the ``ops`` module's RPCs."""

_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_STATES: tuple[str, ...] = get_args(JobState)
_MAX_LIMIT = 1000


def effective_config(kernel: Kernel) -> dict[str, Any]:
    """``[kernel]`` and module sections as parsed, the other sections as written; all masked."""
    from organelle.config.secrets import mask

    dump: dict[str, Any] = kernel.config_dump()
    for section, value in sorted(kernel.config.items()):
        if section not in dump:
            dump[section] = mask(value, by_name=True)
    result: dict[str, Any] = mask(dump, by_name=True)
    return result


def _bad(field: str, message: str) -> ValidationError:
    return ValidationError(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
        raise _bad("limit", f"an integer from 1 to {_MAX_LIMIT}")
    return limit


def _job(record: JobRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    data["errors"] = [dataclasses.asdict(e) for e in record.errors]
    return data


class Manage:
    """Management operations on ``kernel`` (this node), or on ports alone (``offline``).

    Args:
        kernel: the running kernel; ``None`` for ``offline`` use.
        health: the probes' ``Health`` (default: a fresh one over ``kernel``).
        queue, store, log: ports to use instead of the kernel's (``offline``).

    Example::

        manage = Manage(kernel)
        await manage.job_retry(job_id)
    """

    def __init__(
        self,
        kernel: Kernel | None,
        *,
        health: Health | None = None,
        queue: JobQueue | None = None,
        store: Store | None = None,
        log: StreamLog | None = None,
    ) -> None:
        self.kernel = kernel
        self._health = health
        self._queue = queue
        self._store = store
        self._log = log

    @classmethod
    def offline(
        cls, *, queue: JobQueue | None, store: Store | None, log: StreamLog | None
    ) -> Manage:
        """Jobs, streams and KV straight on the ports (an app's SQLite files), no kernel."""
        return cls(None, queue=queue, store=store, log=log)

    # helpers ----------------------------------------------------------------------
    def _kernel(self, what: str) -> Kernel:
        if self.kernel is None:
            raise ConfigError(f"{what} needs a running app: reach it through its cluster (NATS)")
        return self.kernel

    @property
    def node(self) -> str:
        """This node's name (``local`` without a kernel)."""
        if self.kernel is None:
            return "local"
        return self.kernel.transport.node

    def _jobs_queue(self) -> JobQueue:
        if self._queue is not None:
            return self._queue
        return self._kernel("jobs").jobs.queue

    def _kv(self) -> Store:
        if self._store is not None:
            return self._store
        return self._kernel("kv").store

    def _streams(self) -> StreamLog:
        if self._log is not None:
            return self._log
        return self._kernel("streams").streams

    async def run(self, operation: str, params: Mapping[str, Any]) -> Any:
        """Run an operation by name with keyword ``params`` (what the HTTP API does).

        Raises:
            NotFoundError: no such operation.
            ValidationError: a parameter it does not take or of the wrong kind.
        """
        if operation not in OPERATIONS:
            raise NotFoundError(f"no management operation {operation!r}")
        try:
            result = getattr(self, operation)(**params)
            if inspect.isawaitable(result):
                result = await result
        except TypeError as exc:
            raise ValidationError(f"{operation}: {exc}") from None
        return result

    # modules ----------------------------------------------------------------------
    def modules(self) -> list[dict[str, Any]]:
        """Every module of this node: name, version, state, node, requires, RPC methods."""
        kernel = self._kernel("modules")
        node = self.node
        return [
            {
                "name": info.name,
                "version": info.version,
                "state": info.state.value,
                "node": node,
                "requires": list(info.requires),
                "rpc": list(info.rpc_methods),
                "events": list(info.subscriptions),
                "error": info.error,
            }
            for info in kernel.modules().values()
        ]

    def _own(self, name: str, verb: str) -> Kernel:
        kernel = self._kernel("modules")
        kernel.module(name)  # NotFoundError naming it
        if name == MODULE_NAME and type(kernel.module(name)).__module__.startswith("organelle."):
            raise _bad("name", f"cannot {verb} the management module itself")
        return kernel

    async def load(self, path: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Import ``package.module:Class`` and start it here (with ``config`` as its section)."""
        kernel = self._kernel("modules")
        if not isinstance(path, str) or not _PATH.match(path):
            raise ConfigError(
                f"bad module path {path!r}: expected 'package.module:Class'",
                details={"path": path},
            )
        if config is not None and not isinstance(config, dict):
            raise _bad("config", "an object (the module's config section)")
        before = set(kernel.modules())
        await kernel.add_module(path, config)
        (name,) = set(kernel.modules()) - before
        return self._one(name)

    async def unload(self, name: str, *, cascade: bool = False) -> dict[str, Any]:
        """Stop and remove a module (``cascade``: its dependents first)."""
        kernel = self._own(name, "unload")
        return {"removed": await kernel.remove_module(name, cascade=cascade)}

    async def restart(self, name: str) -> dict[str, Any]:
        """A fresh instance of the same class takes over; the old one serves until it does."""
        kernel = self._own(name, "restart")
        await kernel.reload_module(name)
        return self._one(name)

    async def reload(self, name: str) -> dict[str, Any]:
        """Re-import the module's Python code, then swap to an instance of the new class."""
        kernel = self._own(name, "reload")
        cls = type(kernel.module(name))
        source = sys.modules.get(cls.__module__)
        if source is None:
            raise ConfigError(f"module {name!r}: its code ({cls.__module__}) cannot be re-imported")
        fresh: Any = importlib.reload(source)
        for part in cls.__qualname__.split("."):
            fresh = getattr(fresh, part, None)
        if not isinstance(fresh, type):
            raise ConfigError(
                f"module {name!r}: {cls.__module__}:{cls.__qualname__} is gone after re-import"
            )
        await kernel.reload_module(name, fresh)
        return self._one(name)

    def _one(self, name: str) -> dict[str, Any]:
        return next(m for m in self.modules() if m["name"] == name)

    # config -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The effective config, every secret masked."""
        return effective_config(self._kernel("config"))

    async def config_reload(self) -> dict[str, Any]:
        """Re-read the config file and apply it live (or roll back: ``ConfigError``)."""
        result = await self._kernel("config").reload_config()
        return dataclasses.asdict(result)

    async def config_diff(self) -> dict[str, Any]:
        """What a reload would change now; nothing is applied."""
        result = await self._kernel("config").config_diff()
        return dataclasses.asdict(result)

    # health -----------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        """The readiness report of this node (what ``/health/ready`` answers)."""
        if self._health is None:
            from organelle.health import Health

            self._health = Health(self._kernel("health"))
        report = await self._health.report()
        return {"node": self.node, **report.to_json()}

    # jobs -------------------------------------------------------------------------
    async def jobs(
        self,
        *,
        state: str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Jobs in ``state`` (default: every state), of job ``name`` when given, oldest first."""
        _limit(limit)
        if not isinstance(offset, int) or offset < 0:
            raise _bad("offset", "an integer >= 0")
        if state is not None and state not in _STATES:
            raise _bad("state", f"one of {', '.join(_STATES)}")
        queue = self._jobs_queue()
        found: list[JobRecord] = []
        for one in [state] if state else _STATES:
            # a name filter reads past the page so the page holds only that name
            batch, skip = limit + offset, 0
            while True:
                got = await queue.scan(one, limit=batch, offset=skip)  # type: ignore[arg-type]
                found += [r for r in got if name is None or r.name == name]
                if len(got) < batch or name is None or len(found) >= limit + offset:
                    break
                skip += batch
        found.sort(key=lambda r: (r.created_at, r.id))
        return [_job(r) for r in found[offset : offset + limit]]

    async def job(self, job_id: str) -> dict[str, Any]:
        """One job with its params and every attempt's error (``JobNotFoundError``)."""
        return _job(await self._jobs_queue().get(job_id))

    async def job_retry(self, job_id: str) -> dict[str, Any]:
        """Queue a finished (dead, succeeded) job again now, with fresh attempts."""
        queue = self._jobs_queue()
        await queue.get(job_id)  # JobNotFoundError for an unknown id
        await queue.requeue(job_id)
        return _job(await queue.get(job_id))

    async def job_cancel(self, job_id: str) -> dict[str, Any]:
        """Delete a job that has not run to its end (queued, scheduled, failed and waiting)."""
        queue = self._jobs_queue()
        record = await queue.get(job_id)
        if not getattr(queue, "purge_cancels", True):
            raise JobStateError(
                f"job {job_id!r}: this job queue ({type(queue).__name__}) cannot cancel a "
                "waiting job; pause its name instead",
                details={"job_id": job_id, "state": record.state},
            )
        if record.state in ("running", "succeeded", "dead"):
            raise JobStateError(
                f"job {job_id!r} is {record.state}: only a waiting job can be cancelled",
                details={"job_id": job_id, "state": record.state},
            )
        if await queue.purge([job_id]) != 1:
            raise JobStateError(
                f"job {job_id!r} started meanwhile: it can no longer be cancelled",
                details={"job_id": job_id, "state": "running"},
            )
        return {"cancelled": job_id}

    async def dead_purge(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Delete the given dead jobs, or every dead job; ``progress`` hears each batch."""
        queue = self._jobs_queue()
        if job_ids is not None:
            dead = [r.id for r in await self._records(queue, job_ids) if r.state == "dead"]
            return {"purged": await queue.purge(dead)}
        total = 0
        while batch := await queue.scan("dead", limit=500):
            total += await queue.purge([r.id for r in batch])
            if progress is not None:
                progress(total)
        return {"purged": total}

    @staticmethod
    async def _records(queue: JobQueue, job_ids: Sequence[str]) -> list[JobRecord]:
        return [await queue.get(job_id) for job_id in job_ids]

    async def queues(self) -> dict[str, Any]:
        """Jobs due and waiting per job name, and the names this node's worker has paused."""
        backlog = await self._jobs_queue().backlog()
        worker = self.kernel.job_worker if self.kernel is not None else None
        paused = sorted(worker.paused) if worker is not None else []
        return {"node": self.node, "backlog": dict(backlog), "paused": paused}

    def _worker_pause(self, names: list[str] | None, *, pause: bool) -> dict[str, Any]:
        worker = self._kernel("pausing a queue").job_worker
        if worker is None:
            raise ConfigError("this node runs no job worker: nothing to pause or resume")
        if names is not None and not all(isinstance(n, str) and n for n in names):
            raise _bad("names", "a list of job names")
        paused = worker.pause(names) if pause else worker.resume(names)
        return {"node": self.node, "paused": sorted(paused)}

    def queue_pause(self, names: list[str] | None = None) -> dict[str, Any]:
        """Stop this node's worker claiming ``names`` (default: all); in-flight runs finish."""
        return self._worker_pause(names, pause=True)

    def queue_resume(self, names: list[str] | None = None) -> dict[str, Any]:
        """Claim ``names`` again (default: every paused name)."""
        return self._worker_pause(names, pause=False)

    # streams ----------------------------------------------------------------------
    def streams(self) -> list[str]:
        """The streams this node knows: its ``@consume`` groups' and ``[kernel] stream_specs``."""
        kernel = self._kernel("listing streams")
        names = {c.stream for c in kernel.consumers()}
        names.update(kernel.settings.stream_specs or {})
        return sorted(names)

    async def stream(self, stream: str) -> dict[str, Any]:
        """Layout, retained range per partition and each group's position and lag."""
        info = await self._streams().info(stream)
        return dataclasses.asdict(info)

    async def stream_seek(self, stream: str, group: str, to: str | int) -> dict[str, Any]:
        """Move ``group`` in all partitions of ``stream``: an offset, ``earliest``, ``latest``."""
        if not (to in ("earliest", "latest") or (isinstance(to, int) and to >= 0)):
            raise _bad("to", "'earliest', 'latest' or an offset >= 0")
        log = self._streams()
        await log.info(stream)  # StreamNotFoundError for an unknown stream
        await log.seek(group, stream, to)  # type: ignore[arg-type]
        return await self.stream(stream)

    async def stream_dead(self, stream: str, group: str, limit: int = 100) -> list[dict[str, Any]]:
        """The group's dead letters of ``stream``, oldest first."""
        log = self._streams()
        await log.info(stream)
        return [dict(d) for d in await log.dead_letters(group, stream, _limit(limit))]

    # KV ---------------------------------------------------------------------------
    async def kv_get(self, key: str) -> dict[str, Any]:
        """The entry under ``key`` (value, revision); ``NotFoundError`` when absent."""
        entry = await self._kv().get(_key(key))
        if entry is None:
            raise NotFoundError(f"no key {key!r}", details={"key": key})
        return {"key": key, "value": entry.value, "revision": entry.revision}

    async def kv_put(self, key: str, value: Any, ttl_s: float | None = None) -> dict[str, Any]:
        """Write ``value`` (JSON) under ``key``; return the new revision."""
        if ttl_s is not None and (not isinstance(ttl_s, int | float) or ttl_s <= 0):
            raise _bad("ttl_s", "a number of seconds > 0")
        revision = await self._kv().put(_key(key), value, ttl_s=ttl_s)
        return {"key": key, "revision": revision}

    async def kv_delete(self, key: str) -> dict[str, Any]:
        """Delete ``key``; ``deleted`` says whether it was there."""
        return {"key": key, "deleted": await self._kv().delete(_key(key))}

    async def kv_scan(
        self, prefix: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of keys under ``prefix``; pass ``cursor`` back for the next page."""
        page = await self._kv().scan(prefix, limit=_limit(limit), cursor=cursor or None)
        return {
            "items": [{"key": e.key, "value": e.value, "revision": e.revision} for e in page.items],
            "cursor": page.cursor,
        }


def _key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise _bad("key", "a non-empty string")
    return key
