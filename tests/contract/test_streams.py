"""One contract for every StreamLog backend: memory, SQLite (embedded) and NATS JetStream.

Offsets are only assumed to grow within a partition (JetStream's skip); every
wait is bounded.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from organelle.errors import LeaseLostError, StreamNotFoundError, ValidationError
from organelle.streams import Delivery, StreamLog, StreamSpec
from organelle.testing import eventually
from organelle.testing.servers import NatsServer

Factory = Callable[[], Awaitable[StreamLog]]
BACKENDS = ["memory", "sqlite", "nats"]


@pytest.fixture(params=BACKENDS)
async def factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Opens logs on one backend; several calls share the same storage (for reopen tests)."""
    opened: list[StreamLog] = []
    if request.param == "memory":
        from organelle.streams.memory import MemoryStreamLog

        memory = MemoryStreamLog()  # its data lives as long as the object: reopen that one

        async def make() -> StreamLog:
            log = await memory.open()
            opened.append(log)
            return log

    elif request.param == "sqlite":
        from organelle.streams.sqlite import SqliteStreamLog

        async def make() -> StreamLog:
            log = await SqliteStreamLog(tmp_path / "streams.db").open()
            opened.append(log)
            return log

    else:
        if importlib.util.find_spec("organelle.streams.nats") is None:
            pytest.skip("the JetStream stream log is not built yet")
        from organelle.streams.nats import JetStreamLog

        server: NatsServer = request.getfixturevalue("nats_server")
        prefix = f"T{uuid.uuid4().hex[:8].upper()}"

        async def make() -> StreamLog:
            log = await JetStreamLog([server.url], prefix=prefix).open()
            opened.append(log)
            return log

    yield make
    for log in opened:
        await log.close()


async def test_append_and_read_in_order_per_partition(factory: Factory) -> None:
    log = await factory()
    await log.ensure("orders", StreamSpec(partitions=3))
    placed = [await log.append("orders", f"r{i}".encode(), key=f"k{i % 5}") for i in range(30)]
    by_part: dict[int, list[int]] = {}
    for part, off in placed:
        by_part.setdefault(part, []).append(off)
    for part, offsets in by_part.items():
        assert offsets == sorted(offsets)
        assert len(set(offsets)) == len(offsets)
        got = await log.read("orders", part, 0, 100)
        assert [r.offset for r in got] == offsets
        assert all(r.stream == "orders" and r.partition == part for r in got)
    assert len(by_part) > 1  # five keys spread over three partitions


async def test_one_key_one_partition_and_fields_round_trip(factory: Factory) -> None:
    log = await factory()
    await log.ensure("evt", StreamSpec(partitions=4))
    parts = {(await log.append("evt", b"x", key="customer-7"))[0] for _ in range(10)}
    assert len(parts) == 1
    part, off = await log.append("evt", b"\x00\xffbin", key="k", headers={"trace": "t-1"})
    (rec,) = await log.read("evt", part, off, 1)
    assert (rec.data, rec.key, dict(rec.headers), rec.offset) == (
        b"\x00\xffbin",
        "k",
        {"trace": "t-1"},
        off,
    )
    assert rec.ts > 0
    keyless = {(await log.append("evt", b"y"))[0] for _ in range(8)}
    assert len(keyless) > 1  # no key: spread over partitions


async def test_bad_names_unknown_streams_and_fixed_partitions(factory: Factory) -> None:
    log = await factory()
    with pytest.raises(ValidationError):
        await log.ensure("bad name!", StreamSpec())
    with pytest.raises(StreamNotFoundError):
        await log.append("missing", b"x")
    with pytest.raises(StreamNotFoundError):
        await log.info("missing")
    await log.ensure("fixed", StreamSpec(partitions=2))
    await log.ensure("fixed", StreamSpec(partitions=2, max_records=10))  # retention may change
    with pytest.raises(ValidationError):
        await log.ensure("fixed", StreamSpec(partitions=3))
    with pytest.raises(ValidationError):
        await log.claim("bad group!", "fixed", 0, "me", lease_s=5)


async def test_a_group_reads_each_partition_in_order_once_committed(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec(partitions=1))
    for i in range(5):
        await log.append("s", str(i).encode())
    seen: list[bytes] = []
    for _ in range(10):
        d = await log.claim("g", "s", 0, "me", lease_s=5)
        if d is None:
            break
        assert d.attempt == 1
        seen.append(d.record.data)
        await log.commit(d, "me")
    assert seen == [b"0", b"1", b"2", b"3", b"4"]
    assert await log.claim("g", "s", 0, "me", lease_s=5) is None
    await log.append("s", b"5")
    d = await log.claim("g", "s", 0, "me", lease_s=5)
    assert d is not None
    assert d.record.data == b"5"
    await log.commit(d, "me")
    other = await log.claim("g2", "s", 0, "other", lease_s=5)  # groups are independent
    assert other is not None
    assert other.record.data == b"0"


async def test_an_uncommitted_record_comes_again(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec())
    await log.append("s", b"a")
    await log.append("s", b"b")
    d1 = await log.claim("g", "s", 0, "me", lease_s=5)
    assert d1 is not None
    await log.release(d1, "me")
    d2 = await log.claim("g", "s", 0, "me", lease_s=5)
    assert d2 is not None
    assert (d2.record.data, d2.attempt) == (b"a", 2)
    await log.commit(d2, "me")
    d3 = await log.claim("g", "s", 0, "me", lease_s=5)
    assert d3 is not None
    assert (d3.record.data, d3.attempt) == (b"b", 1)


