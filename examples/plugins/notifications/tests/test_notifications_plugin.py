"""The notifications plugin in a real kernel, sending to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from organelle_notifications import Message, Notifications

from organelle import Kernel
from organelle.errors import ConfigError, ValidationError
from organelle.testing import capture
from organelle.testing._process import free_port
from organelle.testing.plugins import check_plugin


class Inbox:
    """An aiosmtpd handler: keeps what it receives; answers ``failures`` with a reply first."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.failures: list[str] = []
        self.attempts = 0

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,  # noqa: ARG002
        session: Session,  # noqa: ARG002
        envelope: Envelope,
    ) -> str:
        self.attempts += 1
        if self.failures:
            return self.failures.pop(0)
        content = envelope.content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


TEMPLATES: dict[str, Any] = {
    "welcome": {"subject": "Welcome, $name", "body": "Hello $name,\nyour code is ${code}.\n"},
    "order": {
        "subject": "Order ${order.id} placed",
        "body": "Total: ${order.total} EUR (${topic})",
        "html": "<p>Total: <b>${order.total}</b></p>",
    },
}


def config(tmp_path: Path, port: int, **extra: Any) -> dict[str, Any]:
    section = {
        "sender": "shop@example.com",
        "smtp_port": port,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "templates": TEMPLATES,
        **extra,
    }
    return {
        "kernel": {"storage": "memory://", "jobs": f"sqlite:///{tmp_path}/jobs.db"},
        "modules": {"notifications": section},
    }


@pytest.fixture
async def kernel(tmp_path: Path, smtp: tuple[Inbox, int]) -> AsyncIterator[Kernel]:
    async with Kernel([Notifications], config(tmp_path, smtp[1])) as k:
        yield k


async def settle(kernel: Kernel) -> None:
    await kernel.drain()
    await kernel.drain_jobs(timeout_s=10)
    await kernel.drain()


async def test_send_renders_the_template_and_delivers_it(
    kernel: Kernel, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    sent = capture(kernel, "notifications.>")
    message_id = await kernel.call(
        "notifications.send",
        to="ann@example.org",
        template="welcome",
        params={"name": "Ann", "code": 42},
    )
    await settle(kernel)
    [(recipients, received)] = inbox.received
    assert recipients == ["ann@example.org"]
    assert received["To"] == "ann@example.org"
    assert received["From"] == "shop@example.com"
    assert received["Subject"] == "Welcome, Ann"
    assert received.get_content().replace("\r\n", "\n") == "Hello Ann,\nyour code is 42.\n"
    record = await kernel.call("notifications.get", id=message_id)
    assert isinstance(record, Message)
    assert (record.status, record.attempts, record.to) == ("sent", 1, "ann@example.org")
    assert record.sent_at is not None
    assert [topic for topic, _ in sent] == ["notifications.sent"]
    assert [m.id for m in await kernel.call("notifications.messages")] == [message_id]


async def test_an_event_subscription_sends_to_an_address_in_the_payload(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    subs = [{"on": "order.placed", "template": "order", "to": "order.customer"}]
    async with Kernel([Notifications], config(tmp_path, port, subscriptions=subs)) as k:
        await k.emit("order.placed", {"order": {"id": "o7", "total": 12.5, "customer": "bo@x.io"}})
        await k.emit("order.cancelled", {"order": {"id": "o8", "customer": "bo@x.io"}})
        await k.emit("order.placed", {"order": {"id": "o9", "total": 1}})  # no address: logged
        await settle(k)
    [(recipients, received)] = inbox.received
    assert recipients == ["bo@x.io"]
    assert received["Subject"] == "Order o7 placed"
    plain = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert isinstance(plain, EmailMessage)
    assert isinstance(html, EmailMessage)
    assert plain.get_content().strip() == "Total: 12.5 EUR (order.placed)"
    assert html.get_content().strip() == "<p>Total: <b>12.5</b></p>"


async def test_a_transient_smtp_failure_is_retried_then_sent(
    kernel: Kernel, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    inbox.failures = ["451 4.3.0 try again later", "421 4.3.2 shutting down"]
    message_id = await kernel.call(
        "notifications.send",
        to="ann@example.org",
        template="welcome",
        params={"name": "A", "code": 1},
    )
    await settle(kernel)
    assert inbox.attempts == 3
    assert len(inbox.received) == 1
    record = await kernel.call("notifications.get", id=message_id)
    assert (record.status, record.attempts) == ("sent", 3)
    assert "421" in record.last_error  # the last failure stays on the record


async def test_a_permanent_failure_is_not_retried(kernel: Kernel, smtp: tuple[Inbox, int]) -> None:
    inbox, _ = smtp
    inbox.failures = ["554 5.7.1 rejected"]
    failed = capture(kernel, "notifications.failed")
    message_id = await kernel.call(
        "notifications.send",
        to="ann@example.org",
        template="welcome",
        params={"name": "A", "code": 1},
    )
    await settle(kernel)
    assert inbox.attempts == 1
    record = await kernel.call("notifications.get", id=message_id)
    assert (record.status, record.attempts) == ("failed", 1)
    assert "554" in record.last_error
    assert [data["id"] for _, data in failed] == [message_id]


async def test_retries_stop_at_max_attempts(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    inbox.failures = ["451 4.3.0 later"] * 5
    async with Kernel([Notifications], config(tmp_path, port, max_attempts=3)) as k:
        message_id = await k.call(
            "notifications.send",
            to="a@example.org",
            template="welcome",
            params={"name": "A", "code": 1},
        )
        await settle(k)
        record = await k.call("notifications.get", id=message_id)
    assert (inbox.attempts, record.status, record.attempts) == (3, "failed", 3)


GOOD = {"to": "a@example.org", "template": "welcome", "params": {"name": "A", "code": 1}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": "not-an-address"}, "not an email address"),
        ({"to": "a@example.org\r\nBcc: x@y.z"}, "not an email address"),
        ({"template": "nope", "params": {}}, "no template 'nope'"),
        ({"params": {"name": "A"}}, "needs the parameter 'code'"),
        ({"params": {"name": "A\nBcc: x@y.z", "code": 1}}, "span lines"),
    ],
)
async def test_bad_input_is_a_validation_error_and_sends_nothing(
    kernel: Kernel, smtp: tuple[Inbox, int], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await kernel.call("notifications.send", **{**GOOD, **change})
    await settle(kernel)
    assert smtp[0].attempts == 0
    assert await kernel.call("notifications.messages") == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"subscriptions": [{"on": "x", "template": "nope", "to": "a"}]}, "no template 'nope'"),
        ({"subscriptions": [{"on": "x..y", "template": "welcome", "to": "a"}]}, "empty token"),
        ({"templates": {"t": {"subject": "costs $", "body": ""}}}, "not a valid template"),
        ({"sender": "nobody"}, "not an email address"),
    ],
)
def test_bad_config_refuses_the_load(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Kernel([Notifications], config(tmp_path, 2525, **extra))


async def test_the_plugin_keeps_to_its_manifest(tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    found = await check_plugin(Notifications, config=config(tmp_path, smtp[1]))
    assert found.manifest.emit == ("notifications.>",)
    assert found.warnings == ()
