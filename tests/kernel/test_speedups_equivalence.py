"""Hypothesis: the C hot path and the pure Python path behave alike on generated apps.

Each example is an app (modules with ``@rpc`` methods and ``@on`` handlers:
priorities, filters, delivery modes, payload and parameter conversion,
guarded methods, per-method timeouts) and a script of calls and emits run
against it. Handlers record what they see (context links, principal, deadline,
topic, meta, their converted input) and then suspend, call each other, raise
or overrun their deadline. The script runs twice in one process, on a kernel
that serves calls and events from C and on one that keeps the pure Python
path, and every observation must match: results and errors (type, code,
message), handler order, contexts, counters.

Request ids differ between the runs, so they are compared as relations: each
id becomes the order in which it was first seen. Timing never decides the
outcome: the only deadlines that expire are on methods that hang at once,
with nothing else running meanwhile (event handlers never reach them, and
the script drains events before each call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from organelle import Kernel, Module, OrganelleError, Principal, context, on, rpc
from organelle._native import speedups
from organelle.kernel import BaseListener

needs_c = pytest.mark.skipif(speedups is None, reason="C extension not in use")


class Point(msgspec.Struct):
    n: int
    name: str = ""


class PModel(pydantic.BaseModel):
    n: int
    name: str = ""


class Refused(OrganelleError):
    code = "test.refused"


class Counting(BaseListener):
    """Asks the kernel for its lean per-RPC counters (as metrics does)."""

    call_buckets = (0.001,)


class PureKernel(Kernel):
    """A kernel that keeps the pure Python path (for calls, nested calls, emits, deliveries)."""

    _compiled_path = False


# ---------------------------------------------------------------- the plan

RPC_PARAMS = ("int", "float", "struct", "model", "raw", "none")
SUB_PARAMS = ("any", "dict", "struct", "model", "raw", "none")
# Overlapping on purpose: most events reach several handlers.
PATTERNS = ("t.a", "t.a", "t.b", "t.*", "t.>")
TOPICS = ("t.a", "t.a", "t.b", "t.c")
PRIORITIES = (-5, 0, 3, 10)
# Call arguments and payloads, by name (values are made fresh for every use).
ARGS = ("int", "float", "point", "bad", "str", "omit")
PAYLOADS = ("even", "even", "odd", "bad", "int")
PRINCIPALS = {
    "user": Principal(id="u", roles=frozenset({"user"})),
    "admin": Principal(id="a", roles=frozenset({"admin"})),
}
TIMEOUTS_S = {"none": None, "long": 5.0, "short": 0.02, "zero": 0.0}
OMIT = object()


def arg_value(name: str) -> Any:
    return {
        "int": 4,
        "float": 2.5,
        "point": {"n": 3, "name": "p"},
        "bad": {"n": "x"},
        "str": "s",
        "omit": OMIT,
    }[name]


def payload_value(name: str) -> Any:
    return {"even": {"n": 2, "name": "e"}, "odd": {"n": 3}, "bad": {"n": "x"}, "int": 7}[name]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One thing a handler does: suspend, call (``target`` is an RPC index), raise."""

    kind: str  # suspend | call | call_expired | raise_org | raise_plain | raise_type
    target: int = -1
    arg: str = "omit"
    catch: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcPlan:
    index: int
    module: int
    param: str
    roles: bool
    timeout: str  # a TIMEOUTS_S key; "short" and "zero" only for a method that hangs
    hang: bool  # awaits forever once started: it ends at its own deadline
    steps: tuple[Step, ...]

    @property
    def target(self) -> str:
        return f"m{self.module}.r{self.index}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubPlan:
    index: int
    module: int
    pattern: str
    priority: int
    filtered: bool
    delivery: str
    param: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    kind: str  # call | call_with | emit
    target: int = -1
    arg: str = "omit"
    timeout: float | None = None
    principal: str | None = None
    meta: bool = False
    events: tuple[tuple[str, str], ...] = ()  # emit: (topic, payload) each, back to back


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    modules: int
    rpcs: tuple[RpcPlan, ...]
    subs: tuple[SubPlan, ...]
    actions: tuple[Action, ...]
    call_stats: bool


