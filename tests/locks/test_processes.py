"""Locks and leaders across real processes on SQLite, NATS KV and PostgreSQL, with SIGKILL.

Three processes take one lock 1,000 times between them and check, with
fencing tokens written to the Store, that no two holdings overlap; a holder
killed with SIGKILL frees its lock within its TTL; a leader killed with
SIGKILL is replaced within TTL + 1 s, and no token ever has two leaders:
every term the electors logged (token, pid, start, end) has a token of its
own, held by one pid, and the terms follow one another without overlapping,
tokens growing.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

from organelle.locks import StoreLocks, acquire, fenced_get
from organelle.storage import Store, open_store
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, PostgresServer
from tests.locks._apps import TTL_S
from tests.locks.conftest import Children

pytestmark = pytest.mark.timeout(90)

ROUNDS = 1000


@pytest.fixture(params=["sqlite", "nats", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    tag = f"l{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'locks.db'}"
    if request.param == "nats":
        nats: NatsServer = request.getfixturevalue("nats_server")
        return f"nats-kv://{nats.url.removeprefix('nats://')}/{tag}"
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    import asyncpg

    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(f"CREATE DATABASE {tag}")  # a fresh database: the default table
    finally:
        await conn.close()
    return postgres.dsn.rsplit("/", 1)[0] + f"/{tag}"


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    store = await open_store(url)
    yield store
    await store.close()


async def test_three_processes_never_overlap(url: str, store: Store, children: Children) -> None:
    shares = [ROUNDS // 3 + (1 if i < ROUNDS % 3 else 0) for i in range(3)]
    kids = [children.spawn("contend", url, str(n)) for n in shares]
    for kid in kids:
        await kid.wait_for("done", timeout_s=75)
    count = await store.get("count")
    assert count is not None
    assert count.value == ROUNDS  # a lost update would mean two holders at once
    assert await store.get("overlaps") is None
    tokens, cursor = [], None
    while True:
        page = await store.scan("tok.", limit=500, cursor=cursor)
        tokens += [int(e.key.removeprefix("tok.")) for e in page.items]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert len(tokens) == len(set(tokens)) == ROUNDS
    pids = {kid.proc.pid for kid in kids}
    holders = {e.value for e in (await store.get_many([f"tok.{t:020d}" for t in tokens])).values()}
    assert holders == pids  # all three took turns
    fence = await fenced_get(store, "fence")
    assert fence is not None
    assert fence[1] == max(tokens)  # the fenced writes never went backwards (else FencedError)


async def test_a_killed_holder_frees_the_lock_within_its_ttl(
    store: Store, url: str, children: Children
) -> None:
    kid = children.spawn("hold", url, str(TTL_S))
    line = await kid.wait_for("held ")
    dead_token = int(line.split()[1])
    children.kill(kid)
    killed = time.monotonic()
    lease = await acquire(StoreLocks(store), "held", owner="test", ttl_s=TTL_S, timeout_s=TTL_S + 1)
    took = time.monotonic() - killed
    await lease.release()
    assert took <= TTL_S + 0.5
    assert lease.token > dead_token


@dataclass(frozen=True, slots=True)
class Term:
    """One leadership as its elector logged it; ``end`` is ``None`` if killed (or still) leading."""

    token: int
    pid: int
    start: float
    end: float | None


def logged_terms(tmp: Path) -> list[Term]:
    """Every term in the electors' ``terms-<pid>.jsonl``, each token's start once, by start time."""
    starts: dict[int, tuple[int, float]] = {}
    ends: dict[int, tuple[int, float]] = {}
    for log in tmp.glob("terms-*.jsonl"):
        for line in log.read_text().splitlines():
            ev = json.loads(line)
            into = starts if ev["event"] == "start" else ends
            assert ev["token"] not in into, (
                f"token {ev['token']} led twice: {into[ev['token']]}, {ev}"
            )
            into[ev["token"]] = (ev["pid"], ev["at"])
    for token, (pid, _) in ends.items():
        assert token in starts, f"token {token} ended, never started"
        assert starts[token][0] == pid, (
            f"token {token} started by {starts[token][0]}, ended by {pid}"
        )
    terms = [
        Term(token, pid, at, ends[token][1] if token in ends else None)
        for token, (pid, at) in starts.items()
    ]
    return sorted(terms, key=lambda t: t.start)


async def test_a_killed_leader_is_replaced_within_ttl_plus_one_second(
    store: Store, url: str, children: Children
) -> None:
    kids = {}
    for _ in range(3):
        kid = children.spawn("elect", url)
        kids[kid.proc.pid] = kid
    for kid in kids.values():
        await kid.wait_for("ready")
    locks = StoreLocks(store)
    name = "leader.elected.lead"

    async def term(token: int) -> int | None:
        entry = await store.get(f"term.{token:020d}")
        return None if entry is None else int(entry.value)

    async def current() -> tuple[int, int]:
        """The leader's (token, pid), once it has recorded its term."""
        found: list[tuple[int, int]] = []

        async def recorded() -> bool:
            held = await locks.holder(name)
            pid = None if held is None else await term(held.token)
            if held is not None and pid is not None:
                found.append((held.token, pid))
            return bool(found)

        await eventually(recorded, timeout_s=TTL_S + 10, interval_s=0.02)
        return found[-1]

    token, pid = await current()
    seen = [token]
    killed_at: dict[int, float] = {}  # pid -> wall time it was surely dead (after the wait)
    for _ in range(2):
        children.kill(kids.pop(pid))
        killed = time.monotonic()
        killed_at[pid] = time.time()
        while True:  # bounded by the eventually inside current()
            new_token, new_pid = await current()
            if new_token != token:
                break
            assert time.monotonic() - killed < TTL_S + 1, "the dead leader still holds the lock"
            await asyncio.sleep(0.02)
        took = time.monotonic() - killed
        assert took <= TTL_S + 1, f"failover took {took:.2f} s"
        assert new_pid in kids
        assert new_token > token
        token, pid = new_token, new_pid
        seen.append(token)
    assert seen == sorted(set(seen))

    async def newest_beats() -> bool:  # the newest leader's heartbeats (an older token's: fenced)
        beat = await fenced_get(store, "beat")
        return beat is not None and beat[1] == token

    await eventually(newest_beats, timeout_s=5)

    # Never two leaders with the same token, nor two at once: each logged term
    # has its own token and one pid, tokens grow term after term, and a term
    # ends (its task cancelled once its lease is lost, or its process killed)
    # before the next one starts. The Store hands the lock over only after the
    # TTL of the last renewal, while a holder counts itself lost at 0.9 TTL.
    terms = logged_terms(children.tmp)
    assert [t.token for t in terms] == sorted({t.token for t in terms}), terms
    assert set(seen) <= {t.token for t in terms}, (seen, terms)
    assert {t.pid for t in terms if t.token in seen} == set(killed_at) | {pid}
    for t in terms:
        assert await term(t.token) == t.pid, t  # the Store agrees on the token's one leader
    for before, after in pairwise(terms):
        end = before.end if before.end is not None else killed_at.get(before.pid, math.inf)
        assert end <= after.start, f"{before} overlaps {after}"
    print(f"\nterms {terms}, killed at {killed_at}")  # for the record (pytest -s)
