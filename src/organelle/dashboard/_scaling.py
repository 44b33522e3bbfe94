"""The scaling controller's recent decisions, for the dashboard's Scaling view.

Asked of the ``scaling`` module through RPC, so the view works on any node of
the cluster, wherever the controller (one leader) runs. Without a controller
the view says so rather than failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.errors import NotFoundError, TransportError

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["MAX_DECISIONS", "scaling_summary"]

MAX_DECISIONS = 100


async def scaling_summary(kernel: Kernel) -> dict[str, Any]:
    """``/api/scaling``: the latest decisions, newest first, changes flagged."""
    try:
        found: list[dict[str, Any]] = await kernel.call("scaling.decisions", limit=MAX_DECISIONS)
    except NotFoundError:
        return {"enabled": False, "decisions": [], "error": None}
    except TransportError as exc:
        return {"enabled": True, "decisions": [], "error": f"{type(exc).__name__}: {exc}"}
    decisions = [{**d, "changed": d["desired"] != d["current"]} for d in reversed(found)]
    return {"enabled": True, "decisions": decisions, "error": None}
