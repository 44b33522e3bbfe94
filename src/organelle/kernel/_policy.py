"""Call policies at run time: breakers, bulkheads, rate limits, retry budgets, fallbacks.

``config/policy.py`` says what a policy is; this file makes it act. The
dispatcher asks ``Policies.guard(caller, target)`` once per call that may
have one (the answer is cached until a reload), and runs the call through
``Guard.run``: rate limit, breaker, bulkhead, the attempt, retries with
backoff inside the retry budget, and the fallback. A target with no policy
has no guard and its calls keep the plain path (the C one, locally).

State lives in the ``Policies`` of one kernel: a breaker per target (and per
node when a remote call names its node), a bulkhead and a token bucket per
caller and target, a retry budget per target. A reload swaps the policies and
keeps the state of a part whose settings did not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from organelle._native import speedups
from organelle.config.policy import (
    EMPTY,
    BreakerPolicy,
    BulkheadPolicy,
    CallRetryPolicy,
    Policy,
    PolicyTable,
    RateLimitPolicy,
)
from organelle.errors import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    InternalError,
    NotServedError,
    OrganelleError,
    RateLimitedError,
    RemoteError,
    TransportError,
    UnavailableError,
)

__all__ = [
    "CANCELLED",
    "EMPTY",
    "Breaker",
    "Bulkhead",
    "Guard",
    "Policies",
    "PolicyStats",
    "did_not_run",
    "failed_call",
    "no_declared",
]

_monotonic = time.monotonic
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# What ``Guard.leave`` is told of a call cancelled or stopped by a BaseException:
# neither a success nor a failure for the breaker.
CANCELLED = BaseException("cancelled")
# The callee's declared policy and idempotence; ``None`` while not known (a remote
# module the registry does not list yet): then nothing is cached.
Declared = Callable[[str], "tuple[Policy | None, bool] | None"]
Attempt = Callable[[float], Awaitable[Any]]


def did_not_run(exc: BaseException) -> bool:
    """Whether ``exc`` proves the callee never ran the call (so a retry repeats nothing).

    No node served it, a breaker or bulkhead refused it, or a node turned it
    away (draining, not serving). A call lost in flight (the connection
    dropped after it was sent: ``details["in_flight"]``) may have run.
    """
    if isinstance(exc, (NotServedError, CircuitOpenError, BulkheadFullError)):
        return True
    return type(exc) is UnavailableError and not exc.details.get("in_flight")


def failed_call(exc: BaseException) -> bool:
    """Whether ``exc`` counts against a breaker: no answer, or the callee broke."""
    if isinstance(exc, (CircuitOpenError, BulkheadFullError)):
        return False  # refused here: says nothing about the callee
    failures = (TransportError, InternalError, RemoteError, NotServedError)
    return isinstance(exc, failures) or not isinstance(exc, OrganelleError)


if TYPE_CHECKING or speedups is None:

    class _BreakerCore:
        """A breaker's state and outcome window (in C when the extension is built)."""

        __slots__ = ("_window", "bad", "consecutive", "state", "window")

        def __init__(self, window: int) -> None:
            self.state = CLOSED
            self.consecutive = 0
            self.window = window
            self._window: deque[bool] = deque(maxlen=window)
            self.bad = 0

        @property
        def seen(self) -> int:
            """Outcomes in the window."""
            return len(self._window)

        def push(self, ok: bool) -> None:
            """Add one outcome to the window (the oldest drops out when it is full)."""
            window = self._window
            if len(window) == self.window and not window[0]:
                self.bad -= 1
            window.append(ok)
            if not ok:
                self.bad += 1

        def forget(self) -> None:
            """Empty the window."""
            self._window.clear()
            self.bad = 0

    class _BulkheadCore:
        """A bulkhead's counters (in C when the extension is built)."""

        __slots__ = ("active", "limit", "waiters")

        active: int
        limit: int
        waiters: deque[asyncio.Future[None]]

    class _GuardCore:
        """What the C call path reads of a guard (in C when the extension is built)."""

        __slots__ = ("breaker", "bulkhead", "fast", "timeout")

        breaker: Breaker | None
        bulkhead: Bulkhead | None
        timeout: float
        fast: bool

else:
    _BreakerCore = speedups.BreakerCore
    _BulkheadCore = speedups.BulkheadCore
    _GuardCore = speedups.GuardCore


