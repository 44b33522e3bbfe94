"""A log line per reason at most once per interval, with how many times it happened.

A node flooded with forged or broken messages must not flood its own logs:
the first occurrence of a reason is logged at once, later ones within
``interval_s`` are only counted, and the next line after the interval says
how many were held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["ThrottledLog"]


class ThrottledLog:
    """Logs each reason at most once per ``interval_s``.

    Example::

        dropped = ThrottledLog(log, interval_s=60)
        dropped.warning("unsigned", "dropping an unsigned event on %r", topic)
    """

    __slots__ = ("_clock", "_held", "_last", "interval_s", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, reason: str, message: str, *args: object) -> bool:
        """Log ``message % args`` for ``reason`` unless it was logged within the interval.

        Returns whether a line was written.
        """
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            self._held[reason] = self._held.get(reason, 0) + 1
            return False
        held = self._held.pop(reason, 0)
        self._last[reason] = now
        if held:
            message += " (%d more since the last report)"
            args = (*args, held)
        self.logger.warning(message, *args)
        return True
