from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from organelle.errors import ValidationError
from organelle.storage import MemoryStore, SqliteStore, StateChange, StateEngine
from organelle.storage.state import matches

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    ("pattern", "key", "ok"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b", "x.b", True),
        (">", "x", True),
        ("a.b", "a.c", False),
    ],
)
def test_matches(pattern: str, key: str, ok: bool) -> None:
    assert matches(pattern.split("."), key.split(".")) is ok


async def test_get_set_subscribe_and_emit() -> None:
    emitted: list[tuple[str, Any]] = []

    async def emit(subject: str, payload: Any) -> None:
        emitted.append((subject, payload))

    state = StateEngine(emit=emit)
    prices = state.subscribe("feeds.*.price")
    everything = state.subscribe()
    await state.set("feeds.btc.price", 100)
    await state.set("feeds.btc.volume", 5)
    await state.set("feeds.btc.price", 101)
    assert state.get("feeds.btc.price") == 101
    assert state.get("nope", 0) == 0
    got = [await asyncio.wait_for(anext(prices), 1) for _ in range(2)]
    assert got == [
        StateChange(key="feeds.btc.price", value=100, old=None),
        StateChange(key="feeds.btc.price", value=101, old=100),
    ]
    assert [c.key for c in [await anext(everything) for _ in range(3)]] == [
        "feeds.btc.price",
        "feeds.btc.volume",
        "feeds.btc.price",
    ]
    assert emitted[0] == (
        "state.changed.feeds.btc.price",
        {"key": "feeds.btc.price", "value": 100, "old": None, "deleted": False},
    )
    assert await state.delete("feeds.btc.volume") is True
    assert await state.delete("feeds.btc.volume") is False
    assert state.snapshot("feeds.>") == {"feeds.btc.price": 101}
    await prices.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(prices)
    await state.close()


async def test_persistence_and_load(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "state.db"))
    state = StateEngine(store.namespace("state"))
    await state.set("orders.pending", 3)
    await state.set("orders.done", [1, 2])
    await state.delete("orders.done")
    await store.close()

    store = SqliteStore(str(tmp_path / "state.db"))
    restored = StateEngine(store.namespace("state"))
    assert await restored.load() == 1
    assert restored.get("orders.pending") == 3
    await store.close()


async def test_bad_keys_and_failed_persist_change_nothing() -> None:
    state = StateEngine(MemoryStore())
    for key in ["", "a..b", "a.*", "a.>", " "]:
        with pytest.raises(ValidationError):
            await state.set(key, 1)
    for pattern in ["a.>.b", "a*", ""]:
        with pytest.raises(ValidationError):
            state.subscribe(pattern)
    with pytest.raises(ValidationError):
        await state.set("k", object())  # the store cannot encode it
    assert state.get("k") is None


async def test_emit_failure_does_not_undo_the_change() -> None:
    async def broken(_subject: str, _payload: Any) -> None:
        raise RuntimeError("bus down")

    state = StateEngine(emit=broken)
    await state.set("a", 1)
    assert state.get("a") == 1
