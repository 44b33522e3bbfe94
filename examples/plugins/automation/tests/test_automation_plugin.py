"""The automation plugin in a real kernel: rules fire on events, hold to conditions, reload live."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from organelle_automation import Automation, RuleStats
from organelle_notifications import Notifications

from organelle import Kernel, Module, event, job, on, rpc
from organelle.errors import ConfigError
from organelle.testing._process import free_port
from organelle.testing.plugins import check_plugin

PACKAGE = Path(__file__).resolve().parents[1]
DOCS = PACKAGE.parents[2] / "docs" / "plugins.md"


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

    @job
    async def echo(self, n: int) -> None:
        """A job that emits what sets its rule off again: a loop through the queue."""
        type(self).seen.append(("echo", n))
        await self.emit("ping", {"n": n + 1})

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


async def test_a_reload_shows_each_kept_rule_as_it_now_is_with_its_counts(kernel: Kernel) -> None:
    await kernel.emit("order.cancelled", {"id": "o1"})
    await settle(kernel)
    rules = [{"name": "bill", "on": "refund.*", "call": "desk.notify", "params": {"to": "x@y.z"}}]
    await kernel.reload_config({**kernel.config, "modules": {"automation": {"rules": rules}}})
    (bill,) = await kernel.call("automation.rules")
    assert (bill.name, bill.on, bill.action, bill.target) == (
        "bill",
        "refund.*",
        "call",
        "desk.notify",
    )
    assert (bill.matched, bill.fired) == (1, 1)  # counted under the old rule, kept by name


async def test_enqueue_options_are_the_rules_keys_not_its_params(tmp_path: Path) -> None:
    rules: list[dict[str, Any]] = [
        {
            "name": "later",
            "on": "order.created",
            "enqueue": "desk.invoice",
            "params": {"order": "=data.id"},
            "delay_s": 3600,
            "priority": 5,
        },
        {"name": "now", "on": "order.created", "enqueue": "desk.invoice", "params": {"order": "x"}},
    ]
    Desk.seen.clear()
    async with Kernel([Desk, Automation], config(tmp_path, rules)) as k:
        await k.emit("order.created", {"id": "o1"})
        await settle(k)
        stats = {s.name: s for s in await k.call("automation.rules")}
    assert Desk.seen == [("invoice", "x")]  # "later" is due in an hour
    assert (stats["later"].fired, stats["now"].fired) == (1, 1)


@pytest.mark.parametrize("option", ["delay_s", "at", "priority", "idempotency_key"])
def test_a_job_param_named_like_an_enqueue_option_is_refused(tmp_path: Path, option: str) -> None:
    # Such a param used to become the option (a silent delay, priority...); no @job has one.
    params = {"order": "=data.id", option: 5}
    rules = [{"name": "a", "on": "x", "enqueue": "desk.invoice", "params": params}]
    with pytest.raises(ConfigError, match=f"params.{option}: .*the rule's own"):
        Kernel([Desk, Automation], config(tmp_path, rules))


@pytest.mark.parametrize("option", ["delay_s", "priority"])
def test_enqueue_options_on_another_action_are_refused(tmp_path: Path, option: str) -> None:
    rules = [{"name": "a", "on": "x", "emit": "y", option: 5}]
    with pytest.raises(ConfigError, match="options of enqueue only"):
        Kernel([Desk, Automation], config(tmp_path, rules))


async def test_a_rule_loop_through_a_job_stops(tmp_path: Path) -> None:
    rules = [{"name": "loop", "on": "ping", "enqueue": "desk.echo", "params": {"n": "=data.n"}}]
    Desk.seen.clear()
    async with Kernel([Desk, Automation], config(tmp_path, rules)) as k:
        await k.emit("ping", {"n": 0})
        fired = -1
        for _ in range(30):  # a loop that never stops runs all 30 rounds and fails below
            await settle(k)
            (stats,) = await k.call("automation.rules")
            if stats.fired == fired:
                break
            fired = stats.fired
    assert fired == 8  # MAX_HOPS, counted across the jobs, then it stops
    assert Desk.seen == [("echo", n) for n in range(8)]


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


class Billing(Module):
    """The documented example's ``billing.invoice`` job."""

    name = "billing"
    invoiced: ClassVar[list[str]] = []

    @job
    async def invoice(self, order: str) -> None:
        type(self).invoiced.append(order)


class Inbox:
    """An aiosmtpd handler keeping each message's recipients and subject."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], str]] = []

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,  # noqa: ARG002
        session: Session,  # noqa: ARG002
        envelope: Envelope,
    ) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        subject = re.search(rb"^Subject: (.*)$", content, re.MULTILINE)
        assert subject is not None
        self.received.append((list(envelope.rcpt_tos), subject[1].decode().strip()))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def documented(path: Path) -> dict[str, Any]:
    """The ``[modules.automation]`` section of the TOML example in ``path``, as written."""
    for block in re.findall(r"```toml\n(.*?)```", path.read_text(), re.DOTALL):
        if "[[modules.automation.rules]]" in block:
            section: dict[str, Any] = tomllib.loads(block)["modules"]["automation"]
            return section
    raise AssertionError(f"no automation example in {path}")


@pytest.mark.parametrize("doc", [DOCS, PACKAGE / "README.md"], ids=["docs", "readme"])
async def test_the_documented_example_sends_mail_and_bills(
    tmp_path: Path, smtp: tuple[Inbox, int], doc: Path
) -> None:
    inbox, port = smtp
    notifications = {
        "sender": "shop@example.com",
        "smtp_port": port,
        "templates": {"big-order": {"subject": "Big order $id", "body": "$total EUR, $country"}},
    }
    cfg = config(tmp_path, [])
    cfg["modules"] = {"automation": documented(doc), "notifications": notifications}
    Billing.invoiced.clear()
    async with Kernel([Billing, Notifications, Automation], cfg) as k:
        await k.emit(OrderCreated(id="o1", total=250.0, country="FR"))
        await settle(k)
        stats = {s.name: s for s in await k.call("automation.rules")}
    assert {(s.fired, s.failed) for s in stats.values()} == {(1, 0)}, stats
    assert inbox.received == [(["ops@example.com"], "Big order o1")]
    assert Billing.invoiced == ["o1"]
