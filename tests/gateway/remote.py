"""A module that runs on another node than the gateway (``route_modules`` names it here)."""

from __future__ import annotations

from typing import Any

from organelle import ForbiddenError, Module, ValidationError, context, rpc
from organelle.gateway import route


def _who() -> dict[str, Any]:
    principal = context().principal
    if principal is None:
        return {"id": None, "roles": []}
    return {"id": principal.id, "roles": sorted(principal.roles)}


class Ledger(Module):
    """Balances, a guarded route and errors raised on the far side of the hop."""

    name = "ledger"
    version = "1.0.0"

    async def on_start(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @route.get("/ledger/{account}")
    async def balance(self, account: str, currency: str = "EUR") -> dict[str, Any]:
        """One account's balance."""
        return {"account": account, "balance": 42, "currency": currency}

    @route.post("/ledger/{account}/withdraw")
    async def withdraw(self, account: str, amount: int) -> dict[str, Any]:
        """Refuses large and non-positive amounts with organelle errors."""
        if amount > 100:
            raise ForbiddenError(f"{account}: {amount} is over the limit")
        if amount <= 0:
            raise ValidationError(
                "amount must be positive",
                errors=[{"field": "amount", "message": "must be positive"}],
            )
        return {"account": account, "balance": 42 - amount}

    @route.get("/audit", roles=["admin"])
    async def audit(self) -> dict[str, Any]:
        """Admins only: the role check runs on this (the serving) node."""
        who = _who()
        self.seen.append(who)
        return who

    @rpc
    async def add(self, a: int, b: int) -> int:
        """Served over HTTP through ``expose``."""
        return a + b

    @rpc
    async def whoami(self) -> dict[str, Any]:
        """The principal as the remote handler sees it."""
        return _who()
