"""Flags in a running kernel: declared, changed through ``kernel.flags``, read per principal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from organelle import Kernel, Module, rpc
from organelle.auth.base import Principal
from organelle.errors import DefinitionError, FlagNotFoundError, FlagRuleError
from organelle.flags import UNSET, FlagSet, flag_key
from organelle.testing import capture, eventually, running

pytestmark = pytest.mark.timeout(30)


class Shop(Module):
    name = "shop"

    class Flags(BaseModel):
        new_checkout: bool = False
        discount_pct: int = Field(default=0, ge=0, le=90)
        theme: Literal["light", "dark"] = "light"

    seen_at_start: Any = None

    async def on_start(self) -> None:
        self.seen_at_start = self.flags.discount_pct

    @rpc
    async def checkout(self) -> bool:
        return bool(self.flags.new_checkout)


class Plain(Module):
    name = "plain"


def beta(pid: str = "u1") -> Principal:
    return Principal(id=pid, roles=frozenset({"beta"}))


async def test_flags_read_as_their_defaults_and_only_declaring_modules_get_a_set() -> None:
    async with running(Shop, Plain, config={"kernel": {"storage": "memory://"}}) as kernel:
        shop = kernel.module("shop")
        assert isinstance(shop.flags, FlagSet)
        flags: Any = shop.flags  # what a module sees: its Flags model's attributes
        assert (flags.new_checkout, flags.discount_pct, flags.theme) == (
            False,
            0,
            "light",
        )
        assert "new_checkout" in vars(flags)  # no rules: a plain attribute read
        assert not hasattr(kernel.module("plain"), "flags")
        with pytest.raises(AttributeError, match="nope"):
            _ = flags.nope
        with pytest.raises(FlagNotFoundError):
            flags.value("nope")


def test_a_bad_flags_model_is_refused_at_registration() -> None:
    class NotAModel(Module):
        name = "bad1"

        class Flags:
            on: bool = False

    class NoDefault(Module):
        name = "bad2"

        class Flags(BaseModel):
            on: bool

    class Clash(Module):
        name = "bad3"

        class Flags(BaseModel):
            value: int = 0

    for cls, message in (
        (NotAModel, "BaseModel"),
        (NoDefault, "needs a default"),
        (Clash, "value"),
    ):
        with pytest.raises(DefinitionError, match=message):
            Kernel([cls])


async def test_a_change_is_validated_applied_and_audited() -> None:
    async with running(Shop, config={"kernel": {"storage": "memory://"}}) as kernel:
        events = capture(kernel, "kernel.flags.changed")
        shop = kernel.module("shop")
        record = await kernel.flags.set("shop.discount_pct", "15", by="ann")
        assert record.value == 15  # coerced to the flag's type before it is stored
        await eventually(lambda: _equal(shop.flags.discount_pct, want=15), timeout_s=2)
        await eventually(lambda: _equal(len(events), want=1), timeout_s=2)
        topic, payload = events[0]
        assert topic == "kernel.flags.changed"
        assert payload["module"] == "shop"
        assert payload["flag"] == "discount_pct"
        assert payload["by"] == "ann"
        assert payload["old"] == {"rules": []}
        assert payload["new"] == {"value": 15, "rules": []}
        await kernel.flags.set("shop.discount_pct", 20)
        await eventually(lambda: _equal(len(events), want=2), timeout_s=2)
        assert events[1][1]["old"] == {"value": 15, "rules": []}
        assert events[1][1]["by"].startswith("node:")  # no one named: the node
        for target, value, error in (
            ("shop.discount_pct", 95, FlagRuleError),  # above le=90
            ("shop.theme", "blue", FlagRuleError),
            ("shop.nope", 1, FlagNotFoundError),
            ("cart.x", 1, FlagNotFoundError),
            ("shop", 1, FlagNotFoundError),
        ):
            with pytest.raises(error):
                await kernel.flags.set(target, value)
        with pytest.raises(FlagRuleError, match="percent"):
            await kernel.flags.rule("shop.new_checkout", [{"value": True, "percent": 200}])
        with pytest.raises(FlagRuleError):
            await kernel.flags.rule("shop.discount_pct", [{"value": "lots", "roles": ["beta"]}])
        assert shop.flags.discount_pct == 20  # refused changes changed nothing


async def test_rules_are_matched_against_the_callers_principal() -> None:
    async with running(Shop, config={"kernel": {"storage": "memory://"}}) as kernel:
        shop = kernel.module("shop")
        await kernel.flags.rule("shop.new_checkout", [{"value": True, "roles": ["beta"]}])
        await eventually(
            lambda: _equal(shop.flags.value("new_checkout", principal=beta()), want=True)
        )
        assert await kernel.call_with("shop.checkout", principal=beta()) is True
        assert await kernel.call_with("shop.checkout", principal=Principal(id="u2")) is False
        assert await kernel.call("shop.checkout") is False  # anonymous
        assert shop.flags.new_checkout is False  # outside any request: no principal
        assert "new_checkout" not in vars(shop.flags)  # ruled: evaluated on read
        # Rules stack in order; the first match wins; a later rule covers the rest.
        await kernel.flags.rule("shop.new_checkout", [{"value": True, "ids": ["u9"]}])
        await kernel.flags.set("shop.new_checkout", value=True)
        await kernel.flags.rule(
            "shop.new_checkout", [{"value": False, "roles": ["beta"]}], replace=True
        )
        await eventually(
            lambda: _equal(shop.flags.value("new_checkout", principal=beta()), want=False)
        )
        assert shop.flags.value("new_checkout", principal=Principal(id="u2")) is True
        assert await kernel.call_with("shop.checkout", principal=beta()) is False
        listed = {f.name: f for f in await kernel.flags.list("shop")}
        assert listed["new_checkout"].value is True
        assert listed["new_checkout"].rules == ({"value": False, "roles": ["beta"]},)
        assert listed["theme"].value is UNSET
        assert listed["theme"].effective == "light"
        await kernel.flags.reset("shop.new_checkout")
        await eventually(lambda: _equal("new_checkout" in vars(shop.flags), want=True))
        assert shop.flags.value("new_checkout", principal=Principal(id="u2")) is False
        with pytest.raises(FlagNotFoundError):
            await kernel.flags.list("cart")


async def test_stored_flags_are_read_before_modules_start(tmp_path: Path) -> None:
    config = {"kernel": {"storage": f"sqlite:///{tmp_path / 'app.db'}"}}
    async with running(Shop, config=config) as kernel:
        await kernel.flags.set("shop.discount_pct", 30)
    async with running(Shop, config=config) as kernel:
        shop = kernel.module("shop")
        assert isinstance(shop, Shop)
        assert shop.seen_at_start == 30


async def test_a_stored_value_that_does_not_fit_keeps_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(Shop, config={"kernel": {"storage": "memory://"}}) as kernel:
        shop = kernel.module("shop")
        with caplog.at_level(logging.WARNING, logger="organelle.flags"):
            # Written by another version of the module, where the flag was a string.
            await kernel.store.put(flag_key("shop", "discount_pct"), {"value": "high", "rules": []})
            await kernel.store.put(flag_key("shop", "theme"), ["not", "a", "record"])
            await kernel.store.incr("_flags._rev")
            await eventually(lambda: _contains(caplog.text, "theme"), timeout_s=2)
        assert "discount_pct ignored" in caplog.text
        assert shop.flags.discount_pct == 0
        assert shop.flags.theme == "light"


def _equal(got: object, *, want: object) -> None:
    assert got == want


def _contains(text: str, part: str) -> None:
    assert part in text
