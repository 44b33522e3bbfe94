"""Feature flags as the dashboard shows them: every module's flags with value and rules.

Read through ``kernel.flags`` (one ``get_many`` on the cluster store); an app
without flags answers ``enabled: false``. Changes go through the actions
(``flags/set``, ``flags/rules``, ``flags/reset``), which ``FlagAdmin`` audits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from organelle.kernel import Kernel

__all__ = ["flags_summary"]


async def flags_summary(kernel: Kernel) -> dict[str, Any]:
    """``/api/flags``: ``{"enabled", "flags": [FlagInfo.to_data(), ...]}``."""
    admin = kernel.flags
    found = await admin.list()
    return {"enabled": bool(found), "flags": [f.to_data() for f in found]}
