"""RPC routes: what the call path reads of one method, and the counters it keeps.

``RpcEntry`` is the unit the router binds and the call path (Python or C)
looks up by ``"module.method"``; its C base (``speedups.RouteBase``) holds the
fields the compiled path reads without a dictionary lookup.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from organelle._native import speedups
from organelle.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from organelle.auth.base import Authorizer
    from organelle.kernel._dispatch import Invocation
    from organelle.kernel._policy import Guard
    from organelle.kernel._slots import Slot
    from organelle.module._signature import ParamsContract

__all__ = ["CallStats", "RpcEntry"]


if TYPE_CHECKING or speedups is None:

    class _StatsBase:
        """The call counter (a C integer the compiled call path bumps, when built)."""

        __slots__ = ("calls",)

        calls: int

else:
    _StatsBase = speedups.StatsBase


class CallStats(_StatsBase):
    """Counters of one RPC method, kept by the kernel itself while a listener asks for them.

    Every call is counted; only calls whose handler suspends are timed (a
    handler that finishes in its first step takes about a microsecond, below
    the first histogram bucket), so a call that does not suspend pays one
    increment and no clock reads — in C, a plain integer increment.
    """

    __slots__ = ("bounds", "counts", "errors", "pending", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.calls = 0
        self.counts = [0] * (len(bounds) + 1)  # suspended calls per bucket; the last is +Inf
        self.sum = 0.0
        self.pending = 0  # suspended now, not yet timed
        self.errors: dict[str, int] = {}

    def timed(self, seconds: float) -> None:
        """Record a call that suspended and took ``seconds``."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def error(self, code: str) -> None:
        """Count a call that raised an error with ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1


if TYPE_CHECKING or speedups is None:

    class _RouteBase:
        """The fields the call path reads (in C when the extension is built)."""

        __slots__ = (
            "checks",
            "contract",
            "exact",
            "fn",
            "inline_policy",
            "nrequired",
            "policy",
            "slow",
            "stats",
            "target",
        )

        fn: Any
        contract: ParamsContract | None
        exact: Callable[[dict[str, Any]], bool] | None
        stats: CallStats | None
        checks: tuple[tuple[str, type | None, bool, bool], ...] | None
        target: str
        nrequired: int
        slow: bool
        policy: Guard | None
        inline_policy: bool

else:
    _RouteBase = speedups.RouteBase


class RpcEntry(_RouteBase):
    """A routable RPC method: the bound handler and everything checked before it runs."""

    __slots__ = ("guard", "module", "policied", "timeout_s")

    def __init__(self, slot: Slot, method: str, validate: bool, authorizer: Authorizer) -> None:
        meta = slot.spec.rpcs[method]
        self.fn = getattr(slot.instance, meta.attr)
        self.contract = meta.contract if (validate and meta.spec.validate) else None
        # The generated check that params already have exactly the declared simple types.
        self.exact = None if self.contract is None else self.contract.fast
        self.checks = None if self.contract is None else self.contract.checks
        self.nrequired = sum(1 for c in self.checks or () if c[3])
        self.module = slot.name
        self.target = f"{slot.name}.{method}"
        self.timeout_s = meta.spec.timeout_s
        self.guard = authorizer.guard_for(self.target, meta.spec.roles, meta.spec.permissions)
        self.stats: CallStats | None = None
        self.policied = False  # a call policy may apply (set by the router)
        self.policy = None  # the policy of calls naming no caller (the C path runs it too)
        # A policy may run on the inline call path: nothing else makes this route slow.
        self.inline_policy = self.timeout_s is None and self.guard is None
        # Anything beyond a plain call takes _invoke, keeping the inline path lean.
        self.slow = self.timeout_s is not None or self.guard is not None

    def mark_policy(self, policied: bool, guard: Guard | None = None) -> None:
        """Whether some caller's calls to this method run under a policy (they leave the C path).

        ``guard``: the policy of calls that name no caller, kept here so the
        inline path finds it without a lookup.
        """
        self.policied = policied
        self.policy = guard
        self.slow = policied or self.timeout_s is not None or self.guard is not None

    def bad_params(self, exc: TypeError) -> ValidationError:
        """The error for params that do not bind to an unvalidated handler."""
        return ValidationError(
            f"invalid parameters for {self.target}: {exc}",
            errors=[{"field": "$", "message": str(exc)}],
        )

    def start(self, params: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """Validate ``params`` and create (not start) the handler's coroutine."""
        contract = self.contract
        if contract is None:
            try:
                return self.fn(**params)  # type: ignore[no-any-return]
            except TypeError as exc:  # binding failed: the coroutine never started
                raise self.bad_params(exc) from None
        args = contract.validate(params)
        return self.fn(*args) if isinstance(args, tuple) else self.fn(**args)  # type: ignore[no-any-return]

    def invoke(self, inv: Invocation) -> Coroutine[Any, Any, Any]:
        """The innermost step of the middleware chain."""
        return self.start(inv.params or {})
