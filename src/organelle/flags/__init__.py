"""Feature flags: typed per module, ruled by principal, stored in the cluster store.

A module declares its flags as a pydantic model, like its ``Config``::

    class Checkout(Module):
        name = "checkout"

        class Flags(BaseModel):
            new_flow: bool = False
            discount_pct: int = 0

        @rpc
        async def pay(self, order: str) -> str:
            if self.flags.new_flow:  # for the caller's principal, from the local cache
                ...

Flags are changed with ``kernel.flags`` (``FlagAdmin``), ``organelle flags``
or the dashboard; every node follows the store and reads from memory. See
``docs/flags.md``.
"""

from __future__ import annotations

from organelle.flags._admin import PREFIX, REV_KEY, FlagAdmin, FlagInfo, flag_key
from organelle.flags._cache import CHANGED, FlagCache
from organelle.flags._rules import UNSET, FlagRecord, Rule, bucket, parse_rule
from organelle.flags._set import FlagSet, check_value, flags_model

__all__ = [
    "CHANGED",
    "PREFIX",
    "REV_KEY",
    "UNSET",
    "FlagAdmin",
    "FlagCache",
    "FlagInfo",
    "FlagRecord",
    "FlagSet",
    "Rule",
    "bucket",
    "check_value",
    "flag_key",
    "flags_model",
    "parse_rule",
]
