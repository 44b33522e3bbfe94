"""The values of resolved secrets, and redacting them from text and every log record.

A value read through a ``secret://`` reference may still reach a log line by
a path no model marks secret: a module logging its plain ``str`` config, an
exception message, a third-party library echoing a URL. Filters on loggers do
not cover child loggers, and filters on handlers miss handlers added later
(pytest's, structlog's), so the redaction sits where every record is made: the
record factory (``logging.setLogRecordFactory``, the documented hook). It is
installed only once a secret has been resolved, and costs one formatting of
each record that is emitted (records below the level are never made).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["install", "redact", "remember"]

MASK = "**********"  # the same as organelle.config.secrets.MASK
# Shorter resolved values are masked where they stand alone, not inside other text.
_MIN_REDACT = 6
_known: set[str] = set()
_by_length: list[str] = []  # longest first, so a secret inside another is not half-masked
_installed = False


def remember(value: str) -> None:
    """Mask ``value`` from now on in every dump, diff and log line of this process.

    Called for each value a ``secret://`` reference resolves to (old values stay:
    a diff shows the old one too).
    """
    if not value or value in _known:
        return
    _known.add(value)
    _by_length[:] = sorted(_known, key=len, reverse=True)
    install()


def redact(text: str) -> str:
    """``text`` with every remembered secret value replaced by the mask."""
    if not _known:
        return text
    if text in _known:
        return MASK
    for value in _by_length:
        if len(value) >= _MIN_REDACT and value in text:
            text = text.replace(value, MASK)
    return text


def install() -> None:
    """Wrap the current record factory once; later calls do nothing."""
    global _installed  # noqa: PLW0603 - one factory per process
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _scrub(record)
        return record

    logging.setLogRecordFactory(make)


def _scrub(record: logging.LogRecord) -> None:
    if isinstance(record.msg, str):
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a bad format: logging reports it later itself
            return
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        clean = redact(text)
        if clean != text:
            # Formatters print exc_text when set; the exception itself is dropped
            # so no later formatter can render the secret again.
            record.exc_text, record.exc_info = clean, None
