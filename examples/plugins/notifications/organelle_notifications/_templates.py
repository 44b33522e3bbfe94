"""Templates (``string.Template`` with dotted names), addresses, and event subscriptions."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from organelle.errors import ValidationError
from organelle.topics import pattern_error

# local@domain, one address, no display name, no whitespace or angle brackets: what
# a caller means by "to". Header injection needs a newline, which this refuses too.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?=.{1,253}$)"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


class _Dotted(string.Template):
    """``$name`` and ``${customer.name}``: payloads nest, so names may have dots."""

    idpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)*)"


def check_address(address: object) -> str:
    """The address if it is one plain ``local@domain``; a ``ValidationError`` otherwise."""
    if not isinstance(address, str) or _ADDRESS.fullmatch(address) is None:
        raise ValidationError(
            f"not an email address: {address!r}", details={"field": "to", "value": str(address)}
        )
    return address


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a": {...}, "a.b": 1}``: what ``${a.b}`` looks up."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        flat[name] = value
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
    return flat


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` in a payload, ``None`` where it is missing."""
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


class EmailTemplate(BaseModel):
    """One template of ``[modules.notifications.templates.<name>]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(min_length=1)
    body: str
    html: str = ""
    """An HTML alternative to the plain-text body (optional)."""

    @field_validator("subject", "body", "html")
    @classmethod
    def _parses(cls, value: str) -> str:
        if not _Dotted(value).is_valid():
            raise ValueError(f"not a valid template (a lone '$'? write '$$'): {value!r}")
        return value

    def render(self, name: str, params: Mapping[str, Any]) -> tuple[str, str, str]:
        """Subject, body and HTML with ``params`` in; a missing one is a ``ValidationError``."""
        flat = flatten(params)
        try:
            subject = _Dotted(self.subject).substitute(flat)
            body = _Dotted(self.body).substitute(flat)
            html = _Dotted(self.html).substitute(flat) if self.html else ""
        except KeyError as exc:
            missing = exc.args[0]
            raise ValidationError(
                f"template {name!r} needs the parameter {missing!r}",
                details={"template": name, "missing": missing},
            ) from None
        if "\n" in subject or "\r" in subject:
            raise ValidationError(
                f"template {name!r}: the subject would span lines", details={"template": name}
            )
        return subject, body, html


class Subscription(BaseModel):
    """``[[modules.notifications.subscriptions]]``: on an event, send a template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: str
    """A topic pattern (``*`` one token, ``>`` the rest)."""
    template: str
    to: str
    """A dotted path into the payload (``customer.email``), or a fixed address."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Added to the template's parameters, beside the payload and ``topic``."""

    @field_validator("on")
    @classmethod
    def _pattern(cls, value: str) -> str:
        reason = pattern_error(value)
        if reason is not None:
            raise ValueError(f"on: {reason}")
        return value

    def address(self, data: Any) -> Any:
        """The recipient for this payload: the fixed address, or the one at the path."""
        return self.to if "@" in self.to else lookup(data, self.to)
