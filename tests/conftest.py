"""Shared fixtures for the whole suite."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Failing handlers are logged on purpose in many tests; keep output readable.
    caplog.set_level(logging.CRITICAL, logger="organelle")
