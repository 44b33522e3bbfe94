"""One behaviour suite for the ``Locks`` port on every Store backend: memory, SQLite, PostgreSQL, NATS KV."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from organelle.errors import FencedError, LeaseLostError, LockTimeoutError, ValidationError
from organelle.locks import (
    Grant,
    Holder,
    LockContext,
    Locks,
    StoreLocks,
    acquire,
    fenced_get,
    fenced_put,
)
from organelle.storage import MemoryStore, NatsKvStore, PostgresStore, SqliteStore, Store
from organelle.testing.servers import NatsServer, PostgresServer

pytestmark = pytest.mark.timeout(60)


def _grant(got: Grant | Holder) -> Grant:
    assert isinstance(got, Grant), f"expected a grant, got {got}"
    return got


class LocksContract:
    """The contract; subclasses say how to open a Store on the shared backing."""

    def open(self) -> Store:
        raise NotImplementedError

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        store = self.open()
        yield store
        await store.close()

    @pytest.fixture
    def locks(self, store: Store) -> StoreLocks:
        return StoreLocks(store)

    async def test_is_the_port(self, locks: StoreLocks) -> None:
        assert isinstance(locks, Locks)

    async def test_one_grant_then_holder(self, locks: StoreLocks) -> None:
        assert await locks.holder("a") is None
        grant = _grant(await locks.try_acquire("a", owner="n1", ttl_s=5))
        assert (grant.name, grant.owner) == ("a", "n1")
        assert grant.token > 0
        other = await locks.try_acquire("a", owner="n2", ttl_s=5)
        assert isinstance(other, Holder)
        assert (other.owner, other.token) == ("n1", grant.token)
        assert other.expires_at is not None
        assert time.time() < other.expires_at <= time.time() + 5.5
        assert await locks.holder("a") == other
        assert isinstance(await locks.try_acquire("b", owner="n2", ttl_s=5), Grant)

    async def test_tokens_grow_with_every_holding(self, store: Store, locks: StoreLocks) -> None:
        other = StoreLocks(store)  # another contender: no shortcut from this one's release
        tokens = []
        for i in range(6):
            side = locks if i % 2 else other
            grant = _grant(await side.try_acquire("t", owner=f"n{i}", ttl_s=5))
            tokens.append(grant.token)
            assert await side.release(grant) is True
            assert await locks.holder("t") is None
        assert tokens == sorted(set(tokens))

    async def test_renew_keeps_the_token_and_moves_the_revision(self, locks: StoreLocks) -> None:
        grant = _grant(await locks.try_acquire("r", owner="n1", ttl_s=0.5))
        renewed = await locks.renew(grant, ttl_s=5)
        assert renewed.token == grant.token
        assert renewed.revision > grant.revision
        held = await locks.holder("r")
        assert held is not None
        assert held.token == grant.token
        assert held.expires_at is not None
        assert held.expires_at > time.time() + 4
        with pytest.raises(LeaseLostError) as info:
            await locks.renew(grant, ttl_s=5)  # the old revision: no longer current
        assert info.value.details == {"lock": "r", "token": grant.token}
        assert await locks.release(renewed) is True
        with pytest.raises(LeaseLostError):
            await locks.renew(renewed, ttl_s=5)

    async def test_expired_lease_is_taken_and_the_old_holder_cannot_act(
        self, store: Store, locks: StoreLocks
    ) -> None:
        old = _grant(await locks.try_acquire("e", owner="dead", ttl_s=0.3))
        other = StoreLocks(store)
        assert isinstance(await other.try_acquire("e", owner="live", ttl_s=5), Holder)
        await asyncio.sleep(0.4)
        assert await other.holder("e") is None
        new = _grant(await other.try_acquire("e", owner="live", ttl_s=5))
        assert new.token > old.token
        with pytest.raises(LeaseLostError):
            await locks.renew(old, ttl_s=5)
        assert await locks.release(old) is False  # a stale release leaves the new holder alone
        held = await other.holder("e")
        assert held is not None
        assert (held.owner, held.token) == ("live", new.token)

    async def test_racing_contenders_get_one_grant(self, store: Store) -> None:
        stores = [store] + [self.open() for _ in range(2)]
        try:
            for round_ in range(5):
                sides = [StoreLocks(s) for s in stores for _ in range(2)]
                got = await asyncio.gather(
                    *(
                        side.try_acquire("race", owner=f"c{i}", ttl_s=5)
                        for i, side in enumerate(sides)
                    )
                )
                grants = [g for g in got if isinstance(g, Grant)]
                assert len(grants) == 1, f"round {round_}: {got}"
                holders = {g.token for g in got if isinstance(g, Holder)}
                assert holders <= {grants[0].token}
                assert await sides[got.index(grants[0])].release(grants[0])
        finally:
            for extra in stores[1:]:
                await extra.close()

    # -- leases (waiting, renewal, loss) on this backend -------------------------

    async def test_wait_with_timeout(self, locks: StoreLocks) -> None:
        held = await acquire(locks, "w", owner="n1", ttl_s=5)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as info:
            await acquire(locks, "w", owner="n2", ttl_s=5, timeout_s=0.3)
        assert 0.3 <= time.monotonic() - started < 2
        assert info.value.code == "organelle.lock.timeout"
        assert info.value.details == {"lock": "w", "timeout_s": 0.3}
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(LockTimeoutError):
            await acquire(locks, "w", owner="n2", timeout_s=0)
        waiter = asyncio.ensure_future(acquire(locks, "w", owner="n2", ttl_s=5, timeout_s=5))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await held.release()
        second = await waiter
        assert second.token > held.token
        assert second.owner == "n2"
        await second.release()

    async def test_renewal_outlives_the_ttl(self, store: Store, locks: StoreLocks) -> None:
        async with LockContext(locks, "keep", owner="n1", ttl_s=0.6) as lease:
            for _ in range(4):
                await asyncio.sleep(0.4)
                assert isinstance(
                    await StoreLocks(store).try_acquire("keep", owner="x", ttl_s=1), Holder
                )
                lease.check()
            assert not lease.lost
        assert await locks.holder("keep") is None

    async def test_a_stolen_lease_is_lost(self, store: Store, locks: StoreLocks) -> None:
        with pytest.raises(LeaseLostError) as info:
            async with LockContext(locks, "steal", owner="n1", ttl_s=0.6) as lease:
                await store.put(
                    "_lock.steal", {"owner": "thief"}, ttl_s=10
                )  # taken behind its back
                await asyncio.wait_for(lease.wait_lost(), 2)
                assert lease.lost
                with pytest.raises(LeaseLostError):
                    lease.check()
        assert info.value.details["lock"] == "steal"
        held = await locks.holder("steal")  # leaving the block did not free the thief's lock
        assert held is not None
        assert held.owner == "thief"

    async def test_bad_ttl_is_refused(self, locks: StoreLocks) -> None:
        with pytest.raises(ValidationError) as info:
            await acquire(locks, "bad", owner="n1", ttl_s=0)
        assert info.value.details["errors"][0]["field"] == "ttl_s"
        assert await locks.holder("bad") is None

    async def test_exit_releases_on_error(self, locks: StoreLocks) -> None:
        with pytest.raises(RuntimeError, match="boom"):
            async with LockContext(locks, "err", owner="n1", ttl_s=5):
                raise RuntimeError("boom")
        assert await locks.holder("err") is None

    # -- fenced writes -----------------------------------------------------------

    async def test_fenced_put_refuses_an_older_token(self, store: Store) -> None:
        assert await fenced_get(store, "res") is None
        await fenced_put(store, "res", "first", token=10)
        await fenced_put(store, "res", "again", token=10)
        await fenced_put(store, "res", "newer", token=12)
        with pytest.raises(FencedError) as info:
            await fenced_put(store, "res", "late", token=11)
        assert info.value.code == "organelle.lock.fenced"
        assert info.value.details == {"key": "res", "token": 11, "current": 12}
        assert await fenced_get(store, "res") == ("newer", 12)

    async def test_fenced_puts_race_to_the_largest_token(self, store: Store) -> None:
        async def write(token: int) -> bool:
            try:
                await fenced_put(store, "race", token, token=token)
            except FencedError:
                return False
            return True

        results = await asyncio.gather(*(write(t) for t in range(1, 21)))
        assert results[-1] is True
        assert await fenced_get(store, "race") == (20, 20)


class TestMemoryLocks(LocksContract):
    @pytest.fixture(autouse=True)
    def _shared(self) -> None:
        self.shared = MemoryStore()

    def open(self) -> Store:
        return _Unclosed(self.shared)  # one process, one store: every "open" is the same


class _Unclosed:
    """The shared memory store under another name whose ``close`` leaves it open."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def close(self) -> None:
        """Leave the shared store open for the other contenders."""


class TestSqliteLocks(LocksContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.path = str(tmp_path / "locks.db")

    def open(self) -> Store:
        return SqliteStore(self.path)


class TestPostgresLocks(LocksContract):
    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer) -> None:
        self.dsn = postgres_server.dsn
        self.table = f"locks_{uuid.uuid4().hex[:12]}"

    def open(self) -> Store:
        return PostgresStore(self.dsn, table=self.table, max_size=4)


class TestNatsKvLocks(LocksContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url
        self.bucket = f"l{uuid.uuid4().hex[:12]}"

    def open(self) -> Store:
        return NatsKvStore(servers=self.url, bucket=self.bucket)
