"""The automation plugin in a real kernel: rules fire on events, hold to conditions, reload live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from organelle_automation import Automation, RuleStats

from organelle import Kernel, Module, event, job, on, rpc
from organelle.errors import ConfigError
from organelle.testing.plugins import check_plugin


@event("order.created")
class OrderCreated(msgspec.Struct):
    id: str
    total: float
    country: str


class Desk(Module):
    """What the rules reach: an RPC method, a job and a subscriber, each recording."""

    name = "desk"
    seen: ClassVar[list[tuple[str, Any]]] = []

    @rpc
    async def notify(self, to: str, order: str, total: float = 0.0) -> None:
        type(self).seen.append(("notify", {"to": to, "order": order, "total": total}))

    @rpc
    async def broken(self) -> None:
        raise RuntimeError("desk is closed")

    @job
    async def invoice(self, order: str) -> None:
        type(self).seen.append(("invoice", order))

    @on("audit.*")
    async def audit(self, payload: Any) -> None:
        type(self).seen.append(("audit", payload))


RULES: list[dict[str, Any]] = [
    {
        "name": "big-order",
        "on": "order.created",
        "when": "data.total > `100` && data.country == 'FR'",
        "call": "desk.notify",
        "params": {"to": "ops@example.com", "order": "=data.id", "total": "=data.total"},
    },
    {"name": "bill", "on": "order.*", "enqueue": "desk.invoice", "params": {"order": "=data.id"}},
    {"name": "trail", "on": "order.>", "emit": "audit.order", "params": {"what": "=topic"}},
]


def config(tmp_path: Path, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kernel": {"storage": "memory://", "jobs": f"sqlite:///{tmp_path}/jobs.db"},
        "modules": {"automation": {"rules": rules}},
    }


@pytest.fixture
async def kernel(tmp_path: Path) -> AsyncIterator[Kernel]:
    Desk.seen.clear()
    async with Kernel([Desk, Automation], config(tmp_path, RULES)) as k:
        yield k


async def settle(kernel: Kernel) -> None:
    await kernel.drain()
    await kernel.drain_jobs(timeout_s=10)
    await kernel.drain()


async def test_rules_call_enqueue_and_emit_when_their_condition_holds(kernel: Kernel) -> None:
    await kernel.emit(OrderCreated(id="o1", total=250.0, country="FR"))
    await kernel.emit(OrderCreated(id="o2", total=250.0, country="DE"))  # condition fails
    await kernel.emit("order.cancelled", {"id": "o3"})
    await settle(kernel)
    assert sorted(Desk.seen, key=str) == sorted(
        [
            ("notify", {"to": "ops@example.com", "order": "o1", "total": 250.0}),
            ("invoice", "o1"),
            ("invoice", "o2"),
            ("invoice", "o3"),
            ("audit", {"what": "order.created"}),
            ("audit", {"what": "order.created"}),
            ("audit", {"what": "order.cancelled"}),
        ],
        key=str,
    )
    stats = {s.name: s for s in await kernel.call("automation.rules")}
    assert isinstance(stats["big-order"], RuleStats)
    assert (stats["big-order"].matched, stats["big-order"].fired) == (1, 1)
    assert (stats["bill"].fired, stats["trail"].fired) == (3, 3)


async def test_a_reload_changes_the_rules_live_and_a_bad_one_is_refused(kernel: Kernel) -> None:
    rules = [
        {"name": "bill", "on": "order.created", "call": "desk.broken"},
        {
            "name": "new",
            "on": "order.created",
            "when": "data.total < `10`",
            "call": "desk.notify",
            "params": {"to": "small@example.com", "order": "=data.id"},
        },
    ]
    await kernel.reload_config({**kernel.config, "modules": {"automation": {"rules": rules}}})
    await kernel.emit(OrderCreated(id="o4", total=5.0, country="FR"))
    await settle(kernel)
    assert Desk.seen == [("notify", {"to": "small@example.com", "order": "o4", "total": 0.0})]
    stats = {s.name: s for s in await kernel.call("automation.rules")}
    assert sorted(stats) == ["bill", "new"]
    assert stats["bill"].failed == 1  # a failing action is counted, the other rules still run
    assert "desk is closed" in stats["bill"].last_error

    bad = [{"name": "x", "on": "order.created", "when": "data.total >", "call": "desk.notify"}]
    with pytest.raises(ConfigError, match="not a JMESPath expression"):
        await kernel.reload_config({**kernel.config, "modules": {"automation": {"rules": bad}}})
    assert sorted(s.name for s in await kernel.call("automation.rules")) == ["bill", "new"]


@pytest.mark.parametrize(
    ("rules", "allow", "message"),
    [
        ([{"name": "a", "on": "x", "call": "d.n", "emit": "y"}], [], "exactly one of"),
        ([{"name": "a", "on": "x..y", "emit": "y"}], [], "empty token"),
        ([{"name": "a", "on": "x", "call": "nodot"}], [], "'<module>.<name>'"),
        (
            [{"name": "a", "on": "x", "emit": "y"}, {"name": "a", "on": "z", "emit": "y"}],
            [],
            "two rules",
        ),
        ([{"name": "a", "on": "x", "call": "desk.broken"}], ["desk.notify"], "outside allow"),
        ([{"name": "a", "on": "x", "emit": "y", "unknown": 1}], [], "unknown"),
    ],
)
def test_bad_rules_refuse_the_load(
    tmp_path: Path, rules: list[dict[str, Any]], allow: list[str], message: str
) -> None:
    cfg = config(tmp_path, rules)
    cfg["modules"]["automation"]["allow"] = allow
    with pytest.raises(ConfigError, match=message):
        Kernel([Desk, Automation], cfg)


async def test_a_rule_loop_stops(tmp_path: Path) -> None:
    rules = [{"name": "echo", "on": "ping", "emit": "ping", "params": {"n": 1}}]
    async with Kernel([Automation], config(tmp_path, rules)) as k:
        await k.emit("ping", {"n": 0})
        await k.drain()
        stats = await k.call("automation.rules")
    assert stats[0].fired == 8  # MAX_HOPS, then it stops


async def test_the_plugin_keeps_to_its_manifest(tmp_path: Path) -> None:
    found = await check_plugin(Automation, config=config(tmp_path, RULES), modules=[Desk])
    assert found.manifest.subscribe == (">",)
    assert found.warnings == ()
