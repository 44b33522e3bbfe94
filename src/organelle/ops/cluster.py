"""``Cluster``: the management operations of any node, from any kernel on the same transport.

Every clustered node serves the ``ops`` module; the registry says which
nodes do. ``call`` sends one operation to one node by name (the broker's queue
group would pick any), ``each`` sends it to every node at once and keeps each
node's answer or error apart, so one node down does not hide the others. The
CLI is such a kernel: a client node with no module of its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from organelle.auth.base import Principal
from organelle.context import root_context
from organelle.errors import CallTimeoutError, NotFoundError, OrganelleError
from organelle.ops._manage_rpc import OPS_ROLE
from organelle.ops.manage import MODULE_NAME

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["Cluster", "NodeResult"]

NodeResult = dict[str, Any]
"""``{"node", "ok": True, "result"}`` or ``{"node", "ok": False, "error": <the wire error>}``."""


class Cluster:
    """Management calls from ``kernel`` to the nodes serving the ``ops`` module.

    Args:
        kernel: a started kernel on the cluster's transport.
        principal: who acts (needs the ``ops`` role; default: ``operator``).
        timeout_s: the deadline of each call.
    """

    def __init__(
        self, kernel: Kernel, *, principal: Principal | None = None, timeout_s: float = 10.0
    ) -> None:
        self.kernel = kernel
        self.principal = principal or Principal(
            id="operator", type="service", roles=frozenset({OPS_ROLE})
        )
        self.timeout_s = timeout_s

    def nodes(self) -> list[str]:
        """The nodes that serve management calls now, by name."""
        return sorted(self.kernel.transport.versions(MODULE_NAME))

    async def wait(self, timeout_s: float = 5.0) -> list[str]:
        """Wait until at least one node serves management calls; return the nodes.

        Raises:
            CallTimeoutError: none did within ``timeout_s``.
        """
        try:
            await self.kernel.wait_for(MODULE_NAME, timeout_s)
        except CallTimeoutError as exc:
            raise CallTimeoutError(
                f"no node of the app answered within {timeout_s:g}s: is it running, on this "
                "transport and prefix, with [ops] manage on?",
                details=exc.details,
            ) from None
        return self.nodes()

    async def call(
        self, node: str, operation: str, /, *, principal: Principal | None = None, **params: Any
    ) -> Any:
        """Run ``operation`` (a ``Manage`` method) on ``node``; its errors are raised here.

        ``principal`` acts instead of the cluster's own (the HTTP API passes its caller's).

        Raises:
            NotFoundError: no node of that name serves management calls.
        """
        target = f"{MODULE_NAME}.{operation}"
        who = principal or self.principal
        if node == self.kernel.transport.node:
            return await self.kernel.call_with(
                target, params, timeout_s=self.timeout_s, principal=who
            )
        if node not in self.nodes():
            raise NotFoundError(
                f"no node named {node!r} serves management calls "
                f"(known: {', '.join(self.nodes()) or 'none'})",
                details={"node": node},
            )
        ctx = root_context(time.monotonic() + self.timeout_s, principal=who)
        return await self.kernel.transport.request(target, params, ctx, node)

    async def each(self, operation: str, **params: Any) -> list[NodeResult]:
        """Run ``operation`` on every node at once; one entry per node, in node order."""
        nodes = self.nodes()
        outcomes = await asyncio.gather(
            *(self.call(node, operation, **params) for node in nodes), return_exceptions=True
        )
        results: list[NodeResult] = []
        for node, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, OrganelleError):
                results.append({"node": node, "ok": False, "error": outcome.to_wire()})
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append({"node": node, "ok": True, "result": outcome})
        return results
