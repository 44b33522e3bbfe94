"""Durable streams as the dashboard shows them: layout, group positions, members, dead letters.

Only the streams this node's ``@consume`` members read are shown: the log is
never listed or scanned, so the cost is one ``info`` per stream plus one
capped ``dead_letters`` read per group. On NATS those are network reads, so
each stream is read under a short timeout and a failure is shown on that
stream (with this node's counters, which need no read) instead of failing
the whole answer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

from organelle.dashboard._views import (
    DeadCountView,
    StreamGroupView,
    StreamMemberView,
    StreamPartitionView,
    StreamPositionView,
    StreamSpecView,
    StreamsView,
    StreamView,
)
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.streams.base import StreamLog
    from organelle.streams.consumer import ConsumerStats

__all__ = ["DEAD_CAP", "INFO_TIMEOUT_S", "streams_summary"]

DEAD_CAP = 100
INFO_TIMEOUT_S = 2.0

# stream -> group -> this node's members
Members = dict[str, dict[str, list[StreamMemberView]]]


def _member(stats: ConsumerStats) -> StreamMemberView:
    return StreamMemberView(
        module=stats.module,
        handler=stats.handler,
        done=stats.done,
        failed=stats.failed,
        dead=stats.dead,
        lost=stats.lost,
        duplicates=stats.duplicates,
        in_flight=stats.in_flight,
        last_error=None if stats.last_error is None else dict(stats.last_error),
    )


def _local(kernel: Kernel) -> Members:
    """This node's members by stream and group (copied now, so one answer is consistent)."""
    members: Members = defaultdict(lambda: defaultdict(list))
    for stats in kernel.consumers():
        members[stats.stream][stats.group].append(_member(stats))
    return members


async def _dead(log: StreamLog, group: str, stream: str) -> DeadCountView:
    found = len(await log.dead_letters(group, stream, limit=DEAD_CAP + 1))
    return DeadCountView(count=min(found, DEAD_CAP), more=found > DEAD_CAP)


async def _stream(
    log: StreamLog, stream: str, local: dict[str, list[StreamMemberView]]
) -> StreamView:
    info = await log.info(stream)
    positions: dict[str, list[StreamPositionView]] = {name: [] for name in local}
    for g in sorted(info.groups, key=lambda g: (g.group, g.partition)):
        positions.setdefault(g.group, []).append(
            StreamPositionView(
                partition=g.partition, next_offset=g.next_offset, lag=g.lag, owner=g.owner
            )
        )
    groups = [
        StreamGroupView(
            group=name,
            lag=sum(p.lag for p in rows),
            positions=rows,
            members=local.get(name, []),
            dead_letters=await _dead(log, name, stream),
        )
        for name, rows in sorted(positions.items())
    ]
    spec = info.spec
    return StreamView(
        stream=stream,
        spec=StreamSpecView(
            partitions=spec.partitions, max_age_s=spec.max_age_s, max_records=spec.max_records
        ),
        partitions=[
            StreamPartitionView(partition=p.partition, first=p.first, last=p.last)
            for p in sorted(info.partitions, key=lambda p: p.partition)
        ],
        groups=groups,
    )


async def _read(
    log: StreamLog, stream: str, local: dict[str, list[StreamMemberView]]
) -> StreamView:
    try:
        async with asyncio.timeout(INFO_TIMEOUT_S):
            return await _stream(log, stream, local)
    except Exception as exc:  # a log hiccup must not blank the page
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return StreamView(
            stream=stream,
            spec=None,
            partitions=[],
            groups=[
                StreamGroupView(group=g, lag=None, positions=[], members=m, dead_letters=None)
                for g, m in sorted(local.items())
            ],
            error=f"the stream log could not be read: {reason}",
        )


async def streams_summary(kernel: Kernel) -> StreamsView:
    """``/api/streams``: each stream a local member reads, its groups and their dead letters."""
    try:
        log = kernel.streams
    except ConfigError:
        return StreamsView(enabled=False, streams=[])
    members = _local(kernel)
    return StreamsView(
        enabled=True,
        streams=[await _read(log, stream, members[stream]) for stream in sorted(members)],
    )
