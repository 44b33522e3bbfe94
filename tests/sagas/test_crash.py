"""1,000 sagas of 4 steps, a fifth of the steps failing, the orchestrator SIGKILLed five times.

The orchestrator (``_app.py``) runs the sagas on the job queue and the Store
of one backend (SQLite files, or PostgreSQL for both); this test kills it
five times, restarts it, and after the last start waits (bounded) until no
saga is unfinished. Each kill lands mid-work, whatever the backend's speed:
it waits for the orchestrator to finish a random share of the sagas, drawn
from the k-th of ``KILLS + 1`` bands (the first kill may land mid-start, the
last leaves a quarter of the work), and the Store, read once the process is
dead, must show sagas unfinished and progress since the previous kill. Then,
from the Store alone:

* every saga is ``completed`` (its four effects applied) or ``compensated``
  (the steps before the failed one applied and undone, the failed one and
  those after never applied), none left running, compensating or stuck;
* each effect and each undo applied exactly once, no compensation of a step
  that was never applied;
* the duplicate invocations the kills caused are bounded by the steps in
  flight at each kill (a restart resumes, it does not replay).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from organelle.storage import Store, open_store
from organelle.storage.namespace import NamespacedStore
from organelle.testing.servers import PostgresServer, shared_postgres

from ._app import STEPS, fails_for_good

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SAGAS = 1_000
KILLS = 5
SLOTS = 20
BAND = SAGAS // (KILLS + 1)  # the k-th kill waits for k-1 bands and a random share of one more
APP = Path(__file__).with_name("_app.py")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(jobs URL, storage URL) of a fresh queue and store."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db", f"sqlite:///{tmp_path}/store.db"
    server: PostgresServer = request.getfixturevalue("postgres")
    db = f"sagas_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute(f"CREATE DATABASE {db}")
        finally:
            await conn.close()

    asyncio.run(create())
    dsn = server.dsn.rsplit("/", 1)[0] + f"/{db}"
    return dsn, dsn


class Orchestrator:
    """The ``_app.py`` processes of one test; kills only those it started."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.tmp, self.config = tmp, config
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def spawn(self) -> None:
        self.runs += 1
        with (self.tmp / f"orchestrator-{self.runs}.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), json.dumps(self.config), str(SAGAS)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(SRC)},
                cwd=self.tmp,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.tmp / f"orchestrator-{self.runs}.log").read_text()
            pytest.fail(f"orchestrator exited {self.proc.returncode}:\n{log[-4000:]}")


async def running(sagas: NamespacedStore) -> int:
    """The sagas started and not finished (their ``a.`` markers), a cheap count to poll."""
    n, cursor = 0, None
    while True:
        page = await sagas.scan("a.", limit=1000, cursor=cursor)
        n += len(page.items)
        cursor = page.cursor
        if cursor is None:
            return n


async def finished(sagas: NamespacedStore) -> int:
    """The sagas completed or compensated, counted from their records."""
    records = await everything(sagas, "s.")
    return sum(1 for r in records.values() if r["state"] in {"completed", "compensated"})


async def kill_mid_work(
    orch: Orchestrator, sagas: NamespacedStore, orders: NamespacedStore, target: int
) -> None:
    """Kill once sagas run and about ``target`` are finished (bounded), polling every 50 ms."""
    deadline = time.monotonic() + 40
    while True:
        orch.assert_alive()
        active = await running(sagas)
        done = SAGAS - active if await orders.get("started") is not None else 0  # a lower bound
        if active > 0 and done >= target:
            orch.kill()
            return
        assert time.monotonic() < deadline, f"{done} sagas finished, waiting for {target}"
        await asyncio.sleep(0.05)


