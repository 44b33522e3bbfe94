"""``Sagas``: start, run, list, retry and abort sagas on the durable job queue and the Store.

How a saga moves: its record (``s.<id>``) holds ``version``; the job whose
id is derived from ``(saga id, version)`` runs the step at ``cursor`` (an
action going forward, a compensation going back), rewrites the record by
compare-and-set with ``version + 1``, enqueues the job of the new version
and only then returns (the queue acks it). A process killed anywhere in that
sequence leaves the job unacked; it is claimed again once its lease ends and
either redoes the step (the record was not written: the step's stable key
makes the redo harmless) or, finding the record already past its version,
enqueues the next job (a duplicate id is a no-op) and returns. So a saga
never stalls and never takes a transition twice.

An unfinished saga (running, compensating or stuck) also has a marker
``a.<id>``, so listing and recovering them never reads finished ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from organelle.envelope import keyed_id, uuid7
from organelle.errors import ConflictError, NotFoundError, SagaNotFoundError
from organelle.jobs.base import Backoff, JobSpec
from organelle.sagas._model import Action, Saga, Step
from organelle.sagas._record import SagaRecord, SagaState, StepError, StepRecord

if TYPE_CHECKING:
    from organelle.jobs import JobsService
    from organelle.storage.base import Store

__all__ = ["JOB_PREFIX", "PHASE_META", "STEP_META", "Invoke", "ModuleSagas", "Sagas", "step_key_of"]

Invoke = Callable[[str, Action, dict[str, Any], dict[str, Any], float | None], Awaitable[Any]]
"""``invoke(owner, action, params, meta, timeout_s)``: run one action for module ``owner``."""

STEP_META = "saga_step"
"""Context meta key holding the running step's stable key."""
PHASE_META = "saga_phase"
"""Context meta key: ``"action"`` or ``"compensate"``."""
JOB_PREFIX = "_saga."
APP = "organelle"
UNFINISHED: frozenset[str] = frozenset({"running", "compensating", "stuck"})
ORPHAN_MARKER_S = 60.0
"""A marker this old with no record is a start that died before writing it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    """What running the step at the cursor gave, applied to the record by ``_apply``."""

    phase: str  # "action" | "compensate" | "abort"
    index: int = -1
    attempt: int = 0
    result: Any = None
    error: StepError | None = None


def _rec(saga_id: str) -> str:
    return f"s.{saga_id}"


def _marker(saga_id: str) -> str:
    return f"a.{saga_id}"


def step_key_of(saga_id: str, step: str) -> str:
    """The stable key of one step of one saga (the same for its action and compensation)."""
    return f"{saga_id}/{step}"


def _error(phase: str, attempt: int, exc: BaseException, now: float) -> StepError:
    message = str(exc) or type(exc).__name__
    return StepError(
        phase="action" if phase == "action" else "compensate",
        attempt=attempt,
        type=type(exc).__name__,
        message=message[:1000],
        at=now,
    )


class Sagas:
    """The sagas of one kernel: ``kernel.sagas``.

    Args:
        store: the Store namespace holding the records (opened on first use).
        jobs: the job service the steps run on.
        invoke: runs one action or compensation for its owner module.
        clock: wall-clock seconds.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        jobs: Callable[[], JobsService],
        invoke: Invoke,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._invoke = invoke
        self.clock = clock
        self._declared: dict[str, tuple[str, Saga]] = {}
        self.job_backoff = Backoff(base_s=0.5, max_s=10.0)

    # declarations ---------------------------------------------------------------
    def register(self, owner: str, saga: Saga) -> str:
        """Declare ``saga`` owned by module ``owner``; return its name ``"<owner>.<saga>"``."""
        name = f"{owner}.{saga.name}"
        self._declared[name] = (owner, saga)
        return name

    def unregister(self, name: str) -> None:
        """Forget a saga (its module left this node); its jobs wait in the queue."""
        self._declared.pop(name, None)

    @property
    def declared(self) -> dict[str, Saga]:
        """Every saga declared here, by ``"<module>.<saga>"``."""
        return {name: saga for name, (_, saga) in self._declared.items()}

    @staticmethod
    def job_name(name: str) -> str:
        """The job type that runs the steps of saga ``name``."""
        return JOB_PREFIX + name

    def job_spec(self, name: str) -> JobSpec:
        """Job options of saga ``name``: its lease, and many attempts (crashes, not step errors)."""
        _, saga = self._saga(name)
        return JobSpec(max_attempts=100, backoff=self.job_backoff, lease_s=saga.lease_s)

    def _saga(self, name: str) -> tuple[str, Saga]:
        found = self._declared.get(name)
        if found is None:
            raise NotFoundError(f"no saga {name!r} is declared on this node")
        return found

    # starting and reading ---------------------------------------------------------
    async def start(
        self, name: str, params: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> str:
        """Start saga ``name`` (``"<module>.<saga>"``) and return its id once it is durable.

        With ``key``, the id is derived from ``(name, key)``: starting again with
        the same key returns the same id and starts nothing new.

        Raises:
            NotFoundError: no such saga is declared on this node.
        """
        _, saga = self._saga(name)
        saga_id = uuid7() if key is None else keyed_id(APP, f"saga.{name}", 1, [key])
        store = self._store()
        found = await store.get(_rec(saga_id), type=SagaRecord)
        if found is not None:
            if found.value.active:
                await self._enqueue(found.value, 0.0)
            return saga_id
        now = self.clock()
        await store.put(_marker(saga_id), {"name": name, "at": now})
        record = SagaRecord(
            id=saga_id,
            name=name,
            key=key,
            params=dict(params or {}),
            state="running",
            cursor=0,
            version=0,
            steps=[StepRecord(name=s.name) for s in saga.steps],
            created_at=now,
            updated_at=now,
        )
        try:
            await store.compare_and_set(_rec(saga_id), record, revision=None)
        except ConflictError:  # started at this instant with the same key
            entry = await store.get(_rec(saga_id), type=SagaRecord)
            if entry is None or not entry.value.active:
                return saga_id
            record = entry.value
        await self._enqueue(record, 0.0)
        return saga_id

    async def get(self, saga_id: str) -> SagaRecord:
        """The saga's record. Raises ``SagaNotFoundError``."""
        entry = await self._store().get(_rec(saga_id), type=SagaRecord)
        if entry is None:
            raise SagaNotFoundError(f"no saga {saga_id!r}")
        return _decode(entry.value)

    async def list(
        self,
        *,
        state: SagaState | Literal["unfinished"] | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas, by id; ``"unfinished"`` is running, compensating or stuck.

        Unfinished states read only the unfinished sagas; the others scan every record.
        """
        store = self._store()
        unfinished = state == "unfinished" or state in UNFINISHED
        prefix = "a." if unfinished else "s."
        out: list[SagaRecord] = []
        cursor: str | None = None
        while len(out) < limit:
            page = await store.scan(prefix, limit=200, cursor=cursor)
            if unfinished:
                ids = [e.key[2:] for e in page.items]
                got = await store.get_many([_rec(i) for i in ids])
                records = [_decode(got[_rec(i)].value) for i in ids if _rec(i) in got]
            else:
                records = [_decode(e.value) for e in page.items]
            out += [
                r
                for r in records
                if (state in {None, "unfinished"} or r.state == state)
                and (name is None or r.name == name)
            ]
            cursor = page.cursor
            if cursor is None:
                break
        return out[:limit]

    # operator actions ---------------------------------------------------------------
    async def retry(self, saga_id: str) -> None:
        """Go on compensating a ``stuck`` saga, its failing compensation's attempts reset.

        Raises:
            SagaNotFoundError: no such saga.
            ConflictError: the saga is not stuck.
        """
        store = self._store()
        while True:
            entry = await store.get(_rec(saga_id), type=SagaRecord)
            if entry is None:
                raise SagaNotFoundError(f"no saga {saga_id!r}")
            rec: SagaRecord = entry.value
            if rec.state != "stuck":
                raise ConflictError(f"saga {saga_id!r} is {rec.state}, not stuck")
            rec.state = "compensating"
            rec.steps[rec.cursor].compensate_attempts = 0
            rec.version += 1
            rec.updated_at = self.clock()
            try:
                await store.compare_and_set(_rec(saga_id), rec, revision=entry.revision)
            except ConflictError:
                continue
            await self._enqueue(rec, 0.0)
            return

    async def abort(self, saga_id: str) -> None:
        """Stop a running saga: at its next step it compensates what is done instead.

        A step running now finishes (and is compensated). Aborting a saga that
        is already compensating, compensated or stuck changes nothing.

        Raises:
            SagaNotFoundError: no such saga.
            ConflictError: the saga has completed.
        """
        store = self._store()
        while True:
            entry = await store.get(_rec(saga_id), type=SagaRecord)
            if entry is None:
                raise SagaNotFoundError(f"no saga {saga_id!r}")
            rec: SagaRecord = entry.value
            if rec.state == "completed":
                raise ConflictError(f"saga {saga_id!r} has completed")
            if rec.state != "running" or rec.aborted:
                return
            rec.aborted = True  # no new version: the job in flight, if any, still owns it
            try:
                await store.compare_and_set(_rec(saga_id), rec, revision=entry.revision)
            except ConflictError:
                continue
            await self._enqueue(rec, 0.0)
            return

    async def recover(self, name: str) -> int:
        """Make sure every unfinished saga ``name`` has its job; return how many are moving.

        Run when the owner module starts serving here: it covers a start that
        died between writing the record and enqueueing the first job.
        """
        store = self._store()
        moving = 0
        cursor: str | None = None
        while True:
            page = await store.scan("a.", limit=200, cursor=cursor)
            mine = [
                e for e in page.items if isinstance(e.value, dict) and e.value.get("name") == name
            ]
            ids = [e.key[2:] for e in mine]
            got = await store.get_many([_rec(i) for i in ids])
            jobs: list[Awaitable[None]] = []
            for entry, saga_id in zip(mine, ids, strict=True):
                found = got.get(_rec(saga_id))
                if found is None:
                    if self.clock() - float(entry.value.get("at", 0)) > ORPHAN_MARKER_S:
                        await store.delete(entry.key)
                    continue
                rec = _decode(found.value)
                if rec.active:
                    moving += 1
                    jobs.append(self._enqueue(rec, 0.0))
                elif rec.state != "stuck":
                    await store.delete(entry.key)
            for i in range(0, len(jobs), 64):
                await asyncio.gather(*jobs[i : i + 64])
            cursor = page.cursor
            if cursor is None:
                return moving

    # running ----------------------------------------------------------------------
    async def run(self, saga_id: str, version: int) -> None:
        """The job handler: move saga ``saga_id`` on from ``version`` by one step."""
        store = self._store()
        entry = await store.get(_rec(saga_id), type=SagaRecord)
        if entry is None:
            return
        rec: SagaRecord = entry.value
        if rec.version != version or not rec.active:
            if rec.active and rec.version > version:  # killed after the write: pass the baton on
                await self._enqueue(rec, 0.0)
            return
        owner, saga = self._saga(rec.name)
        outcome = await self._perform(owner, saga, rec)
        while True:
            new, delay = self._apply(saga, rec, outcome)
            ttl = None if new.active or new.state == "stuck" else saga.retention_s
            try:
                await store.compare_and_set(_rec(saga_id), new, revision=entry.revision, ttl_s=ttl)
                break
            except ConflictError:  # an abort flag was set meanwhile: apply on top of it
                entry = await store.get(_rec(saga_id), type=SagaRecord)
                if entry is None or entry.value.version != version:
                    return
                rec = entry.value
        if new.active:
            await self._enqueue(new, delay)
        elif new.state != "stuck":
            await store.delete(_marker(saga_id))

    async def _perform(self, owner: str, saga: Saga, rec: SagaRecord) -> _Outcome:
        if rec.state == "running" and rec.aborted:
            return _Outcome(phase="abort")
        forward = rec.state == "running"
        index = rec.cursor
        step = saga.steps[index]
        state = rec.steps[index]
        attempt = (state.attempts if forward else state.compensate_attempts) + 1
        action: Action | None = step.action if forward else step.compensate
        phase = "action" if forward else "compensate"
        if action is None:  # nothing to undo
            return _Outcome(phase=phase, index=index, attempt=attempt)
        params = self._params(step, rec, forward=forward)
        key = step_key_of(rec.id, step.name)
        if step.key_param is not None:
            params[step.key_param] = key
        meta = {STEP_META: key, PHASE_META: phase}
        try:
            async with asyncio.timeout(step.timeout_s):
                result = await self._invoke(owner, action, params, meta, step.timeout_s)
        except Exception as exc:
            return _Outcome(
                phase=phase,
                index=index,
                attempt=attempt,
                error=_error(phase, attempt, exc, self.clock()),
            )
        return _Outcome(phase=phase, index=index, attempt=attempt, result=result)

    @staticmethod
    def _params(step: Step, rec: SagaRecord, *, forward: bool) -> dict[str, Any]:
        build = step.params if forward else (step.compensate_params or step.params)
        if build is None:
            return dict(rec.params)
        return dict(build(rec.params, rec.results()))

    def _apply(self, saga: Saga, rec: SagaRecord, out: _Outcome) -> tuple[SagaRecord, float]:
        """The record after ``out`` (``rec`` is a fresh decode, changed in place) and the delay."""
        delay = 0.0
        if out.phase == "abort":
            rec.error = rec.error or "aborted"
            self._to_undo(saga, rec, rec.cursor - 1)
        elif out.phase == "action":
            step, state = saga.steps[out.index], rec.steps[out.index]
            state.attempts = out.attempt
            if out.error is None:
                state.state = "done"
                state.result = out.result
                rec.cursor = out.index + 1
                if rec.cursor == len(rec.steps):
                    rec.state = "completed"
            else:
                state.add_error(out.error)
                if out.attempt < step.max_attempts:
                    delay = step.backoff.delay_s(out.attempt)
                else:
                    state.state = "failed"
                    rec.error = f"{step.name}: {out.error.type}: {out.error.message}"
                    start = out.index if step.compensate_failed else out.index - 1
                    self._to_undo(saga, rec, start)
        else:
            step, state = saga.steps[out.index], rec.steps[out.index]
            state.compensate_attempts = out.attempt
            if out.error is None:
                state.state = "compensated"
                self._to_undo(saga, rec, out.index - 1)
            else:
                state.add_error(out.error)
                if out.attempt < step.compensate_attempts:
                    delay = step.backoff.delay_s(out.attempt)
                else:
                    rec.state = "stuck"
                    rec.error = f"compensating {step.name}: {out.error.type}: {out.error.message}"
        rec.version += 1
        rec.updated_at = self.clock()
        return rec, delay

    @staticmethod
    def _to_undo(saga: Saga, rec: SagaRecord, start: int) -> None:
        """Compensate backwards from ``start``: the next step that is done (or failed, if asked)."""
        for k in range(start, -1, -1):
            s = rec.steps[k].state
            if s == "done" or (s == "failed" and saga.steps[k].compensate_failed):
                rec.state = "compensating"
                rec.cursor = k
                return
        rec.state = "compensated"
        rec.cursor = -1

    async def _enqueue(self, rec: SagaRecord, delay_s: float) -> None:
        """The job of ``rec.version`` (a no-op if it exists: its id is derived from it).

        ``created_at`` is in the id too: a key started again once its finished
        record expired makes a new saga whose jobs are not the old one's.
        """
        job_id = keyed_id(APP, "saga.job", 1, [rec.id, rec.created_at, rec.version])
        await self._jobs().enqueue(
            self.job_name(rec.name),
            {"saga_id": rec.id, "version": rec.version},
            delay_s=delay_s or None,
            job_id=job_id,
        )


def _decode(value: Any) -> SagaRecord:
    """A record from a raw stored value (a scan returns builtins)."""
    if isinstance(value, SagaRecord):
        return value
    import msgspec

    return msgspec.convert(value, SagaRecord)


class ModuleSagas:
    """A module's view of ``Sagas`` (``self.sagas``): a bare name is one of its own sagas."""

    __slots__ = ("_owner", "_sagas")

    def __init__(self, sagas: Sagas, owner: str) -> None:
        self._sagas = sagas
        self._owner = owner

    async def start(
        self, name: str, params: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> str:
        """Start saga ``name`` (this module's, or ``"<module>.<saga>"``); see ``Sagas.start``."""
        full = name if "." in name else f"{self._owner}.{name}"
        return await self._sagas.start(full, params, key=key)

    async def get(self, saga_id: str) -> SagaRecord:
        """The saga's record; see ``Sagas.get``."""
        return await self._sagas.get(saga_id)
