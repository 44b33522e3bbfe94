"""The ``notifications`` module: render, record, and deliver through SMTP from a durable job."""

from __future__ import annotations

import time
import uuid
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib
import msgspec
from pydantic import BaseModel, Field, SecretStr, model_validator

from organelle import Module, job, on, rpc
from organelle.context import current_context
from organelle.errors import NotFoundError, ValidationError
from organelle.jobs import Retry
from organelle.plugins import Manifest
from organelle.topics import matches
from organelle_notifications._templates import (
    EmailTemplate,
    Subscription,
    check_address,
)

Status = Literal["queued", "sent", "failed"]
MAX_ATTEMPTS = 100  # the queue's ceiling; the config's max_attempts decides below it


class Message(msgspec.Struct, kw_only=True):
    """The record of one message, kept until it is older than ``keep_days``."""

    id: str
    to: str
    template: str
    subject: str
    body: str
    html: str = ""
    status: Status = "queued"
    attempts: int = 0
    created: float
    sent_at: float | None = None
    last_error: str = ""


def _transient(exc: Exception) -> bool:
    """Whether trying again later may work: 4xx replies, timeouts, refused connections."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(400 <= r.code < 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 400 <= exc.code < 500
    return isinstance(exc, (aiosmtplib.SMTPException, OSError, TimeoutError))


class Notifications(Module):
    """Email from templates (see the package docstring)."""

    name = "notifications"
    version = "0.1.0"
    manifest = Manifest(kernel=">=0.1,<1", subscribe=(">",), emit=("notifications.>",))

    class Config(BaseModel):
        sender: str
        """The From address (required: there is no good default)."""
        smtp_host: str = "127.0.0.1"
        smtp_port: int = Field(25, ge=1, le=65535)
        smtp_username: str = ""
        smtp_password: SecretStr = SecretStr("")
        smtp_tls: Literal["none", "starttls", "tls"] = "none"
        smtp_timeout_s: float = Field(30.0, gt=0)
        max_attempts: int = Field(8, ge=1, le=MAX_ATTEMPTS)
        retry_base_s: float = Field(5.0, gt=0)
        """The first retry's delay; it doubles each attempt, up to ``retry_max_s``."""
        retry_max_s: float = Field(900.0, gt=0)
        keep_days: float = Field(30.0, gt=0)
        """How long the record of a message stays in the Store."""
        templates: dict[str, EmailTemplate] = Field(default_factory=dict)
        subscriptions: list[Subscription] = Field(default_factory=list)

        @model_validator(mode="after")
        def _check(self) -> Notifications.Config:
            check_address(self.sender)
            for sub in self.subscriptions:
                if sub.template not in self.templates:
                    raise ValueError(f"subscription on {sub.on!r}: no template {sub.template!r}")
                if "@" in sub.to:
                    check_address(sub.to)
            return self

    config: Config

    # sending ------------------------------------------------------------------
    @rpc
    async def send(self, to: str, template: str, params: dict[str, Any] | None = None) -> str:
        """Render ``template`` for ``to``, record it and queue its delivery; return its id.

        Bad input (an address that is not one, an unknown template, a missing
        parameter) is a ``ValidationError`` here, before anything is queued.
        """
        check_address(to)
        found = self.config.templates.get(template)
        if found is None:
            raise ValidationError(
                f"no template {template!r}",
                details={"template": template, "known": sorted(self.config.templates)},
            )
        subject, body, html = found.render(template, {"to": to, **(params or {})})
        message = Message(
            id=uuid.uuid4().hex,
            to=to,
            template=template,
            subject=subject,
            body=body,
            html=html,
            created=time.time(),
        )
        # The record and its delivery job commit together (the transactional outbox).
        async with self.transaction() as tx:
            await tx.store.put(f"msg:{message.id}", message, ttl_s=self.config.keep_days * 86400)
            await tx.enqueue("notifications.deliver", id=message.id)
        return message.id

    @job(max_attempts=MAX_ATTEMPTS)
    async def deliver(self, id: str) -> None:  # noqa: A002 - the message's id
        """Send one recorded message; a transient failure retries with backoff."""
        message = await self._message(id)
        if message.status != "queued":
            return  # already sent (or given up on): a redelivered job does nothing
        message.attempts += 1
        try:
            await self._smtp(message)
        except Exception as exc:
            message.last_error = f"{type(exc).__name__}: {exc}"
            if _transient(exc) and message.attempts < self.config.max_attempts:
                await self._save(message)
                delay = min(
                    self.config.retry_max_s, self.config.retry_base_s * 2 ** (message.attempts - 1)
                )
                self.log.warning(
                    "notifications: %s to %s failed (%s); retry in %.1fs",
                    id,
                    message.to,
                    message.last_error,
                    delay,
                )
                raise Retry(delay_s=delay, reason=message.last_error) from None
            message.status = "failed"
            await self._save(
                message, "notifications.failed", {"id": id, "error": message.last_error}
            )
            return
        message.status = "sent"
        message.sent_at = time.time()
        await self._save(message, "notifications.sent", {"id": id, "to": message.to})

    async def _smtp(self, message: Message) -> None:
        c = self.config
        email = EmailMessage()
        email["From"] = c.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Message-ID"] = f"<{message.id}@{c.sender.rsplit('@', 1)[1]}>"
        email.set_content(message.body)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        await aiosmtplib.send(
            email,
            hostname=c.smtp_host,
            port=c.smtp_port,
            username=c.smtp_username or None,
            password=c.smtp_password.get_secret_value() or None,
            use_tls=c.smtp_tls == "tls",
            start_tls=c.smtp_tls == "starttls",
            timeout=c.smtp_timeout_s,
        )

    # events -------------------------------------------------------------------
    @on(">")
    async def on_event(self, data: Any) -> None:
        """Send the templates of the subscriptions whose pattern the topic matches."""
        ctx = current_context()
        topic = ctx.topic if ctx is not None else None
        if topic is None or topic.startswith(("kernel.", "notifications.")):
            return
        payload: Any = None
        for sub in self.config.subscriptions:
            if not matches(sub.on, topic):
                continue
            if payload is None:
                payload = _plain(data)
            params = {**payload, **sub.params} if isinstance(payload, dict) else dict(sub.params)
            try:
                await self.send(sub.address(payload), sub.template, {"topic": topic, **params})
            except ValidationError as exc:  # a bad payload is the emitter's bug: log, go on
                self.log.warning("notifications: %s on %s: %s", sub.template, topic, exc)

    # records ------------------------------------------------------------------
    @rpc
    async def get(self, id: str) -> Message:  # noqa: A002 - the message's id
        """The record of one message."""
        return await self._message(id)

    @rpc
    async def messages(self, limit: int = 100) -> list[Message]:
        """Recorded messages, newest first (at most ``limit``)."""
        found: list[Message] = []
        cursor: str | None = None
        while True:
            page = await self.store.scan("msg:", limit=500, cursor=cursor)
            found.extend(msgspec.convert(e.value, Message) for e in page.items)
            cursor = page.cursor
            if cursor is None:
                break
        found.sort(key=lambda m: m.created, reverse=True)
        return found[: max(0, limit)]

    async def _message(self, id: str) -> Message:  # noqa: A002
        entry = await self.store.get(f"msg:{id}", type=Message)
        if entry is None:
            raise NotFoundError(f"no message {id!r}", details={"id": id})
        message: Message = entry.value
        return message

    async def _save(
        self, message: Message, topic: str | None = None, event: dict[str, Any] | None = None
    ) -> None:
        """Write the record, and emit ``topic`` in the same transaction when given."""
        keep = max(1.0, self.config.keep_days * 86400 - (time.time() - message.created))
        async with self.transaction() as tx:
            await tx.store.put(f"msg:{message.id}", message, ttl_s=keep)
            if topic is not None:
                await tx.emit(topic, event)


def _plain(data: Any) -> Any:
    """The payload as JSON-like data, whatever type the emitter used."""
    if hasattr(data, "model_dump"):  # a pydantic model
        return data.model_dump(mode="json")
    return msgspec.to_builtins(data)
