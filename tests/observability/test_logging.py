"""Structured logs: JSON or console, ids of the current work on every line, levels, rotation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from organelle import Kernel, Module, rpc
from organelle.config import parse_settings
from organelle.observability.logging import configure_logging

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Inv(Module):
    name = "inv"

    @rpc
    async def work(self, n: int = 1) -> None:
        for i in range(n):
            self.log.info("working %d", i)
        self.log.debug("details")
        self.log.warning("careful")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    module_logger = logging.getLogger("organelle.module.inv")
    organelle = logging.getLogger("organelle")
    saved = (module_logger.level, organelle.level)
    organelle.setLevel(logging.NOTSET)  # the suite quiets organelle; these tests read it
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    module_logger.setLevel(saved[0])
    organelle.setLevel(saved[1])
    structlog.reset_defaults()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_json_lines_carry_module_ids_and_trace(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "app.log"
    configure_logging(
        parse_settings({"log_format": "json", "log_file": str(log_file), "log_level": "DEBUG"})
    )
    async with Kernel([Inv]) as kernel:
        await kernel.call_with("inv.work", {}, meta={"traceparent": TRACEPARENT})
    records = [r for r in lines(log_file) if r.get("module") == "inv"]
    assert [r["event"] for r in records] == ["working 0", "details", "careful"]
    first = records[0]
    assert first["level"] == "info"
    assert first["logger"] == "organelle.module.inv"
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert first["request_id"] == first["correlation_id"]
    assert "timestamp" in first
    kernel_lines = [r for r in lines(log_file) if r.get("logger") == "organelle.kernel"]
    assert kernel_lines
    assert "request_id" not in kernel_lines[0]  # outside any call: no ids made up


async def test_per_module_levels(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    configure_logging(parse_settings({"log_file": str(log_file), "log_levels": {"inv": "WARNING"}}))
    async with Kernel([Inv]) as kernel:
        await kernel.call("inv.work")
    assert [r["event"] for r in lines(log_file) if r.get("module") == "inv"] == ["careful"]


async def test_file_is_rotated(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    configure_logging(
        parse_settings(
            {"log_file": str(log_file), "log_file_max_bytes": 2000, "log_file_backups": 2}
        )
    )
    async with Kernel([Inv]) as kernel:
        await kernel.call("inv.work", n=200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log", "app.log.1", "app.log.2"]
    assert log_file.stat().st_size <= 2000


async def test_console_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(parse_settings({"log_format": "console"}))
    async with Kernel([Inv]) as kernel:
        await kernel.call("inv.work")
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "working 0" in line)
    assert " INFO    inv: working 0  " in line
    assert "request_id=" in line
    assert "correlation_id=" in line
    started = next(line for line in err.splitlines() if "kernel started" in line)
    assert started.endswith("INFO    organelle.kernel: kernel started with 1 modules")
    assert not line.lstrip().startswith("{")


async def test_structlog_loggers_go_through_the_same_pipeline(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    configure_logging(parse_settings({"log_file": str(log_file)}))
    structlog.get_logger("myapp").info("hello", user="ann")
    (record,) = [r for r in lines(log_file) if r["event"] == "hello"]
    assert (record["user"], record["logger"], record["level"]) == ("ann", "myapp", "info")
