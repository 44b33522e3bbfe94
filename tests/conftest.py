"""Shared fixtures for the whole suite."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Failing handlers are logged on purpose in many tests; keep output readable.
    caplog.set_level(logging.CRITICAL, logger="organelle")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel without [kernel] storage / jobs / streams creates organelle*.db in
    # the working directory on first use: keep those out of the checkout.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