# Arguments that fit each parameter kind (as is or by conversion); others test errors.
FITTING = {
    "int": ("int",),
    "float": ("int", "float"),
    "struct": ("point",),
    "model": ("point",),
    "raw": ("int", "point", "str"),
    "none": ("omit",),
}
STEP_KINDS = (
    *("suspend", "suspend", "suspend", "call", "call", "call", "call_expired"),
    *("raise_org", "raise_plain", "raise_type"),
)


def _arg(draw: st.DrawFn, param: str) -> str:
    """Mostly an argument that fits: a call that fails validation tests little else."""
    return draw(st.sampled_from(ARGS if draw(st.integers(0, 3)) == 0 else FITTING[param]))


def _steps(draw: st.DrawFn, params: list[str], callable_rpcs: list[int]) -> tuple[Step, ...]:
    out: list[Step] = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(STEP_KINDS))
        if kind in ("call", "call_expired"):
            if not callable_rpcs:
                continue
            target = draw(st.sampled_from(callable_rpcs))
            out.append(
                Step(
                    kind=kind,
                    target=target,
                    arg=_arg(draw, params[target]),
                    catch=draw(st.booleans()),
                )
            )
        else:
            out.append(Step(kind=kind))
    return tuple(out)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    modules = draw(st.integers(1, 3))
    n_rpcs = draw(st.integers(1, 5))
    heads: list[tuple[int, bool, str, bool]] = []
    params: list[str] = []
    for _ in range(n_rpcs):
        hang = draw(st.integers(0, 5)) == 0
        timeout = draw(st.sampled_from(("short", "zero") if hang else ("none", "none", "long")))
        roles = draw(st.integers(0, 3)) == 0
        heads.append((draw(st.integers(0, modules - 1)), roles, timeout, hang))
        params.append(draw(st.sampled_from(RPC_PARAMS)))
    rpcs: list[RpcPlan] = []
    may_hang = [False] * n_rpcs
    for i in reversed(range(n_rpcs)):  # an RPC calls only later ones: no cycles
        module, roles, timeout, hang = heads[i]
        steps = () if hang else _steps(draw, params, list(range(i + 1, n_rpcs)))
        may_hang[i] = hang or any(s.target >= 0 and may_hang[s.target] for s in steps)
        rpcs.append(
            RpcPlan(
                index=i,
                module=module,
                param=params[i],
                roles=roles,
                timeout=timeout,
                hang=hang,
                steps=steps,
            )
        )
    rpcs.reverse()
    # Event handlers run side by side: none may wait for a deadline, so timing never
    # decides their order.
    safe = [i for i in range(n_rpcs) if not may_hang[i]]
    subs = tuple(
        SubPlan(
            index=j,
            module=draw(st.integers(0, modules - 1)),
            pattern=draw(st.sampled_from(PATTERNS)),
            priority=draw(st.sampled_from(PRIORITIES)),
            filtered=draw(st.booleans()),
            delivery=draw(st.sampled_from(("balanced", "broadcast"))),
            param=draw(st.sampled_from(SUB_PARAMS)),
            steps=_steps(draw, params, safe),
        )
        for j in range(draw(st.integers(0, 6)))
    )
    actions: list[Action] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("call", "call_with", "emit")))
        if kind == "emit":
            events = draw(
                st.lists(
                    st.tuples(st.sampled_from(TOPICS), st.sampled_from(PAYLOADS)),
                    min_size=1,
                    max_size=3,
                )
            )
            actions.append(Action(kind="emit", meta=draw(st.booleans()), events=tuple(events)))
            continue
        target = draw(st.integers(0, n_rpcs - 1))
        arg = _arg(draw, params[target])
        if kind == "call":
            actions.append(Action(kind="call", target=target, arg=arg))
        else:
            actions.append(
                Action(
                    kind="call_with",
                    target=target,
                    arg=arg,
                    timeout=draw(st.sampled_from((None, None, 5.0, 0.0))),
                    principal=draw(st.sampled_from((None, "user", "admin", "admin"))),
                    meta=draw(st.booleans()),
                )
            )
    return Scenario(
        modules=modules,
        rpcs=tuple(rpcs),
        subs=subs,
        actions=tuple(actions),
        call_stats=draw(st.booleans()),
    )


# ---------------------------------------------------------------- the app