def _retryable(exc: BaseException, idempotent: bool) -> bool:
    if did_not_run(exc):
        return True
    return idempotent and failed_call(exc)


class Breaker(_BreakerCore):
    """One circuit breaker (see ``BreakerPolicy``); ``changes`` counts transitions by state.

    ``state``, ``consecutive`` and the outcome window live in the base (C when
    built): the C call path records a closed breaker's successes there itself.
    """

    __slots__ = ("changes", "key", "on_change", "opened_at", "policy", "probe_ok", "probing")

    def __init__(
        self, key: str, policy: BreakerPolicy, on_change: Callable[[Breaker], None] | None = None
    ) -> None:
        super().__init__(policy.window)
        self.key = key
        self.policy = policy
        self.opened_at = 0.0
        self.probing = 0
        self.probe_ok = 0
        self.changes: dict[str, int] = {CLOSED: 0, OPEN: 0, HALF_OPEN: 0}
        self.on_change = on_change

    def _to(self, state: str, now: float) -> None:
        self.state = state
        self.changes[state] += 1
        if state == OPEN:
            self.opened_at = now
        elif state == HALF_OPEN:
            self.probing = self.probe_ok = 0
        else:
            self.consecutive = 0
            self.forget()
        if self.on_change is not None:
            self.on_change(self)

    def allow(self, now: float) -> bool:
        """Whether a call may go out now (a half-open breaker lets ``probes`` through)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if now - self.opened_at < self.policy.reset_s:
                return False
            self._to(HALF_OPEN, now)
        if self.probing < self.policy.probes:
            self.probing += 1
            return True
        return False

    def refuses(self, now: float) -> bool:
        """Whether a call would be refused now (a node to leave out).

        Open and not yet due to half-open, or half-open with every probe out:
        a caller that picked such a node would be refused for nothing while
        another node could serve.
        """
        state = self.state
        if state == OPEN:
            return now - self.opened_at < self.policy.reset_s
        return state == HALF_OPEN and self.probing >= self.policy.probes

    def retry_after(self, now: float) -> float:
        """Seconds until an open breaker half-opens."""
        return max(0.0, self.opened_at + self.policy.reset_s - now)

    def record(self, *, ok: bool, now: float) -> None:
        """The outcome of a call this breaker let through."""
        state = self.state
        if state == HALF_OPEN:
            if not ok:
                self._to(OPEN, now)
            else:
                self.probe_ok += 1
                if self.probe_ok >= self.policy.probes:
                    self._to(CLOSED, now)
            return
        if state == OPEN:
            return  # a call that left before it opened: the decision is made
        self.push(ok)
        if ok:
            self.consecutive = 0
            return
        self.consecutive += 1
        policy = self.policy
        if self.consecutive >= policy.failures:
            self._to(OPEN, now)
            return
        seen = self.seen
        if seen >= policy.min_calls and self.bad >= policy.failure_ratio * seen:
            self._to(OPEN, now)


class Bulkhead(_BulkheadCore):
    """At most ``max_concurrent`` at once; ``max_queue`` wait in order; the rest refused.

    ``active``, ``limit`` (``max_concurrent``) and ``waiters`` live in the base
    (C when built), where the C call path takes and frees a slot itself.
    """

    __slots__ = ("policy", "rejected")

    def __init__(self, policy: BulkheadPolicy) -> None:
        self.policy = policy
        self.active = 0
        self.limit = policy.max_concurrent
        self.waiters = deque()
        self.rejected = 0

    async def acquire(self, deadline: float, target: str) -> None:
        """Take a slot, waiting in the queue if there is room there.

        Raises:
            BulkheadFullError: no slot and no room to wait, or the queue wait ran out.
            CallTimeoutError: the call's deadline passed while waiting.
        """
        policy = self.policy
        if self.active < policy.max_concurrent and not self.waiters:
            self.active += 1
            return
        if len(self.waiters) >= policy.max_queue:
            self.rejected += 1
            raise BulkheadFullError(
                f"calls to {target!r}: {policy.max_concurrent} running and "
                f"{policy.max_queue} waiting, the most allowed",
                details={"target": target, "max_concurrent": policy.max_concurrent},
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        left = deadline - _monotonic()
        limit = left if policy.queue_timeout_s is None else min(left, policy.queue_timeout_s)
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, limit))
        except TimeoutError:
            if fut.done():  # handed a slot just as the wait ran out: keep it
                return
            fut.cancel()
            self._forget(fut)
            if limit < left:
                self.rejected += 1
                raise BulkheadFullError(
                    f"calls to {target!r}: no slot within {policy.queue_timeout_s:g}s",
                    details={"target": target},
                ) from None
            raise CallTimeoutError(
                f"call to {target!r} timed out waiting for a slot", details={"target": target}
            ) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot came with the cancellation: pass it on
            else:
                fut.cancel()
                self._forget(fut)
            raise

    def _forget(self, fut: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self.waiters.remove(fut)

    def release(self) -> None:
        """Give the slot to the first waiter still waiting, else free it."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` stored; one per call."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, policy: RateLimitPolicy) -> None:
        self.rate = policy.rate
        self.burst = float(policy.burst if policy.burst is not None else max(1, round(policy.rate)))
        self.tokens = self.burst
        self.last = _monotonic()

    def take(self, now: float) -> float:
        """0 if a token was taken, else the seconds until there is one."""
        tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if tokens >= 1.0 - 1e-9:  # float dust from the refill must not refuse a due token
            self.tokens = max(0.0, tokens - 1.0)
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


