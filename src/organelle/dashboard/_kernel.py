"""What the kernel says about itself, copied into the dashboard's views.

Everything here reads the kernel's introspection API (``modules()``,
``subscriptions()``, ``call_stats``, ``config_dump()``) and is synchronous
and cheap: a poll every couple of seconds costs a few dict walks. The views
are a kernel listener only to ask for the lean call counters (``call_buckets``).
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from organelle._version import __version__
from organelle.config.secrets import mask, mask_url
from organelle.dashboard._nodes import this_node
from organelle.dashboard._quantile import quantile
from organelle.dashboard._views import (
    BreakerView,
    EventsView,
    ModulesView,
    ModuleView,
    Overview,
    RpcTable,
    RpcView,
    SubscriptionView,
)
from organelle.kernel import BaseListener

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.kernel._routes import CallStats

__all__ = ["BOUNDS_S", "KernelViews"]

# The same buckets as the Prometheus metrics, so both agree when both are on
# (whoever switches the kernel's call stats on first picks the buckets).
BOUNDS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
)  # fmt: skip


class KernelViews(BaseListener):
    """Builds the overview, modules, RPC, events and config views of one kernel.

    Creating it makes it a listener of the kernel asking for the call counters
    (``call_buckets``): from then on every RPC this node serves is counted, at
    the price of an increment per call, and timed when its handler suspends.
    """

    call_buckets: tuple[float, ...] | None = BOUNDS_S

    def __init__(self, kernel: Kernel, *, refresh_s: float) -> None:
        self.kernel = kernel
        self.refresh_s = refresh_s
        self._was_accepting = False
        self._host = socket.gethostname()
        kernel.listen(self)

    def _state(self) -> str:
        kernel = self.kernel
        if kernel.accepting:
            self._was_accepting = True
            return "serving"
        if not kernel.running:
            return "stopped"
        return "draining" if self._was_accepting else "starting"

    def overview(self) -> Overview:
        """``/api/overview``: node, uptime, whether it takes work, what it runs.

        Uptime counts from ``kernel.started_at`` (the end of ``Kernel.start()``),
        not from the gateway's start, so it is the node's; ``None`` until then.
        """
        kernel = self.kernel
        infos = kernel.modules().values()
        state = self._state()
        now = time.time()
        started = kernel.started_at
        return Overview(
            node=this_node(kernel),
            host=self._host,
            pid=os.getpid(),
            organelle=__version__,
            python=platform.python_version(),
            state=state,
            accepting=state == "serving",
            started_at=started,
            uptime_s=None if started is None else round(max(0.0, now - started), 3),
            now=now,
            transport=mask_url(kernel.settings.transport),
            storage=mask_url(kernel.settings.storage),
            modules=len(infos),
            modules_by_state=dict(Counter(i.state.value for i in infos)),
            rpc_methods=sum(len(i.rpc_methods) for i in infos),
            subscriptions=len(kernel.subscriptions()),
            refresh_s=self.refresh_s,
        )

    def modules(self) -> ModulesView:
        """``/api/modules``: every registered module, in registration order."""
        return ModulesView(
            modules=[
                ModuleView(
                    name=i.name,
                    version=i.version,
                    state=i.state.value,
                    requires=list(i.requires),
                    optional=list(i.optional),
                    rpc_methods=list(i.rpc_methods),
                    subscriptions=list(i.subscriptions),
                    error=i.error,
                )
                for i in self.kernel.modules().values()
            ]
        )

    def rpc(self) -> RpcTable:
        """``/api/rpc``: calls, errors by code and latency estimates per RPC method."""
        table = self.kernel.call_stats or {}
        bounds = next(iter(table.values())).bounds if table else BOUNDS_S
        policies = self.kernel.policy_stats()
        return RpcTable(
            bounds_s=list(bounds),
            methods=[_rpc_view(target, table[target]) for target in sorted(table)],
            breakers=[
                BreakerView(
                    key=key,
                    state=b["state"],
                    consecutive_failures=b["consecutive_failures"],
                    opened=b["changes"]["open"],
                    retry_after_s=round(b["retry_after_s"], 3),
                )
                for key, b in sorted(policies["breakers"].items())
            ],
            policy_counts={k: v for k, v in policies.items() if k != "breakers" and v},
        )

    def events(self) -> EventsView:
        """``/api/events``: each subscription's delivered / failed / skipped and last error."""
        return EventsView(
            subscriptions=[
                SubscriptionView(
                    module=s.module,
                    handler=s.handler,
                    pattern=s.pattern,
                    delivery=s.delivery,
                    priority=s.priority,
                    delivered=s.delivered,
                    failed=s.failed,
                    skipped=s.skipped,
                    duplicates=s.duplicates,
                    last_error=None if s.last_error is None else dict(s.last_error),
                )
                for s in self.kernel.subscriptions()
            ]
        )

    def config(self) -> dict[str, Any]:
        """``/api/config``: the effective config, secrets masked.

        ``config_dump()`` masks what the models mark secret; a second pass by
        key name also masks plain-string credentials a module's model did not
        mark (``secret``, ``password``, ``token``...): over-masking is safe.
        """
        dump: dict[str, Any] = mask(self.kernel.config_dump(), by_name=True)
        return dump


def _rpc_view(target: str, stats: CallStats) -> RpcView:
    counts = list(stats.counts)
    timed = sum(counts)
    p50 = quantile(0.5, stats.bounds, counts)
    p99 = quantile(0.99, stats.bounds, counts)
    return RpcView(
        target=target,
        module=target.partition(".")[0],
        calls=stats.calls,
        errors=sum(stats.errors.values()),
        error_codes=dict(stats.errors),
        in_flight=stats.pending,
        timed=timed,
        mean_ms=_ms(stats.sum / timed) if timed else None,
        p50_ms=None if p50 is None else _ms(p50),
        p99_ms=None if p99 is None else _ms(p99),
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
