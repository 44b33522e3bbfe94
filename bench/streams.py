"""Durable streams: append and consume throughput beside the raw drivers.

    python bench/streams.py            # full run
    python bench/streams.py --quick    # a few seconds

Floors, measured in the same run:
* SQLite: raw ``sqlite3`` (WAL, synchronous=FULL) inserting one row and
  committing per record from a thread, 32 producers in flight — what "durable
  when acknowledged" costs without group commit;
* NATS JetStream: raw nats-py ``js.publish`` (awaits each PubAck, one key
  header like organelle's) with 32 in flight, and a raw pull consumer
  (``fetch`` 100 + ``ack``, no ordering or leases) reading the same count.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _common import Row, publish

from organelle.streams import StreamLog, StreamSpec
from organelle.streams.consumer import ConsumerStats, GroupConsumer
from organelle.streams.sqlite import SqliteStreamLog

IN_FLIGHT = 32
BODY = b'{"order":"o-1","total":12.5,"items":[1,2,3]}'


async def appends(log: StreamLog, stream: str, n: int) -> float:
    """Records per second appended with ``IN_FLIGHT`` concurrent producers."""
    per = n // IN_FLIGHT

    async def producer(w: int) -> None:
        for i in range(per):
            await log.append(stream, BODY, key=f"k{(w * per + i) % 64}")

    t0 = time.perf_counter()
    await asyncio.gather(*(producer(w) for w in range(IN_FLIGHT)))
    return per * IN_FLIGHT / (time.perf_counter() - t0)


async def consumes(log: StreamLog, stream: str, partitions: int, n: int) -> float:
    """Records per second one group member consumes (one in flight per partition)."""
    done = asyncio.Event()
    count = 0

    async def handler(_: Any) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    member = GroupConsumer(
        log,
        stream=stream,
        group="bench",
        partitions=partitions,
        handler=handler,
        stats=ConsumerStats(stream, "bench", "bench", "handler"),
    )
    t0 = time.perf_counter()
    member.start()
    await asyncio.wait_for(done.wait(), 300)
    rate = n / (time.perf_counter() - t0)
    await member.stop(5)
    return rate


def raw_sqlite(path: Path, n: int) -> float:
    """One INSERT + COMMIT per record (synchronous=FULL), IN_FLIGHT threads sharing a lock."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE r (k TEXT, v BLOB)")
    lock = threading.Lock()
    per = n // IN_FLIGHT

    def producer() -> None:
        for _ in range(per):
            with lock:
                conn.execute("BEGIN")
                conn.execute("INSERT INTO r VALUES (?, ?)", ("k", BODY))
                conn.execute("COMMIT")

    threads = [threading.Thread(target=producer) for _ in range(IN_FLIGHT)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = per * IN_FLIGHT / (time.perf_counter() - t0)
    conn.close()
    return rate


async def sqlite_rows(n: int, tmp: Path) -> list[Row]:
    raw = await asyncio.to_thread(raw_sqlite, tmp / "raw.db", n)
    log = await SqliteStreamLog(tmp / "streams.db").open()
    try:
        await log.ensure("bench", StreamSpec(partitions=4))
        rate = await appends(log, "bench", n)
        consumed = await consumes(log, "bench", 4, n)
    finally:
        await log.close()
    return [
        Row(
            f"append, {IN_FLIGHT} in flight, durable",
            "SqliteStreamLog (FULL, group commit)",
            rate,
            unit="records/s",
            baseline="raw sqlite3, commit per record",
            ratio=rate / raw,
            extra={"raw": raw},
        ),
        Row(
            "consume, 1 member × 4 partitions",
            "SqliteStreamLog + GroupConsumer",
            consumed,
            unit="records/s",
        ),
    ]


async def nats_rows(n: int) -> list[Row]:
    try:
        import nats

        from organelle.streams.nats import JetStreamLog
        from organelle.testing.servers import NatsServer
    except ImportError as exc:  # pragma: no cover - the [nats] extra is missing
        print(f"skipping NATS: {exc}")
        return []
    server = NatsServer().start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        name = f"RAW{uuid.uuid4().hex[:6].upper()}"
        await js.add_stream(name=name, subjects=[f"{name}.>"])
        per = n // IN_FLIGHT

        async def raw_producer(w: int) -> None:
            for i in range(per):  # with a key header, as organelle sends one
                key = f"k{(w * per + i) % 64}"
                await js.publish(f"{name}.{(w * per + i) % 4}", BODY, headers={"Key": key})

        t0 = time.perf_counter()
        await asyncio.gather(*(raw_producer(w) for w in range(IN_FLIGHT)))
        raw_append = per * IN_FLIGHT / (time.perf_counter() - t0)
        sub = await js.pull_subscribe(f"{name}.>", durable="raw")
        got = 0
        t0 = time.perf_counter()
        while got < per * IN_FLIGHT:
            for msg in await sub.fetch(100, timeout=5):
                await msg.ack()
                got += 1
        raw_consume = got / (time.perf_counter() - t0)
        await nc.close()

        log = await JetStreamLog([server.url], prefix=f"B{uuid.uuid4().hex[:6].upper()}").open()
        try:
            await log.ensure("bench", StreamSpec(partitions=4))
            rate = await appends(log, "bench", n)
            consumed = await consumes(log, "bench", 4, per * IN_FLIGHT)
        finally:
            await log.close()
    finally:
        server.close()
    return [
        Row(
            f"append, {IN_FLIGHT} in flight, PubAck",
            "JetStreamLog",
            rate,
            unit="records/s",
            baseline="raw nats-py js.publish",
            ratio=rate / raw_append,
            extra={"raw": raw_append},
        ),
        Row(
            "consume, 1 member × 4 partitions",
            "JetStreamLog + GroupConsumer",
            consumed,
            unit="records/s",
            baseline="raw pull consumer, fetch 100 + ack",
            ratio=consumed / raw_consume,
            extra={"raw": raw_consume},
        ),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 3_200 if args.quick else 32_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    try:
        rows = await sqlite_rows(n, tmp)
        rows += await nats_rows(n // 4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    publish(
        "streams",
        "Durable streams vs raw drivers",
        rows,
        notes=(
            f"{IN_FLIGHT} producers in flight; 64 keys over 4 partitions. A group member handles "
            "one record at a time per partition and commits each (at-least-once, in order), so "
            "its consume rate is bounded by one commit round trip per record per partition; the "
            "raw JetStream consumer acks without ordering or leases. NATS rows use a quarter of "
            "the records. `python bench/streams.py` reproduces it.\n"
        ),
    )


if __name__ == "__main__":
    asyncio.run(main())
