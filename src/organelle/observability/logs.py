"""Kernel listeners that log: state changes always, slow calls when asked.

Apart from ``logging.py`` (the formatter), which the kernel's config reload
imports: these import the kernel.
"""

from __future__ import annotations

import logging

from organelle.kernel import BaseListener, CallReport, ConnectionReport, LifecycleReport

__all__ = ["SlowCallLog", "StateLog"]


_state_log = logging.getLogger("organelle.kernel.state")
_call_log = logging.getLogger("organelle.kernel.calls")


class StateLog(BaseListener):
    """A kernel listener that logs what an operator reads first: state and connection changes.

    Modules that become active, stop or fail, and the transport losing or
    getting back its broker — one line each,
    under ``organelle.kernel.state``. It watches no call or event, so it
    costs the hot paths nothing. ``organelle run`` installs it.
    """

    def on_lifecycle(self, change: LifecycleReport, /) -> None:
        """One line per module that became active, stopped or failed."""
        if change.module is None:
            return  # config reloads: organelle.config logs them, with the diff
        payload = change.payload
        if change.state == "failed":
            _state_log.error("module %s failed: %s", change.module, payload.get("error", ""))
        elif change.state in ("active", "stopped"):
            version = payload.get("version")
            suffix = f" (v{version})" if version else ""
            _state_log.info("module %s %s%s", change.module, change.state, suffix)

    def on_connection(self, change: ConnectionReport, /) -> None:
        """A warning when the broker is lost; a line when it is back."""
        if change.state == "disconnected":
            _state_log.warning("transport disconnected from its broker; reconnecting")
        else:
            _state_log.info("transport reconnected")


class SlowCallLog(BaseListener):
    """A kernel listener that logs each RPC call slower than ``slow_s`` (``[kernel] slow_call_s``).

    Served here or sent to another node, with its duration and error code.
    Watching calls takes local calls off the compiled path (see
    ``organelle.kernel``'s ``Listener``), so it is installed only when the
    threshold is set.
    """

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s

    def on_call(self, call: CallReport, /) -> None:
        """A warning for a call over the threshold."""
        if call.duration_s >= self.slow_s:
            _call_log.warning(
                "slow call %s%s: %.1f ms%s",
                call.target,
                " (remote)" if call.remote else "",
                call.duration_s * 1000,
                f" failed {call.error}" if call.error else "",
            )