async def test_a_lease_keeps_others_out_until_it_expires(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec())
    await log.append("s", b"a")
    mine = await log.claim("g", "s", 0, "a", lease_s=0.6)
    assert mine is not None
    assert await log.claim("g", "s", 0, "b", lease_s=0.6) is None

    async def taken_over() -> Delivery:
        theirs = await log.claim("g", "s", 0, "b", lease_s=5)
        assert theirs is not None, "still leased to a"
        return theirs

    theirs = await eventually(taken_over, timeout_s=3, interval_s=0.05)  # the lease is 0.6 s
    assert theirs.record.offset == mine.record.offset
    assert theirs.attempt == 2
    with pytest.raises(LeaseLostError):
        await log.commit(mine, "a")  # the stalled owner cannot move the group
    await log.commit(theirs, "b")
    assert await log.claim("g", "s", 0, "b", lease_s=5) is None


async def test_start_latest_and_seek(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec())
    offsets = [(await log.append("s", str(i).encode()))[1] for i in range(4)]
    assert await log.claim("late", "s", 0, "me", lease_s=5, start="latest") is None
    await log.append("s", b"new")
    d = await log.claim("late", "s", 0, "me", lease_s=5, start="latest")
    assert d is not None
    assert d.record.data == b"new"
    await log.commit(d, "me")
    await log.seek("late", "s", "earliest")
    d = await log.claim("late", "s", 0, "me", lease_s=5)
    assert d is not None
    assert d.record.data == b"0"
    await log.release(d, "me")
    await log.seek("late", "s", offsets[2])
    d = await log.claim("late", "s", 0, "me", lease_s=5)
    assert d is not None
    assert d.record.data == b"2"
    await log.release(d, "me")
    await log.seek("late", "s", "latest")
    assert await log.claim("late", "s", 0, "me", lease_s=5) is None


async def test_dead_letters_are_kept_and_skipped(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec())
    await log.append("s", b"poison", key="p")
    await log.append("s", b"fine")
    d = await log.claim("g", "s", 0, "me", lease_s=5)
    assert d is not None
    await log.dead(d, "me", "ValueError: bad")
    nxt = await log.claim("g", "s", 0, "me", lease_s=5)
    assert nxt is not None
    assert nxt.record.data == b"fine"
    (letter,) = await log.dead_letters("g", "s")
    assert letter["data"] == b"poison"
    assert letter["error"] == "ValueError: bad"
    assert letter["offset"] == d.record.offset
    assert await log.dead_letters("other", "s") == []


async def test_retention_by_count_and_groups_skip_what_was_trimmed(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec(max_records=3))
    for i in range(8):
        await log.append("s", str(i).encode())
    await log.trim()
    kept = await log.read("s", 0, 0, 100)
    assert [r.data for r in kept] == [b"5", b"6", b"7"]
    d = await log.claim("g", "s", 0, "me", lease_s=5)
    assert d is not None
    assert d.record.data == b"5"


async def test_acknowledged_appends_and_positions_survive_reopening(factory: Factory) -> None:
    first = await factory()
    await first.ensure("s", StreamSpec(partitions=2))
    placed = [await first.append("s", str(i).encode(), key=str(i)) for i in range(6)]
    d = await first.claim("g", "s", placed[0][0], "me", lease_s=5)
    assert d is not None
    await first.commit(d, "me")
    await first.close()
    again = await factory()
    await again.ensure("s", StreamSpec(partitions=2))
    total = 0
    for p in (0, 1):
        total += len(await again.read("s", p, 0, 100))
    assert total == 6
    nxt = await again.claim("g", "s", placed[0][0], "me", lease_s=5)
    assert nxt is None or nxt.record.offset > d.record.offset


async def test_info_reports_ranges_and_lag(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec(partitions=1))
    offs = [(await log.append("s", b"x"))[1] for _ in range(5)]
    d = await log.claim("g", "s", 0, "me", lease_s=5)
    assert d is not None
    await log.commit(d, "me")
    info = await log.info("s")
    assert info.spec.partitions == 1
    (part,) = info.partitions
    assert (part.first, part.last) == (offs[0], offs[-1])
    (grp,) = [g for g in info.groups if g.group == "g"]
    assert grp.lag == 4


async def test_a_batch_is_leased_whole_and_committed_one_by_one(factory: Factory) -> None:
    log = await factory()
    await log.ensure("s", StreamSpec())
    for i in range(5):
        await log.append("s", str(i).encode())
    batch = await log.claim_batch("g", "s", 0, "a", lease_s=5, limit=3)
    assert [d.record.data for d in batch] == [b"0", b"1", b"2"]
    assert [d.attempt for d in batch] == [1, 1, 1]
    assert await log.claim_batch("g", "s", 0, "b", lease_s=5, limit=3) == []  # leased
    await log.commit(batch[0], "a")
    await log.commit(batch[1], "a")
    await log.release(batch[2], "a")  # the rest goes back
    again = await log.claim_batch("g", "s", 0, "b", lease_s=5, limit=10)
    assert [d.record.data for d in again] == [b"2", b"3", b"4"]
    assert again[0].attempt == 2  # the released record was delivered before
    with pytest.raises(LeaseLostError):
        await log.commit(batch[2], "a")
    for d in again:
        await log.commit(d, "b")
    assert await log.claim_batch("g", "s", 0, "b", lease_s=5, limit=10) == []