def view(value: Any) -> Any:
    """A comparable picture of a handler's input or result."""
    if value is OMIT:
        return "<none>"
    if isinstance(value, Point):
        return ("Point", value.n, value.name)
    if isinstance(value, PModel):
        return ("PModel", value.n, value.name)
    if isinstance(value, dict):
        return ("dict", sorted((k, view(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return [view(v) for v in value]
    return (type(value).__name__, value)


def error_view(exc: BaseException) -> tuple[str, str | None, str]:
    return type(exc).__name__, getattr(exc, "code", None), str(exc)


def number(payload: Any) -> Any:
    return payload["n"] if isinstance(payload, dict) else getattr(payload, "n", payload)


def even(payload: Any) -> bool:
    return bool(number(payload) % 2 == 0)  # "x" % 2 raises: a failing filter


class Recorder:
    """Collects what every handler of one run sees and does, in order."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.trace: list[tuple[Any, ...]] = []
        self.deadlines: dict[str, float | None] = {}

    def started(self, hid: str, arg: Any) -> None:
        ctx = context()
        self.deadlines[ctx.request_id] = ctx.deadline
        cause = ctx.causation_id
        inherited = cause is not None and ctx.deadline == self.deadlines.get(cause)
        principal = getattr(ctx.principal, "id", ctx.principal)
        self.trace.append(
            (
                "start",
                hid,
                ("id", ctx.request_id),
                ("id", ctx.correlation_id),
                ("id", cause),
                principal,
                ctx.deadline is not None,
                inherited,
                ctx.topic,
                sorted(ctx.meta.items()),
                view(arg),
            )
        )

    async def run(
        self, mod: Module, hid: str, steps: tuple[Step, ...], arg: Any, *, hang: bool = False
    ) -> Any:
        self.started(hid, arg)
        if hang:
            try:
                await asyncio.sleep(3600)
            except BaseException as exc:  # cancelled at the deadline, or closed past it
                self.trace.append(("abandoned", hid, type(exc).__name__))
                raise
        results = [await self.step(mod, hid, step) for step in steps]
        self.trace.append(("end", hid))
        return [hid, view(arg), *results]

    async def step(self, mod: Module, hid: str, step: Step) -> Any:
        if step.kind == "suspend":
            await asyncio.sleep(0)
            self.trace.append(("resumed", hid))
            return "resumed"
        if step.kind == "raise_org":
            raise Refused(f"{hid} refuses")
        if step.kind == "raise_plain":
            raise KeyError(hid)
        if step.kind == "raise_type":
            raise TypeError(hid)
        target = self.scenario.rpcs[step.target].target
        value = arg_value(step.arg)
        params = {} if value is OMIT else {"x": value}
        try:
            if step.kind == "call":
                out = view(await mod.call(target, **params))
            else:  # a deadline already past: refused before the handler starts
                out = view(await mod.call_with(target, params, timeout_s=0))
        except Exception as exc:
            if not step.catch:
                raise
            out = error_view(exc)
        self.trace.append(("called", hid, target, out))
        return out


Handler = Callable[..., Coroutine[Any, Any, Any]]


def rpc_handler(plan: RpcPlan, rec: Recorder) -> Handler:
    hid = f"r{plan.index}"

    async def body(self: Module, x: Any) -> Any:
        return await rec.run(self, hid, plan.steps, x, hang=plan.hang)

    async def h_int(self: Module, x: int) -> Any:
        return await body(self, x)

    async def h_float(self: Module, x: float) -> Any:
        return await body(self, x)

    async def h_struct(self: Module, x: Point) -> Any:
        return await body(self, x)

    async def h_model(self: Module, x: PModel) -> Any:
        return await body(self, x)

    async def h_raw(self: Module, x: Any) -> Any:
        return await body(self, x)

    async def h_none(self: Module) -> Any:
        return await body(self, OMIT)

    handlers: dict[str, Handler] = {
        "int": h_int,
        "float": h_float,
        "struct": h_struct,
        "model": h_model,
        "raw": h_raw,
        "none": h_none,
    }
    fn = handlers[plan.param]
    fn.__name__ = fn.__qualname__ = hid
    return rpc(
        name=hid,
        validate=plan.param != "raw",
        timeout_s=TIMEOUTS_S[plan.timeout],
        roles=("admin",) if plan.roles else (),
    )(fn)


def sub_handler(plan: SubPlan, rec: Recorder) -> Handler:
    hid = f"s{plan.index}"

    async def body(self: Module, payload: Any) -> Any:
        await rec.run(self, hid, plan.steps, payload)

    async def h_any(self: Module, payload: Any) -> None:
        await body(self, payload)

    async def h_dict(self: Module, payload: dict[str, Any]) -> None:
        await body(self, payload)

    async def h_struct(self: Module, payload: Point) -> None:
        await body(self, payload)

    async def h_model(self: Module, payload: PModel) -> None:
        await body(self, payload)

    async def h_none(self: Module) -> None:
        await body(self, OMIT)

    handlers: dict[str, Handler] = {
        "any": h_any,
        "dict": h_dict,
        "struct": h_struct,
        "model": h_model,
        "raw": h_struct,  # declared a Point; validate=False passes the payload as emitted
        "none": h_none,
    }
    fn = handlers[plan.param]
    fn.__name__ = fn.__qualname__ = hid
    return on(
        plan.pattern,
        delivery="broadcast" if plan.delivery == "broadcast" else "balanced",
        filter=even if plan.filtered else None,
        priority=plan.priority,
        validate=plan.param != "raw",
    )(fn)


def build(scenario: Scenario, rec: Recorder) -> list[type[Module]]:
    """Fresh module classes for one run (their handlers record into ``rec``)."""
    classes: list[type[Module]] = []
    for m in range(scenario.modules):
        ns: dict[str, Any] = {"name": f"m{m}"}
        ns.update({f"r{p.index}": rpc_handler(p, rec) for p in scenario.rpcs if p.module == m})
        ns.update({f"s{p.index}": sub_handler(p, rec) for p in scenario.subs if p.module == m})
        classes.append(type(f"M{m}", (Module,), ns))
    return classes


# ---------------------------------------------------------------- one run


async def play(scenario: Scenario, *, pure: bool) -> list[Any]:
    """Run the script on a kernel taking one path; return everything observed."""
    rec = Recorder(scenario)
    kernel = (PureKernel if pure else Kernel)(build(scenario, rec))
    if pure:
        assert kernel._dispatcher._caller is None
    else:
        assert speedups is not None
        assert type(getattr(kernel.call, "__self__", None)) is speedups.Caller
    async with kernel:
        assert (kernel._bus.deliver is None) is pure
        if scenario.call_stats:
            kernel.listen(Counting())
        stats = kernel.call_stats or {}
        for i, act in enumerate(scenario.actions):
            if act.kind == "emit":
                for topic, payload in act.events:
                    if act.meta:
                        await kernel.emit(topic, payload_value(payload), meta={"k": "v"})
                    else:
                        await kernel.emit(topic, payload_value(payload))
                await kernel.drain()
                continue
            target = scenario.rpcs[act.target].target
            value = arg_value(act.arg)
            params = {} if value is OMIT else {"x": value}
            try:
                if act.kind == "call":
                    result = view(await kernel.call(target, **params))
                else:
                    result = view(
                        await kernel.call_with(
                            target,
                            params,
                            timeout_s=act.timeout,
                            principal=None if act.principal is None else PRINCIPALS[act.principal],
                            meta={"k": "v"} if act.meta else None,
                        )
                    )
            except Exception as exc:
                result = error_view(exc)
            rec.trace.append(("action", i, result))
        await kernel.drain()
        subs = [
            (
                s.module,
                s.handler,
                s.pattern,
                s.delivered,
                s.failed,
                s.skipped,
                s.last_error and sorted(s.last_error.items()),
            )
            for s in kernel.subscriptions()
        ]
        counted = sorted(
            (target, s.calls, sorted(s.errors.items()), sum(s.counts), s.pending)
            for target, s in stats.items()
        )
    return relabel([*rec.trace, ("subscriptions", subs), ("call stats", counted)])


def relabel(observed: list[Any]) -> list[Any]:
    """Request ids as the order in which each was first seen (raw ids differ by run)."""
    seen: dict[str, int] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "id":
            return ("id", None if value[1] is None else seen.setdefault(value[1], len(seen)))
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "request_id":
            return ("request_id", seen.setdefault(value[1], len(seen)))
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        return value

    return walk(observed)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the property

# The priority bug this test found: a filtered priority-10 handler ran after a
# plain priority-0 one on the C path only.
PRIORITY_CASE = Scenario(
    modules=1,
    rpcs=(
        RpcPlan(index=0, module=0, param="none", roles=False, timeout="none", hang=False, steps=()),
    ),
    subs=(
        SubPlan(
            index=0,
            module=0,
            pattern="t.a",
            priority=0,
            filtered=False,
            delivery="balanced",
            param="any",
            steps=(),
        ),
        SubPlan(
            index=1,
            module=0,
            pattern="t.a",
            priority=10,
            filtered=True,
            delivery="balanced",
            param="any",
            steps=(),
        ),
    ),
    actions=(Action(kind="emit", events=(("t.a", "even"),)),),
    call_stats=False,
)


@needs_c
@pytest.mark.timeout(300)  # passing takes seconds; shrinking a failure takes longer
@settings(
    max_examples=100,  # about 5 s
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
@example(PRIORITY_CASE)
def test_the_c_and_pure_paths_agree(scenario: Scenario) -> None:
    note(repr(scenario))
    on_c = asyncio.run(play(scenario, pure=False))
    on_python = asyncio.run(play(scenario, pure=True))
    assert on_c == on_python


# ---------------------------------------------------------------- policies
# A breaker + bulkhead (+ timeout) policy: the C path runs its common case on
# the state the Python Guard keeps. A script of calls that succeed, fail, raise
# an organelle error (a success for the breaker) or suspend, on targets whose
# breakers open on a count or on the window's ratio and half-open at once
# (reset_s tiny: probes without waiting), must leave the same outcomes and
# the same breaker history on both paths.

_POLICIES: dict[str, dict[str, Any]] = {
    "count": {"timeout_s": 5, "breaker": {"failures": 2, "reset_s": 1e-9, "probes": 2}},
    "ratio": {
        "breaker": {"failures": 50, "window": 5, "min_calls": 3, "failure_ratio": 0.6},
        "bulkhead": {"max_concurrent": 3},
    },
    "both": {
        "timeout_s": 5,
        "breaker": {
            "failures": 3,
            "window": 4,
            "min_calls": 4,
            "failure_ratio": 0.5,
            "reset_s": 1e-9,
        },
        "bulkhead": {"max_concurrent": 2, "max_queue": 4},
    },
}


class Policied(Module):
    name = "policied"

    async def _act(self, how: str) -> str:
        if how == "suspend":
            await asyncio.sleep(0)
        if how == "fail":
            raise KeyError("k")
        if how == "refuse":
            raise Refused("no")
        return how

    @rpc(policy=_POLICIES["count"])
    async def count(self, how: str) -> str:
        return await self._act(how)

    @rpc(policy=_POLICIES["ratio"])
    async def ratio(self, how: str) -> str:
        return await self._act(how)

    @rpc(policy=_POLICIES["both"])
    async def both(self, how: str) -> str:
        return await self._act(how)


POLICY_STEPS = st.lists(
    st.tuples(
        st.sampled_from(tuple(_POLICIES)),
        st.sampled_from(("ok", "ok", "fail", "fail", "refuse", "suspend")),
        st.integers(min_value=1, max_value=3),  # calls made at once
    ),
    max_size=30,
)


async def play_policies(steps: list[tuple[str, str, int]], *, pure: bool) -> list[Any]:
    seen: list[Any] = []
    kernel_type = PureKernel if pure else Kernel
    async with kernel_type([Policied]) as kernel:
        for target, how, together in steps:
            calls = [kernel.call(f"policied.{target}", how=how) for _ in range(together)]
            got = await asyncio.gather(*calls, return_exceptions=True)
            seen.extend(g if isinstance(g, str) else (type(g).__name__, str(g)) for g in got)
        stats = kernel.policy_stats()
        for key, breaker in sorted(stats["breakers"].items()):
            seen.append(
                (key, breaker["state"], breaker["consecutive_failures"], breaker["changes"])
            )
        seen.append(stats["bulkhead_rejected"])
        for target in _POLICIES:
            guard = kernel._router.local[f"policied.{target}"].policy
            assert guard is not None
            assert guard.bulkhead is None or guard.bulkhead.active == 0  # every slot given back
    return seen


@needs_c
@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(POLICY_STEPS)
# Opens on the window's ratio only if the C path's successes are in the window.
@example([("both", "ok", 3), ("both", "fail", 1), ("both", "ok", 1), ("both", "fail", 1)])
def test_policies_agree_on_the_c_and_pure_paths(steps: list[tuple[str, str, int]]) -> None:
    note(repr(steps))
    assert asyncio.run(play_policies(steps, pure=False)) == asyncio.run(
        play_policies(steps, pure=True)
    )