async def everything(view: NamespacedStore, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cursor = None
    while True:
        page = await view.scan(prefix, limit=1000, cursor=cursor)
        out.update({e.key: e.value for e in page.items})
        cursor = page.cursor
        if cursor is None:
            return out


async def test_sagas_end_completed_or_compensated_through_five_kills(
    urls: tuple[str, str], tmp_path: Path
) -> None:
    jobs_url, store_url = urls
    config = {"kernel": {"jobs": jobs_url, "storage": store_url, "job_slots": SLOTS}}
    orch = Orchestrator(tmp_path, config)
    store: Store = await open_store(store_url)
    sagas, stock = NamespacedStore(store, "_sagas"), NamespacedStore(store, "stock")
    orders = NamespacedStore(store, "orders")
    rng = random.Random()
    at_kills: list[tuple[int, int]] = []  # (finished, unfinished) read once the process is dead
    began = time.monotonic()
    try:
        for n in range(KILLS):
            orch.spawn()
            low = 0.0 if n == 0 else n + 0.1  # the first kill may land mid-start
            target = int(rng.uniform(low, n + 0.75) * BAND)
            if at_kills:  # progress since the restart, whatever the last kill overshot
                target = max(target, at_kills[-1][0] + BAND // 10)
            await kill_mid_work(orch, sagas, orders, target)
            done = await finished(sagas)
            at_kills.append((done, SAGAS - done))
        orch.spawn()
        deadline = time.monotonic() + 80
        while True:  # bounded: the last orchestrator finishes every saga
            orch.assert_alive()
            if await orders.get("started") is not None and await running(sagas) == 0:
                break
            assert time.monotonic() < deadline, f"{await running(sagas)} sagas unfinished"
            await asyncio.sleep(0.25)
        orch.kill()
        records = await everything(sagas, "s.")
        effects = await everything(stock, "")
    finally:
        orch.kill()
        await store.close()
    took = time.monotonic() - began

    # Every kill landed mid-work: sagas unfinished, and more finished than at the kill before.
    assert len(at_kills) == KILLS
    assert all(left > 0 for _, left in at_kills), at_kills
    done_at = [done for done, _ in at_kills]
    assert done_at == sorted(set(done_at)), at_kills
    assert len(records) == SAGAS
    states = {"completed": 0, "compensated": 0}
    for rec in records.values():
        assert rec["state"] in states, rec
        states[rec["state"]] += 1
        keys = [f"{rec['id']}/{s}" for s in STEPS]
        doomed = next((i for i, k in enumerate(keys) if fails_for_good(k)), None)
        failed = next((i for i, s in enumerate(rec["steps"]) if s["state"] == "failed"), None)
        if rec["state"] == "completed":
            assert doomed is None, rec
            assert failed is None, rec
            applied, undone = keys, []
        else:
            assert failed is not None, rec
            if failed != doomed:  # three transient failures in a row (p = 0.001 a step)
                assert doomed is None or doomed > failed, rec
                errors = rec["steps"][failed]["errors"]
                assert len(errors) == 3, rec
                assert all("flaky" in e["message"] for e in errors), rec
            applied = undone = keys[:failed]
        for k in keys:
            assert (f"do.{k}" in effects) == (k in applied), (k, rec)
            assert (f"undo.{k}" in effects) == (k in undone), (k, rec)
    assert not [k for k in effects if k.startswith("bad.")], "a step undone that never applied"
    counts = {k: v for k, v in effects.items() if k.startswith(("n_do.", "n_undo."))}
    assert counts
    assert set(counts.values()) == {1}, "an effect applied twice"
    applied_total = sum(1 for k in effects if k.startswith("do."))
    undone_total = sum(1 for k in effects if k.startswith("undo."))
    assert states["completed"] > 0
    assert states["compensated"] > 0
    # A replay is a step run again after its effect was applied: only a kill
    # between the effect and the saga's write makes one, so at most the steps
    # in flight at each kill (a restart resumes, it does not start over).
    replays = effects.get("replays.do", 0) + effects.get("replays.undo", 0)
    print(  # the figures, for the record (pytest -s)
        f"\n{states}, applied {applied_total}, undone {undone_total}, "
        f"replays {replays}, (finished, unfinished) at the kills {at_kills}, "
        f"{took:.1f}s"
    )
    assert replays <= KILLS * SLOTS
    assert orch.runs == KILLS + 1