class RetryBudget:
    """Calls and retries per second over a sliding window of one-second buckets."""

    __slots__ = ("calls", "policy", "retries", "stamps")

    def __init__(self, policy: CallRetryPolicy) -> None:
        self.policy = policy
        size = max(1, round(policy.budget_window_s))
        self.stamps = [0] * size
        self.calls = [0] * size
        self.retries = [0] * size

    def _bucket(self, now: float) -> int:
        second = int(now)
        i = second % len(self.stamps)
        if self.stamps[i] != second:
            self.stamps[i] = second
            self.calls[i] = self.retries[i] = 0
        return i

    def called(self, now: float) -> None:
        """Count one call (its first attempt)."""
        self.calls[self._bucket(now)] += 1

    def spend(self, now: float) -> bool:
        """Take one retry if the budget has room."""
        i = self._bucket(now)
        oldest = int(now) - len(self.stamps)
        live = [j for j, s in enumerate(self.stamps) if s > oldest]
        calls = sum(self.calls[j] for j in live)
        retries = sum(self.retries[j] for j in live)
        policy = self.policy
        if retries >= policy.min_per_s * len(self.stamps) + policy.budget * calls:
            return False
        self.retries[i] += 1
        return True


@dataclass(slots=True)
class PolicyStats:
    """What the policies did, by target (read by metrics and the dashboard)."""

    retries: dict[str, int] = field(default_factory=dict)
    retries_denied: dict[str, int] = field(default_factory=dict)
    bulkhead_rejected: dict[str, int] = field(default_factory=dict)
    rate_limited: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)
    breaker_changes: dict[tuple[str, str], int] = field(default_factory=dict)


def _bump(counts: dict[Any, int], key: Any) -> None:
    counts[key] = counts.get(key, 0) + 1


