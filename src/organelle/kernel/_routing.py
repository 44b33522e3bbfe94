"""Weighted routing: which node, and so which version, a call to another node goes to.

Without a ``[routing.<module>]`` table (``config/routing.py``) nothing here
runs: the call goes to the module's queue group and the broker picks a node,
as it always did. With one, ``pick`` chooses the node itself from the
versions the transport knows each node serves (no I/O per call):

1. the first A/B rule whose criteria the call matches names a version;
2. otherwise the weights: a point in ``[0, 1)`` — the hash of the sticky key
   (the principal, a parameter, a meta key), or a random one — lands on the
   cumulative weights, so one key stays on one version while weights stand
   and, after a reload, only the keys whose share moved change version;
3. among the nodes of that version, calls are spread round robin.

Versions outside the ``requires`` range of a local module are never picked.
A ``mirror`` sends a shadow copy of a share of the calls to another version
in the background: the caller never waits for it, its result is dropped,
and both sides' calls, errors and latency are counted (``stats``) so the
new version can be compared with the old before it takes real traffic.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from organelle.config.routing import criterion_text
from organelle.errors import InternalError, OrganelleError, UnavailableError

if TYPE_CHECKING:
    from organelle.config.routing import RouteRule, RouteTable
    from organelle.context import Context
    from organelle.transport import Transport

__all__ = ["MIRROR_META", "RouteStats", "Routing"]

log = logging.getLogger("organelle.routing")

MIRROR_META = "organelle-mirror"
"""The meta key a shadow copy carries (``True``): a handler can skip side effects."""

_SAMPLES = 2048  # latencies kept per side for p50 / p99
_TWO_64 = float(1 << 64)
_perf = time.perf_counter
_monotonic = time.monotonic
_hashlib: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteStats:
    """One side of routed calls to a module: a version as ``primary`` or ``mirror``.

    Attributes:
        calls: calls sent (finished or not).
        errors: calls that raised, by error code.
        dropped: shadow copies not sent because ``max_in_flight`` were running.
        p50_s, p99_s: latency of the last finished calls (``None`` before any).
    """

    module: str
    version: str
    role: str
    calls: int
    errors: Mapping[str, int]
    dropped: int
    p50_s: float | None
    p99_s: float | None


class _Side:
    __slots__ = ("calls", "dropped", "errors", "samples")

    def __init__(self) -> None:
        self.calls = 0
        self.dropped = 0
        self.errors: dict[str, int] = {}
        self.samples: deque[float] = deque(maxlen=_SAMPLES)


@dataclass(slots=True)
class _RoutePlan:
    """A table applied to one view of the served versions (rebuilt when the view changes)."""

    served: Mapping[str, str]
    rules: list[list[str]]
    groups: list[list[str]]
    cumulative: list[float]
    mirror: list[str]


class Routing:
    """The routing step of one kernel's remote calls (see the module docstring).

    Args:
        transport: the router's transport now (it is made anew at each start).
        accepts: for a module, whether a version satisfies every local ``requires``.
        call_timeout_s: the default deadline, for shadow copies of calls without one.
    """

    def __init__(
        self,
        transport: Callable[[], Transport],
        accepts: Callable[[str, str], bool],
        call_timeout_s: Callable[[], float],
    ) -> None:
        self._transport = transport
        self._accepts = accepts
        self._call_timeout_s = call_timeout_s
        self.tables: dict[str, RouteTable] = {}
        self.active = False
        self._plans: dict[str, _RoutePlan] = {}
        # pick_node: per module, the registry view and its nodes in an accepted version.
        self._accepted: dict[str, tuple[Mapping[str, str], list[str]]] = {}
        self._turn = itertools.count()
        self._sides: dict[tuple[str, str, str], _Side] = {}
        self._mirrors: set[asyncio.Task[None]] = set()

    def configure(self, tables: Mapping[str, RouteTable]) -> None:
        """Replace the tables (at start and on a config reload); new calls follow at once.

        ``active`` (a plain attribute: ``Router.send`` reads it on every remote
        call) says whether any table is set; without one this step is skipped.
        """
        self.tables = dict(tables)
        self.active = bool(self.tables)
        self._plans.clear()

    def forget(self) -> None:
        """Local modules changed (their ``requires`` too): rebuild plans on the next call."""
        self._plans.clear()
        self._accepted.clear()

    # -- choosing ------------------------------------------------------------------------
    def pick(
        self, target: str, params: Mapping[str, Any], ctx: Context, avoid: Collection[str] = ()
    ) -> str | None:
        """The node a call goes to, or ``None`` for the queue group (no table, nothing avoided).

        ``avoid`` are nodes not to pick (say, those whose circuit breaker is open).

        Raises:
            UnavailableError: no node serves the module in a version the table
                and the local ``requires`` allow, outside ``avoid``.
        """
        module = target.partition(".")[0]
        table = self.tables.get(module)
        if table is None:
            if not avoid:
                return None
            return self._pick_without_table(module, avoid)
        plan = self._plan(module, table) if not avoid else self._build(module, table, avoid)
        if not plan.served:
            # The registry lists nobody (not read yet, or heartbeats late): it is
            # advisory, so the queue group decides, as without a table.
            return None
        for rule, nodes in zip(table.rules, plan.rules, strict=True):
            if nodes and _matches(rule, params, ctx):
                return nodes[next(self._turn) % len(nodes)]
        if not plan.groups:
            raise UnavailableError(
                f"no node serves {module!r} in a version routing allows",
                details={"module": module, "versions": dict(plan.served), "avoid": sorted(avoid)},
            )
        total = plan.cumulative[-1]
        point = _point(table.sticky, params, ctx) * total
        for group, upto in zip(plan.groups, plan.cumulative, strict=True):
            if point < upto:
                return group[next(self._turn) % len(group)]
        group = plan.groups[-1]
        return group[next(self._turn) % len(group)]

    def _pick_without_table(self, module: str, avoid: Collection[str]) -> str | None:
        served = self._transport().versions(module)
        if not any(n in avoid for n in served):
            return None
        nodes = [n for n, v in served.items() if n not in avoid and self._accepts(module, v)]
        if not nodes:
            raise UnavailableError(
                f"every node serving {module!r} is avoided",
                details={"module": module, "avoid": sorted(avoid)},
            )
        return nodes[next(self._turn) % len(nodes)]

    def _plan(self, module: str, table: RouteTable) -> _RoutePlan:
        served = self._transport().versions(module)
        plan = self._plans.get(module)
        if plan is None or plan.served is not served:
            plan = self._plans[module] = self._build(module, table, (), served)
        return plan

    def _build(
        self,
        module: str,
        table: RouteTable,
        avoid: Collection[str],
        served: Mapping[str, str] | None = None,
    ) -> _RoutePlan:
        if served is None:
            served = self._transport().versions(module)
        ok = {
            n: v for n, v in sorted(served.items()) if n not in avoid and self._accepts(module, v)
        }
        mirror = table.mirror
        rules = [[n for n, v in ok.items() if r.version.matches(v)] for r in table.rules]
        if table.weights:
            weighted = [([n for n, v in ok.items() if s.matches(v)], w) for s, w in table.weights]
        else:  # spread over every version but the one being mirrored to
            rest = [n for n, v in ok.items() if mirror is None or not mirror.version.matches(v)]
            weighted = [(rest, 1.0)]
        groups, cumulative, total = [], [], 0.0
        for nodes, weight in weighted:
            if nodes and weight > 0:
                total += weight
                groups.append(nodes)
                cumulative.append(total)
        shadows = []
        if mirror is not None:
            shadows = [n for n, v in sorted(served.items()) if mirror.version.matches(v)]
        return _RoutePlan(served, rules, groups, cumulative, shadows)

    # -- sending -------------------------------------------------------------------------
    def pick_node(
        self, target: str, params: Mapping[str, Any], ctx: Context, avoid: Collection[str] = ()
    ) -> str | None:
        """Like ``pick``, but a node whenever the registry lists one (caller-side balancing).

        For a call whose outcome must be told to one node's circuit breaker:
        the node is known before the call goes out, success or not.
        """
        module = target.partition(".")[0]
        if module in self.tables:
            return self.pick(target, params, ctx, avoid)
        served = self._transport().versions(module)
        known = self._accepted.get(module)
        if known is None or known[0] is not served:  # a new registry view: filter it once
            known = (served, [n for n, v in served.items() if self._accepts(module, v)])
            self._accepted[module] = known
        nodes = [n for n in known[1] if n not in avoid] if avoid else known[1]
        if nodes:
            return nodes[next(self._turn) % len(nodes)]
        if any(n in avoid for n in served):
            raise UnavailableError(
                f"every node serving {module!r} is avoided",
                details={"module": module, "avoid": sorted(avoid)},
            )
        return None  # the registry lists nobody: the queue group decides

    async def send(
        self,
        target: str,
        params: dict[str, Any],
        ctx: Context,
        avoid: Collection[str] = (),
        node: str | None = None,
    ) -> Any:
        """Route one call: pick a node (maybe none: the queue group), mirror it, send it.

        A call the picked node never received (it stopped serving since the
        registry was read) is routed once more without that node. A ``node``
        given by the caller is called as is (its policy picked it, and decides
        about a call it did not receive).
        """
        chosen = node is not None
        if node is None:
            node = self.pick(target, params, ctx, avoid)
            if node is None:
                return await self._transport().request(target, params, ctx)
        module = target.partition(".")[0]
        table = self.tables.get(module)
        if table is None:
            if chosen:  # a policy's per-node call with no weights to count: one frame less
                return await self.send_to(node, target, params, ctx)
        elif table.mirror is not None:
            self._mirror(table, target, params, ctx)
        if chosen:
            return await self._timed(
                node, target, params, ctx, role="primary", count=table is not None
            )
        try:
            return await self._timed(
                node, target, params, ctx, role="primary", count=table is not None
            )
        except UnavailableError as exc:
            if exc.details.get("delivered") is not False:
                raise
        node = self.pick(target, params, ctx, {*avoid, node})
        if node is None:
            return await self._transport().request(target, params, ctx)
        return await self._timed(node, target, params, ctx, role="primary", count=table is not None)

    async def send_to(self, node: str, target: str, params: dict[str, Any], ctx: Context) -> Any:
        """Send a call to one node; every error it raises names it in ``OrganelleError.node``."""
        try:
            return await self._transport().request(target, params, ctx, node)
        except OrganelleError as exc:
            if exc.node is None:  # the transport's own (a timeout): about that node too
                exc.node = node
            raise

    async def _timed(
        self,
        node: str,
        target: str,
        params: dict[str, Any],
        ctx: Context,
        *,
        role: str,
        count: bool,
    ) -> Any:
        if not count:
            return await self.send_to(node, target, params, ctx)
        module = target.partition(".")[0]
        side = self._side(module, self._transport().versions(module).get(node, "?"), role)
        side.calls += 1
        began = _perf()
        try:
            result = await self.send_to(node, target, params, ctx)
        except BaseException as exc:
            code = _code(exc)
            side.errors[code] = side.errors.get(code, 0) + 1
            side.samples.append(_perf() - began)
            raise
        side.samples.append(_perf() - began)
        return result

    def _mirror(self, table: RouteTable, target: str, params: dict[str, Any], ctx: Context) -> None:
        mirror = table.mirror
        assert mirror is not None  # noqa: S101 - the caller checked
        if random.random() * 100 >= mirror.percent:  # noqa: S311 - a share, not a secret
            return
        nodes = self._plan(table.module, table).mirror
        if not nodes:
            return
        node = nodes[next(self._turn) % len(nodes)]
        if len(self._mirrors) >= mirror.max_in_flight:
            version = self._transport().versions(table.module).get(node, "?")
            self._side(table.module, version, "mirror").dropped += 1
            return
        deadline = ctx.deadline or _monotonic() + self._call_timeout_s()
        shadow = ctx.child(deadline, meta={MIRROR_META: True})
        task = asyncio.get_running_loop().create_task(
            self._shadow(node, target, dict(params), shadow)
        )
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _shadow(self, node: str, target: str, params: dict[str, Any], ctx: Context) -> None:
        try:
            await self._timed(node, target, params, ctx, role="mirror", count=True)
        except Exception as exc:  # counted; a shadow never fails anything
            log.debug("shadow call to %s on %s failed: %s", target, node, exc)

    async def close(self) -> None:
        """Cancel shadow copies still running (the transport is closing)."""
        tasks, self._mirrors = set(self._mirrors), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    # -- stats ---------------------------------------------------------------------------
    def _side(self, module: str, version: str, role: str) -> _Side:
        key = (module, version, role)
        side = self._sides.get(key)
        if side is None:
            side = self._sides[key] = _Side()
        return side

    def stats(self) -> list[RouteStats]:
        """Every side of routed calls so far, by module, version and role."""
        out = []
        for (module, version, role), side in sorted(self._sides.items()):
            ordered = sorted(side.samples)
            out.append(
                RouteStats(
                    module=module,
                    version=version,
                    role=role,
                    calls=side.calls,
                    errors=dict(side.errors),
                    dropped=side.dropped,
                    p50_s=_quantile(ordered, 0.50),
                    p99_s=_quantile(ordered, 0.99),
                )
            )
        return out


def _code(exc: BaseException) -> str:
    if isinstance(exc, OrganelleError):
        return exc.code
    return InternalError.code if isinstance(exc, Exception) else "cancelled"


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _principal_id(principal: Any) -> str | None:
    if principal is None or isinstance(principal, str):
        return principal
    pid = principal.get("id") if isinstance(principal, Mapping) else getattr(principal, "id", None)
    return None if pid is None else str(pid)


def _roles(principal: Any) -> set[str]:
    if principal is None or isinstance(principal, str):
        return set()
    raw = principal.get("roles") if isinstance(principal, Mapping) else None
    if raw is None:
        raw = getattr(principal, "roles", ())
    return {str(r) for r in raw or ()}


def _matches(rule: RouteRule, params: Mapping[str, Any], ctx: Context) -> bool:
    for kind, name, accepted in rule.criteria:
        if kind == "principal":
            value = _principal_id(ctx.principal)
            if value is None or value not in accepted:
                return False
        elif kind == "role":
            if not accepted & _roles(ctx.principal):
                return False
        else:
            source = params if kind == "param" else ctx.meta
            if name not in source or criterion_text(source[name]) not in accepted:
                return False
    return True


def _point(sticky: tuple[str, str] | None, params: Mapping[str, Any], ctx: Context) -> float:
    """Where a call lands in ``[0, 1)``: the hash of its sticky key, else at random."""
    key: str | None = None
    if sticky is not None:
        kind, name = sticky
        if kind == "principal":
            key = _principal_id(ctx.principal)
        else:
            source = params if kind == "param" else ctx.meta
            if name in source:
                key = criterion_text(source[name])
    if key is None:
        return random.random()  # noqa: S311 - a share, not a secret
    global _hashlib  # noqa: PLW0603 - loaded on first sticky call, off the import path
    if _hashlib is None:
        import hashlib

        _hashlib = hashlib
    digest = _hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_64
