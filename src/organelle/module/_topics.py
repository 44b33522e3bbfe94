"""Topic names and NATS-style wildcard patterns, the same locally and over NATS.

``*`` matches exactly one dot-separated token, ``>`` one or more trailing
tokens. Topics that are emitted never contain wildcards.
"""

from __future__ import annotations

import re

from organelle.errors import ValidationError

__all__ = ["matches", "pattern_error", "topic_error"]

_TOKEN = re.compile(r"^[A-Za-z0-9_\-:$@+=~]+$")


def topic_error(topic: object) -> str | None:
    """Return why ``topic`` is not an emittable topic, or ``None`` if it is."""
    if not isinstance(topic, str) or not topic:
        return "a topic is a non-empty string"
    for token in topic.split("."):
        if not token:
            return f"topic {topic!r} has an empty token"
        if not _TOKEN.match(token):
            return f"topic {topic!r} has an invalid token {token!r} (wildcards are for patterns)"
    return None


def pattern_error(pattern: object) -> str | None:
    """Return why ``pattern`` is not a valid subscription pattern, or ``None``."""
    if not isinstance(pattern, str) or not pattern:
        return "a pattern is a non-empty string"
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == "*":  # noqa: S105 - a wildcard, not a password
            continue
        if token == ">":  # noqa: S105 - a wildcard, not a password
            if i != len(tokens) - 1:
                return f"pattern {pattern!r}: '>' is only allowed as the last token"
            continue
        if not token:
            return f"pattern {pattern!r} has an empty token"
        if not _TOKEN.match(token):
            return f"pattern {pattern!r} has an invalid token {token!r}"
    return None


def check_topic(topic: object) -> str:
    """Return ``topic`` or raise ``ValidationError`` naming what is wrong."""
    reason = topic_error(topic)
    if reason is not None:
        raise ValidationError(reason, errors=[{"field": "topic", "message": reason}])
    return topic  # type: ignore[return-value]


def matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern`` under NATS wildcard rules."""
    if pattern == topic:
        return True
    p_tokens = pattern.split(".")
    t_tokens = topic.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(t_tokens) > i
        if i >= len(t_tokens):
            return False
        if p not in ("*", t_tokens[i]):
            return False
    return len(p_tokens) == len(t_tokens)