class Guard(_GuardCore):
    """The policy of one caller → target, with the state it shares: runs one call.

    ``breaker``, ``bulkhead``, ``timeout`` and ``fast`` live in the base (C
    when built): the C call path runs a ``fast`` guard's common case itself.
    """

    __slots__ = (
        "bucket",
        "budget",
        "fallback",
        "idempotent",
        "inline",
        "nodes",
        "owner",
        "per_node",
        "policy",
        "retry",
        "target",
    )

    def __init__(  # noqa: PLR0917 - the parts, resolved once by Policies
        self,
        owner: Policies,
        target: str,
        policy: Policy,
        idempotent: bool,
        breaker: Breaker | None,
        bulkhead: Bulkhead | None,
        bucket: TokenBucket | None,
        budget: RetryBudget | None,
    ) -> None:
        self.owner = owner
        self.target = target
        self.policy = policy
        self.idempotent = idempotent
        self.retry = policy.retry or None
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.bucket = bucket
        self.budget = budget
        self.fallback = bool(policy.fallback) or policy.fallback_value is not msgspec.UNSET
        # Without retries or a fallback a call is entered and left around one try,
        # with no await of its own: the dispatcher runs it on its inline path.
        self.inline = self.retry is None and not self.fallback
        # ... and without a rate limit, the C call path runs it (see Guard.left).
        self.fast = self.inline and bucket is None
        self.timeout = -1.0 if policy.timeout_s is None else float(policy.timeout_s)
        # Remote calls: a breaker per serving node instead of one for the target.
        self.per_node = isinstance(policy.breaker, BreakerPolicy) and policy.breaker.per_node
        scope = breaker.key if breaker is not None else target
        self.nodes: dict[str, Breaker] = owner.node_breakers.setdefault(scope, {})

    def node_breaker(self, node: str) -> Breaker:
        """The breaker of ``node`` for this target (shared with other callers' guards)."""
        policy = self.policy.breaker
        assert policy  # noqa: S101 - per_node implies a breaker
        found = self.nodes.get(node)
        if found is None or (found.policy is not policy and found.policy != policy):
            key = f"{self.breaker.key if self.breaker else self.target}@{node}"
            found = self.nodes[node] = self.owner.breaker(key, policy)
        return found

    def avoid(self, now: float) -> set[str]:
        """Nodes whose breaker is open now: a call goes elsewhere."""
        return {node for node, b in self.nodes.items() if b.refuses(now)}

    def enter(self, now: float, deadline: float) -> float | None:
        """Admit one call without waiting: its deadline, or ``None`` when it would wait.

        Raises:
            RateLimitedError: the caller's bucket is empty.
            CircuitOpenError: the breaker refuses.
        """
        if self.bucket is not None:
            self.take_token(now)
        bulkhead = self.bulkhead
        if bulkhead is not None:
            if bulkhead.active >= bulkhead.policy.max_concurrent or bulkhead.waiters:
                return None
            bulkhead.active += 1
        breaker = self.breaker
        if breaker is not None and not breaker.allow(now):
            if bulkhead is not None:
                bulkhead.release()
            raise self.refused(breaker, now)
        timeout = self.policy.timeout_s
        return deadline if timeout is None else min(deadline, now + timeout)

    def leave(self, failure: BaseException | None) -> None:
        """The end of a call ``enter`` admitted (``failure``: what it raised, if anything)."""
        bulkhead = self.bulkhead
        if bulkhead is not None:
            if bulkhead.waiters:
                bulkhead.release()
            else:
                bulkhead.active -= 1
        breaker = self.breaker
        if breaker is None or failure is CANCELLED:
            return
        if failure is None and breaker.state == CLOSED:  # the common case, inlined
            breaker.consecutive = 0
            breaker.push(True)  # noqa: FBT003 - the outcome
            return
        breaker.record(ok=failure is None or not failed_call(failure), now=_monotonic())

    def left(self, error: BaseException | None) -> None:
        """The end of a call the C path admitted that raised ``error`` (``None``: abandoned).

        The C path leaves a success itself while no one waits and the breaker
        is closed; a failure, a cancellation and the rest come here.
        """
        self.leave(error if isinstance(error, Exception) else CANCELLED)

    def take_token(self, now: float) -> None:
        wait = self.bucket.take(now) if self.bucket is not None else 0.0
        if wait > 0:
            _bump(self.owner.stats.rate_limited, self.target)
            raise RateLimitedError(
                f"too many calls to {self.target!r}",
                details={"target": self.target, "retry_after_s": wait},
            )

    def refused(self, breaker: Breaker, now: float) -> CircuitOpenError:
        return CircuitOpenError(
            f"calls to {self.target!r} are failing: circuit open",
            details={"target": self.target, "retry_after_s": breaker.retry_after(now)},
        )

    def deadline(self, deadline: float, now: float) -> float:
        """The call's deadline under the policy's timeout."""
        timeout = self.policy.timeout_s
        return deadline if timeout is None else min(deadline, now + timeout)

    async def run(
        self,
        attempt: Attempt,
        deadline: float,
        fallback: Callable[[str], Awaitable[Any]] | None = None,
        *,
        nodes: bool = False,
    ) -> Any:
        """Run ``attempt(deadline)`` under the policy; ``fallback(target)`` calls a fallback.

        ``nodes``: each attempt tells its node's breaker itself (a remote call
        under a per-node breaker); the target's breaker stays out of it.
        """
        try:
            return await self._attempts(attempt, deadline, nodes)
        except Exception as exc:
            if not self.fallback or not self._falls_back(exc):
                raise
            _bump(self.owner.stats.fallbacks, self.target)
            policy = self.policy
            if isinstance(policy.fallback, str) and fallback is not None:
                return await fallback(policy.fallback)
            return policy.fallback_value

    def _falls_back(self, exc: BaseException) -> bool:
        on = self.policy.fallback_on
        return any(getattr(c, "code", None) in on for c in type(exc).__mro__)

    async def _attempts(self, attempt: Attempt, deadline: float, nodes: bool) -> Any:  # noqa: C901, PLR0912, PLR0915 - one loop, every part in order
        now = _monotonic()
        owner = self.owner
        if self.bucket is not None:
            self.take_token(now)
        deadline = self.deadline(deadline, now)
        retry = self.retry
        budget = self.budget
        if budget is not None:
            budget.called(now)
        tries = 0
        while True:
            tries += 1
            breaker = None if nodes else self.breaker
            if breaker is not None and not breaker.allow(now):
                raise self.refused(breaker, now)
            try:
                until = deadline
                if retry is not None and retry.attempt_timeout_s is not None:
                    until = min(deadline, now + retry.attempt_timeout_s)
                bulkhead = self.bulkhead
                if bulkhead is None:
                    result = await attempt(until)
                else:
                    if bulkhead.active < bulkhead.policy.max_concurrent and not bulkhead.waiters:
                        bulkhead.active += 1  # a free slot: no await
                    else:
                        await bulkhead.acquire(until, self.target)
                    try:
                        result = await attempt(until)
                    finally:
                        bulkhead.release()
            except Exception as exc:
                now = _monotonic()
                if isinstance(exc, BulkheadFullError):
                    _bump(owner.stats.bulkhead_rejected, self.target)
                if breaker is not None and not isinstance(exc, BulkheadFullError):
                    breaker.record(ok=not failed_call(exc), now=now)
                if retry is None or tries >= retry.attempts or not _retryable(exc, self.idempotent):
                    raise
                cap = min(retry.max_backoff_s, retry.backoff_s * 2 ** (tries - 1))
                pause = random.uniform(0.0, cap)  # noqa: S311 - jitter, not crypto
                if now + pause >= deadline:
                    raise
                if budget is not None and not budget.spend(now):
                    _bump(owner.stats.retries_denied, self.target)
                    raise
                _bump(owner.stats.retries, self.target)
                await asyncio.sleep(pause)
                now = _monotonic()
                continue
            if breaker is not None:
                breaker.record(ok=True, now=_monotonic())
            return result


