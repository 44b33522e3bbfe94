"""JetStreamLog's batches: one direct get per claim, commits held back within a batch.

What the contract suite cannot see: where a held-back commit is written (the
batch's last commit, a release, the next claim, ``close``), what a process
that dies mid-batch leaves (its uncommitted part of the batch comes again),
and streams made before ``allow_direct`` (read one record at a time until
``ensure`` turns it on).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import api

from organelle.errors import LeaseLostError, StreamNotFoundError, UnavailableError
from organelle.streams import StreamSpec
from organelle.streams._nats_direct import DirectBatches, direct_record
from organelle.streams.nats import JetStreamLog
from organelle.testing.servers import NatsServer


@pytest.fixture
async def prefix() -> str:
    return f"T{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
async def log(nats_server: NatsServer, prefix: str) -> AsyncIterator[JetStreamLog]:
    log = await JetStreamLog([nats_server.url], prefix=prefix).open()
    await log.ensure("s", StreamSpec())
    yield log
    await log.close()


async def _next_offset(log: JetStreamLog, group: str) -> int:
    (grp,) = [g for g in (await log.info("s")).groups if g.group == group]
    return grp.next_offset


async def test_commits_within_a_batch_are_written_by_its_last(log: JetStreamLog) -> None:
    offsets = [
        (await log.append("s", str(i).encode(), headers={"Status": "x"}))[1] for i in range(4)
    ]
    batch = await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=4)
    assert [d.record.offset for d in batch] == offsets
    assert batch[0].record.headers == {"Status": "x"}  # not taken for a reply status
    for d in batch[:3]:
        await log.commit(d, "a")
    assert await _next_offset(log, "g") == offsets[0]  # held back, not written yet
    await log.commit(batch[3], "a")
    assert await _next_offset(log, "g") == offsets[3] + 1


async def test_a_release_writes_the_commits_before_it(log: JetStreamLog) -> None:
    offsets = [(await log.append("s", str(i).encode()))[1] for i in range(3)]
    batch = await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=3)
    await log.commit(batch[0], "a")
    await log.release(batch[1], "a", attempted=False)
    again = await log.claim_batch("g", "s", 0, "b", lease_s=30, limit=3)
    assert [d.record.offset for d in again] == offsets[1:]
    assert again[0].attempt == 1  # handed back unstarted
    with pytest.raises(LeaseLostError):
        await log.commit(batch[2], "a")


async def test_the_next_claim_carries_held_back_commits(log: JetStreamLog) -> None:
    offsets = [(await log.append("s", str(i).encode()))[1] for i in range(4)]
    batch = await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=4)
    await log.commit(batch[0], "a")
    await log.commit(batch[1], "a")
    again = await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=4)
    assert [d.record.offset for d in again] == offsets[2:]
    assert await _next_offset(log, "g") == offsets[2]


async def test_close_writes_held_back_commits(nats_server: NatsServer, prefix: str) -> None:
    first = await JetStreamLog([nats_server.url], prefix=prefix).open()
    await first.ensure("s", StreamSpec())
    offsets = [(await first.append("s", str(i).encode()))[1] for i in range(3)]
    batch = await first.claim_batch("g", "s", 0, "a", lease_s=30, limit=3)
    await first.commit(batch[1], "a")
    await first.close()
    async with await JetStreamLog([nats_server.url], prefix=prefix).open() as again:
        assert await _next_offset(again, "g") == offsets[2]


async def test_a_member_that_dies_mid_batch_leaves_the_rest_to_come_again(
    nats_server: NatsServer, prefix: str
) -> None:
    dying = await JetStreamLog([nats_server.url], prefix=prefix).open()
    await dying.ensure("s", StreamSpec())
    offsets = [(await dying.append("s", str(i).encode()))[1] for i in range(3)]
    batch = await dying.claim_batch("g", "s", 0, "a", lease_s=1.0, limit=3)
    await dying.commit(batch[0], "a")
    await dying.commit(batch[1], "a")  # both held back: more than half the lease is left
    dying._pending.clear()  # what a killed process leaves behind: nothing written
    await dying.close()
    async with await JetStreamLog([nats_server.url], prefix=prefix).open() as other:
        assert await other.claim_batch("g", "s", 0, "b", lease_s=30, limit=3) == []  # leased
        again = []
        for _ in range(60):  # bounded: the lease is 1 s
            again = await other.claim_batch("g", "s", 0, "b", lease_s=30, limit=3)
            if again:
                break
            await asyncio.sleep(0.05)
        assert [d.record.offset for d in again] == offsets  # up to a batch comes again
        assert again[0].attempt == 2


async def test_a_short_lease_is_renewed_by_each_commit(log: JetStreamLog) -> None:
    offsets = [(await log.append("s", str(i).encode()))[1] for i in range(3)]
    batch = await log.claim_batch("g", "s", 0, "a", lease_s=0.001, limit=3)
    await log.commit(batch[0], "a")  # under half the lease left: written at once
    assert await _next_offset(log, "g") == offsets[1]


async def test_a_stream_made_without_direct_gets_is_read_and_then_upgraded(
    nats_server: NatsServer, prefix: str, log: JetStreamLog
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        config = api.StreamConfig(
            name=f"{prefix}_old",
            subjects=[f"{prefix}.st.old.*"],
            metadata={"organelle.partitions": "1"},
        )
        await js.add_stream(config)
        for i in range(3):
            await js.publish(f"{prefix}.st.old.0", str(i).encode(), headers={"Organelle-Key": "k"})
        batch = await log.claim_batch("g", "old", 0, "a", lease_s=30, limit=5)
        assert [(d.record.data, d.record.key) for d in batch] == [
            (b"0", "k"),
            (b"1", "k"),
            (b"2", "k"),
        ]
        await log.ensure("old", StreamSpec())
        assert (await js.stream_info(f"{prefix}_old")).config.allow_direct
        await log.release(batch[0], "a")
        again = await log.claim_batch("g", "old", 0, "a", lease_s=30, limit=5)
        assert [d.record.data for d in again] == [b"0", b"1", b"2"]
        assert again[0].attempt == 2
    finally:
        await nc.close()


@pytest.mark.parametrize("hook", [True, False])
async def test_batched_direct_gets_with_and_without_the_parser_hook(
    nats_server: NatsServer, prefix: str, log: JetStreamLog, *, hook: bool
) -> None:
    placed = [
        await log.append("s", f"r{i}".encode(), key=f"k é {i}", headers={"h": "ü"})
        for i in range(5)
    ]
    nc = await nats.connect(nats_server.url)
    try:
        batches = await DirectBatches(nc, 5.0, hook=hook).open()
        assert batches.hooked is hook  # False also when nats-py changes its message handler
        got = await batches.fetch(f"{prefix}_s", f"{prefix}.st.s.0", placed[1][1], 3)
        records = [direct_record("s", 0, m) for m in got]
        assert [r.offset for r in records] == [off for _, off in placed[1:4]]
        assert [(r.data, r.key, dict(r.headers)) for r in records[:1]] == [
            (b"r1", "k é 1", {"h": "ü"})
        ]
        assert await batches.fetch(f"{prefix}_s", f"{prefix}.st.s.0", placed[-1][1] + 1, 3) == []
        await batches.close()
    finally:
        await nc.close()


async def test_the_batch_read_ahead_is_used_only_from_where_the_group_is(
    log: JetStreamLog,
) -> None:
    offsets = [(await log.append("s", str(i).encode()))[1] for i in range(6)]
    batch = await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=2)  # full: reads ahead
    await log.release(batch[0], "a")
    again = await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=2)
    assert [d.record.offset for d in again] == offsets[:2]
    await log.commit(again[1], "a")  # past both
    await log.dead(
        (await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=2))[0], "a", "ValueError"
    )
    nxt = await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=3)
    assert [d.record.offset for d in nxt] == offsets[3:]


async def test_a_server_before_batched_direct_gets_is_read_one_record_at_a_time(
    nats_server: NatsServer, prefix: str, log: JetStreamLog
) -> None:
    offsets = [(await log.append("s", str(i).encode()))[1] for i in range(3)]
    async with await JetStreamLog([nats_server.url], prefix=prefix).open() as old:
        old._batched = False  # as on nats-server 2.10: the version decides at open
        batch = await old.claim_batch("g", "s", 0, "a", lease_s=30, limit=5)
        assert [d.record.offset for d in batch] == offsets
        assert old._direct == {"s": False}


async def test_a_claim_on_a_stream_deleted_behind_its_back_says_so(
    nats_server: NatsServer, prefix: str, log: JetStreamLog
) -> None:
    await log.append("s", b"x")
    assert await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=2)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().delete_stream(f"{prefix}_s")
    finally:
        await nc.close()
    with pytest.raises(UnavailableError):  # its read finds nothing to answer it
        await log.claim_batch("g", "s", 0, "a", lease_s=30, limit=2)
    with pytest.raises(StreamNotFoundError):  # the next look finds out
        await log.claim_batch("g2", "s", 0, "a", lease_s=30, limit=2)
