"""A module's config section: unknown keys are errors with a did-you-mean."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, ConfigDict

from organelle import Kernel, Module, job
from organelle.config.settings import parse_settings
from organelle.errors import ConfigError
from organelle.testing import running


class Retrying(Module):
    name = "retrying"

    class Config(BaseModel):
        retries: int = 3
        timeout_s: float = 1.0


class Open(Module):
    name = "open"

    class Config(BaseModel):
        model_config = ConfigDict(extra="allow")
        known: int = 0


def test_an_unknown_key_is_an_error_with_a_did_you_mean() -> None:
    with pytest.raises(
        ConfigError, match=r"modules\.retrying\.retires: unknown key; did you mean 'retries'\?"
    ):
        Kernel([Retrying], {"modules": {"retrying": {"retires": 5}}})


def test_every_unknown_key_is_listed() -> None:
    with pytest.raises(ConfigError) as caught:
        Kernel([Retrying], {"modules": {"retrying": {"retires": 5, "zzz": 1}}})
    assert caught.value.details["unknown"] == ["retires", "zzz"]


def test_a_model_that_allows_extra_keys_takes_them() -> None:
    kernel = Kernel([Open], {"modules": {"open": {"known": 1, "anything": "goes"}}})
    assert kernel.modules()["open"].instance.config.known == 1


def test_known_keys_still_validate() -> None:
    kernel = Kernel([Retrying], {"modules": {"retrying": {"retries": 5}}})
    assert kernel.modules()["retrying"].instance.config.retries == 5


def test_a_section_naming_no_module_fails_check() -> None:
    kernel = Kernel([Retrying], {"modules": {"retryng": {}}})
    with pytest.raises(ConfigError, match=r"did you mean \[modules\.retrying\]\?"):
        kernel.check()


@pytest.mark.parametrize(
    ("key", "url", "message"),
    [
        ("storage", "postgress://h/db", "did you mean postgres://"),
        ("storage", "sqlite://app.db", "a SQLite URL needs a path"),
        ("jobs", "natss://h:4222", "did you mean nats://"),
        ("transport", "nats:/h:4222", "is not a URL"),
        ("blobs", "ftp://h/x", "unknown scheme 'ftp'"),
    ],
)
def test_backend_urls_are_checked_when_read(key: str, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings({key: url})


class Flaky(Module):
    name = "flaky"

    @job(max_attempts=2, backoff_s=0.01)
    async def fragile(self) -> None:
        raise ValueError("the disk is full")


async def test_each_failed_attempt_is_logged_with_type_and_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="organelle.jobs")
    async with running(Flaky, config={"kernel": {"jobs": "memory://"}}) as kernel:
        await kernel.enqueue("flaky.fragile")
        await kernel.drain_jobs(timeout_s=10)
    lines = [r.getMessage() for r in caplog.records]
    assert any("attempt 1/2 failed: ValueError: the disk is full; retry in" in m for m in lines)
    assert any("attempt 2/2 failed: ValueError: the disk is full; dead" in m for m in lines)