class Policies:
    """The kernel's policies: the config table, the callees' declared ones, and their state."""

    def __init__(self, table: PolicyTable, declared: Declared) -> None:
        self.table = table
        self._declared = declared
        # Layers set by code (``Kernel.set_policy``): under config's caller layers.
        self.code: dict[tuple[str | None, str], Policy] = {}
        self._guards: dict[tuple[str | None, str], Guard | None] = {}
        # The keys of ``_guards`` by callee module: forgetting one module's guards
        # when it (re)binds costs its own guards, not a scan of every module's.
        self._guard_keys: dict[str, list[tuple[str | None, str]]] = {}
        self.breakers: dict[str, Breaker] = {}
        # Per breaker scope (target or module): its nodes' breakers, shared by every guard.
        self.node_breakers: dict[str, dict[str, Breaker]] = {}
        self._bulkheads: dict[tuple[str | None, str], Bulkhead] = {}
        self._buckets: dict[tuple[str | None, str], TokenBucket] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self.stats = PolicyStats()
        self.on_breaker: Callable[[Breaker], None] | None = None

    @property
    def callers(self) -> frozenset[str]:
        """Modules with caller-specific policies (their calls name them)."""
        return self.table.callers | {c for c, _ in self.code if c is not None}

    def resolve(self, caller: str | None, target: str) -> tuple[Policy, bool, bool]:
        """The policy for ``caller`` → ``target``, whether the method is idempotent, and known.

        Not known: the callee is on another node the registry does not list
        yet; the config layers apply, its declared ones later.
        """
        known = self._declared(target)
        declared, idempotent = (None, False) if known is None else known
        table = self.table
        module = target.partition(".")[0]
        policy = table.default
        if declared is not None:
            policy = declared.over(policy)
        for layer in table.layers(None, target):
            policy = layer.over(policy)
        keys = ((caller, "*"), (caller, module), (caller, target))
        for key in keys:
            found = self.code.get(key)
            if found is not None:
                policy = found.over(policy)
        if caller is not None:
            for key in keys:
                found = table.by_caller.get(key)  # type: ignore[arg-type]
                if found is not None:
                    policy = found.over(policy)
        return policy, idempotent, known is not None

    def guard(self, caller: str | None, target: str) -> Guard | None:
        """The guard of ``caller`` → ``target``, or ``None`` when no policy applies."""
        key = (caller, target)
        try:
            return self._guards[key]
        except KeyError:
            pass
        policy, idempotent, known = self.resolve(caller, target)
        made = None if policy.empty else self._make(caller, target, policy, idempotent)
        if known:
            self._guards[key] = made
            self._guard_keys.setdefault(target.partition(".")[0], []).append(key)
        return made

    def applies(self, target: str) -> bool:
        """Whether some caller's call to ``target`` has a policy (then it leaves the C path)."""
        if self.guard(None, target) is not None:
            return True
        return any(self.guard(caller, target) is not None for caller in self.callers)

    def _make(self, caller: str | None, target: str, policy: Policy, idempotent: bool) -> Guard:
        breaker = None
        if policy.breaker:
            scope = target.partition(".")[0] if policy.breaker.scope == "module" else target
            breaker = self.breaker(scope, policy.breaker)
        bulkhead = None
        if policy.bulkhead:
            bulkhead = self._bulkheads.get((caller, target))
            if bulkhead is None or bulkhead.policy != policy.bulkhead:
                bulkhead = self._bulkheads[caller, target] = Bulkhead(policy.bulkhead)
        bucket = None
        if policy.rate_limit:
            bucket = self._buckets.get((caller, target))
            if bucket is None or (bucket.rate, bucket.burst) != (
                policy.rate_limit.rate,
                TokenBucket(policy.rate_limit).burst,
            ):
                bucket = self._buckets[caller, target] = TokenBucket(policy.rate_limit)
        budget = None
        if policy.retry:
            budget = self._budgets.get(target)
            if budget is None or budget.policy != policy.retry:
                budget = self._budgets[target] = RetryBudget(policy.retry)
        return Guard(self, target, policy, idempotent, breaker, bulkhead, bucket, budget)

    def breaker(self, key: str, policy: BreakerPolicy) -> Breaker:
        """The breaker of ``key`` (a target, or ``target@node``), kept while its policy stands."""
        found = self.breakers.get(key)
        if found is None or (found.policy is not policy and found.policy != policy):
            found = self.breakers[key] = Breaker(key, policy, self._changed)
        return found

    def _changed(self, breaker: Breaker) -> None:
        _bump(self.stats.breaker_changes, (breaker.key, breaker.state))
        if self.on_breaker is not None:
            self.on_breaker(breaker)

    def reload(self, table: PolicyTable) -> None:
        """Use new policies; state of unchanged parts is kept, guards are rebuilt on demand."""
        self.table = table
        self._guards.clear()
        self._guard_keys.clear()

    def set_layer(self, caller: str | None, target: str, policy: Policy | None) -> None:
        """Set (or with ``None`` remove) a layer made by code; config still overrides it."""
        if policy is None:
            self.code.pop((caller, target), None)
        else:
            self.code[caller, target] = policy
        self._guards.clear()
        self._guard_keys.clear()

    def forget(self, module: str) -> None:
        """Drop cached guards of a module whose declared policies may have changed."""
        for key in self._guard_keys.pop(module, ()):
            self._guards.pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        """Breakers and counters, for metrics, the dashboard and ``Kernel.policy_stats``."""
        now = _monotonic()
        stats = self.stats
        return {
            "breakers": {
                key: {
                    "state": (
                        HALF_OPEN if b.state == OPEN and b.retry_after(now) == 0 else b.state
                    ),
                    "consecutive_failures": b.consecutive,
                    "changes": dict(b.changes),
                    "retry_after_s": b.retry_after(now) if b.state == OPEN else 0.0,
                }
                for key, b in self.breakers.items()
            },
            "retries": dict(stats.retries),
            "retries_denied": dict(stats.retries_denied),
            "bulkhead_rejected": dict(stats.bulkhead_rejected),
            "rate_limited": dict(stats.rate_limited),
            "fallbacks": dict(stats.fallbacks),
        }


def no_declared(_target: str) -> tuple[Policy | None, bool] | None:
    """The declared-policy lookup of a kernel that knows no callee policies."""
    return None, False
