"""ThrottledLog: one line per reason per interval, then how many were held back."""

from __future__ import annotations

import logging

import pytest

from organelle.transport._throttle import ThrottledLog


def test_each_reason_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    throttled = ThrottledLog(logging.getLogger("test.throttle"), 60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="test.throttle")
    assert throttled.warning("unsigned", "dropping %s", "a")
    assert not throttled.warning("unsigned", "dropping %s", "b")
    assert not throttled.warning("unsigned", "dropping %s", "c")
    assert throttled.warning("bad_signature", "forged %s", "d")  # another reason: its own clock
    now[0] += 59.9
    assert not throttled.warning("unsigned", "dropping %s", "e")
    now[0] += 0.2
    assert throttled.warning("unsigned", "dropping %s", "f")
    now[0] += 61
    assert throttled.warning("unsigned", "dropping %s", "g")
    assert [r.getMessage() for r in caplog.records] == [
        "dropping a",
        "forged d",
        "dropping f (3 more since the last report)",
        "dropping g",
    ]
