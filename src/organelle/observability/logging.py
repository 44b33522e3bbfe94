"""Structured logs: JSON lines in production, readable lines in development.

Every organelle and user logger is a stdlib ``logging`` logger (``self.log`` of
a module is ``organelle.module.<name>``), so structlog is plugged in as the
*formatter* of the root handlers: nothing else has to change, and structlog's
own loggers go through the same pipeline. Each line gets the module, the
request and correlation ids of the call or event being served, and the trace
id when there is one — read from ``organelle.context`` when the line is
formatted, which happens in the logging task itself (no queue handler, so the
context is still the caller's).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from organelle.context import current_context
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings

__all__ = ["add_context", "apply_levels", "configure_logging"]

_MODULE_LOGGER = "organelle.module."
EventDict = MutableMapping[str, Any]


def add_context(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """Structlog processor: module, request_id, correlation_id and trace_id of the current work."""
    record = event.get("_record")
    name = record.name if isinstance(record, logging.LogRecord) else event.get("logger", "")
    if isinstance(name, str):
        event.setdefault("logger", name)
        if name.startswith(_MODULE_LOGGER):
            event.setdefault("module", name[len(_MODULE_LOGGER) :])
    ctx = current_context()
    # Lifecycle hooks and background tasks run in a bare root context: no request to name.
    if ctx is not None and not (ctx.deadline is None and ctx.topic is None and ctx.corr is None):
        event.setdefault("request_id", ctx.request_id)
        event.setdefault("correlation_id", ctx.correlation_id)
        parent = ctx.meta.get("traceparent")
        if isinstance(parent, str) and len(parent) >= 35:  # noqa: PLR2004 - "00-" + 32 hex
            event.setdefault("trace_id", parent[3:35])
    return event


def render_console(_logger: Any, _method: str, event: EventDict) -> str:
    """``12:00:01 INFO    inventory: message  request_id=… correlation_id=…``.

    The shape ``organelle run`` always printed, with the context after the
    message so lines still read (and grep) by module first.
    """
    stamp = str(event.pop("timestamp", ""))[11:19]  # HH:MM:SS (UTC, like the JSON lines)
    level = str(event.pop("level", "")).upper()
    logger = str(event.pop("logger", ""))
    source = str(event.pop("module", "") or logger)
    message = str(event.pop("event", ""))
    trace = event.pop("exception", None)
    extras = "  ".join(f"{k}={v}" for k, v in event.items())
    line = f"{stamp} {level:<7} {source}: {message}" + (f"  {extras}" if extras else "")
    return line if trace is None else f"{line}\n{trace}"


def level_of(name: str, where: str) -> int:
    """A level name as a number.

    Raises:
        ConfigError: not a level name.
    """
    level = logging.getLevelNamesMapping().get(str(name).upper())
    if level is None:
        raise ConfigError(
            f"{where}: unknown level {name!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return level


def apply_levels(settings: KernelSettings) -> None:
    """Set the root level and each module's own level (also on a config reload)."""
    logging.getLogger().setLevel(level_of(settings.log_level, "kernel.log_level"))
    for module, name in settings.log_levels.items():
        level = level_of(name, f"kernel.log_levels.{module}")
        logging.getLogger(f"{_MODULE_LOGGER}{module}").setLevel(level)


def _handlers(settings: KernelSettings) -> list[logging.Handler]:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file:
        path = Path(settings.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                path,
                maxBytes=settings.log_file_max_bytes,
                backupCount=settings.log_file_backups,
                encoding="utf-8",
            )
        )
    return handlers


def configure_logging(settings: KernelSettings, *, json: bool | None = None) -> None:
    """Route every logger through structlog: ``log_format`` json or console, levels, file.

    Args:
        settings: the kernel settings (``log_level``, ``log_levels``,
            ``log_format``, ``log_file`` and its rotation).
        json: force the format (default: from ``settings.log_format``; the
            file always gets JSON, which machines read).
    """
    use_json = settings.log_format == "json" if json is None else json
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_context,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if use_json else render_console
    handlers = _handlers(settings)
    for i, handler in enumerate(handlers):
        final = renderer if i == 0 else structlog.processors.JSONRenderer()
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=shared,
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    final,
                ],
            )
        )
    logging.basicConfig(handlers=handlers, force=True)
    structlog.configure(
        processors=[
            structlog.stdlib.add_logger_name,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    apply_levels(settings)
