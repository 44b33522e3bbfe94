"""A module with flags for the ``organelle flags`` tests."""

from __future__ import annotations

from pydantic import BaseModel

from organelle import Module


class Shop(Module):
    name = "shop"

    class Flags(BaseModel):
        new_checkout: bool = False
        discount_pct: int = 0
