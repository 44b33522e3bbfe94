"""The claim-check of stream records on SQLite: the record holds a reference, the consumer fetches."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel, Module, consume
from organelle.blobs import open_blobs
from organelle.envelope._claim import BLOB_URN, DATAREF, SHA256_HEADER, SIZE_HEADER

pytestmark = pytest.mark.timeout(60)

BIG = 64 * 1024  # over the threshold below; the mechanism is the same at 10 MB


def cfg(tmp_path: Path, **kernel: Any) -> dict[str, Any]:
    return {
        "kernel": {
            "storage": "memory://",
            "streams": f"sqlite:///{tmp_path}/streams.db",
            "blobs": f"file://{tmp_path}/blobs",
            "claim_check_above": 4096,
            **kernel,
        }
    }


class Reader(Module):
    name = "reader"

    async def on_start(self) -> None:
        self.seen: list[str] = []

    @consume("files", max_attempts=2, backoff_s=0.01)
    async def take(self, text: str) -> None:
        self.seen.append(text)


def reader(kernel: Kernel) -> Reader:
    module = kernel.module("reader")
    assert isinstance(module, Reader)
    return module


async def test_a_large_record_round_trips_through_the_blob_store(tmp_path: Path) -> None:
    text = os.urandom(BIG // 2).hex()
    specs = {"files": {"max_age_s": 3600}}
    async with Kernel([Reader], cfg(tmp_path, stream_specs=specs)) as kernel:
        before = time.time()
        part, offset = await kernel.append("files", text)
        await kernel.drain_streams(timeout_s=10)
        assert reader(kernel).seen == [text]  # the handler never sees the reference
        [rec] = await kernel.streams.read("files", part, offset, limit=1)
        assert rec.data == b""
        assert rec.headers[DATAREF].startswith(BLOB_URN + "claims/records/")
        assert int(rec.headers[SIZE_HEADER]) == len(text) + 2  # the JSON string
        assert len(rec.headers[SHA256_HEADER]) == 64
    async with await open_blobs(f"file://{tmp_path}/blobs") as blobs:
        [info] = [i async for i in blobs.list("claims/records/")]
        assert info.key == rec.headers[DATAREF].removeprefix(BLOB_URN)
        # the stream's retention (plus a grace for a lazily trimmed log)
        assert info.expires_at is not None
        assert before + 3600 < info.expires_at < time.time() + 3600 + 601


async def test_small_records_stay_in_the_log(tmp_path: Path) -> None:
    async with Kernel([Reader], cfg(tmp_path)) as kernel:
        part, offset = await kernel.append("files", "x" * 4000)
        await kernel.drain_streams(timeout_s=10)
        assert reader(kernel).seen == ["x" * 4000]
        [rec] = await kernel.streams.read("files", part, offset, limit=1)
        assert DATAREF not in rec.headers
        assert len(rec.data) == 4002
    assert not (tmp_path / "blobs").exists()  # never opened: made on first use only


async def test_a_missing_blob_fails_the_record_which_is_retried_then_dead(tmp_path: Path) -> None:
    text = os.urandom(BIG // 2).hex()
    async with Kernel([], cfg(tmp_path)) as producer:  # no consumer here: the record waits
        await producer.append("files", text)
    async with await open_blobs(f"file://{tmp_path}/blobs") as blobs:
        [info] = [i async for i in blobs.list("claims/records/")]
        assert await blobs.delete(info.key)
    async with Kernel([Reader], cfg(tmp_path)) as kernel:
        await kernel.drain_streams(timeout_s=10)
        assert reader(kernel).seen == []
        [stats] = kernel.consumers()
        assert stats.failed == 2  # tried, retried,
        assert stats.dead == 1  # then dead-lettered
        assert stats.last_error is not None
        assert stats.last_error["attempt"] == 2
        error = str(stats.last_error["error"])
        assert error.startswith("organelle.claim_check: ")
        assert "no live blob" in error
        [dead] = await kernel.streams.dead_letters("reader", "files")
        assert str(dead["error"]).startswith("organelle.claim_check: ")


async def test_a_corrupted_blob_fails_the_record(tmp_path: Path) -> None:
    text = os.urandom(BIG // 2).hex()
    async with Kernel([], cfg(tmp_path)) as producer:
        await producer.append("files", text)
    [data_file] = (tmp_path / "blobs").rglob("*.data")
    raw = bytearray(data_file.read_bytes())
    raw[100] ^= 0xFF  # same size, other bytes: only the SHA-256 tells
    data_file.write_bytes(bytes(raw))
    async with Kernel([Reader], cfg(tmp_path)) as kernel:
        await kernel.drain_streams(timeout_s=10)
        assert reader(kernel).seen == []
        [stats] = kernel.consumers()
        assert stats.dead == 1
        assert stats.last_error is not None
        error = str(stats.last_error["error"])
        assert error.startswith("organelle.claim_check: ")
        assert "sha256" in error
