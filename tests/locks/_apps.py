"""Child processes of the lock tests (``python _apps.py ROLE URL ...``), started and SIGKILLed by them.

* ``contend URL N`` — take the lock ``shared`` ``N`` times; inside, check
  nobody overlaps (the ``inside`` key still holds this holding's token at the
  end, a non-atomic counter, fenced writes) and log the token in the Store.
* ``hold URL TTL`` — take the lock ``held``, print ``held <token>``, wait to be killed.
* ``elect URL`` — run a kernel whose ``Elected`` module's ``@leader`` task
  records its term (token → pid in the Store; ``start`` and, unless killed,
  ``end`` lines in ``terms-<pid>.jsonl`` in the working directory) and stamps
  fenced heartbeats until killed.

Each prints ``ready`` once its Store is open; ``contend`` prints ``done``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

from organelle import Kernel, Module
from organelle.locks import LockContext, LockLease, StoreLocks, fenced_put, leader
from organelle.storage import Store, open_store

TTL_S = 2.0


async def contend(store: Store, n: int) -> None:
    locks, pid = StoreLocks(store), os.getpid()
    for _ in range(n):
        async with LockContext(locks, "shared", owner=str(pid), ttl_s=TTL_S, poll_s=0.02) as lease:
            token = lease.token
            await store.put("inside", token)
            await fenced_put(store, "fence", pid, token=token)
            count = await store.get("count")
            await asyncio.sleep(0)
            await store.put("count", (count.value if count else 0) + 1)
            await store.put(f"tok.{token:020d}", pid)
            inside = await store.get("inside")
            if inside is None or inside.value != token:
                await store.incr("overlaps")
            lease.check()
        await asyncio.sleep(random.uniform(0, 0.002))  # spread the contenders
    print("done", flush=True)


async def hold(store: Store, ttl_s: float) -> None:
    lease = await LockContext(
        StoreLocks(store), "held", owner=str(os.getpid()), ttl_s=ttl_s
    ).__aenter__()
    print(f"held {lease.token}", flush=True)
    await asyncio.Event().wait()


def log_term(event: str, token: int) -> None:
    """Append ``{event, token, pid, at}`` to this process's term log (a write survives SIGKILL)."""
    pid = os.getpid()
    line = json.dumps({"event": event, "token": token, "pid": pid, "at": time.time()})
    with Path(f"terms-{pid}.jsonl").open("a") as out:
        out.write(line + "\n")


class Elected(Module):
    """One instance leads: records its term, then stamps fenced heartbeats."""

    name = "elected"

    @leader(ttl_s=TTL_S)
    async def lead(self, lease: LockLease) -> None:
        store, pid, token = self.kernel.store, os.getpid(), lease.token
        log_term("start", token)
        try:
            await store.compare_and_set(f"term.{token:020d}", pid, revision=None)  # one a token
            while True:
                await fenced_put(store, "beat", pid, token=token)
                await asyncio.sleep(0.05)
        finally:  # cancelled: the lease is lost, or the kernel stops
            log_term("end", token)


async def elect(url: str) -> None:
    async with Kernel([Elected], {"kernel": {"storage": url}}):
        print("ready", flush=True)
        await asyncio.Event().wait()


async def main(role: str, url: str, *args: str) -> None:
    if role == "elect":
        await elect(url)
        return
    store = await open_store(url)
    print("ready", flush=True)
    if role == "contend":
        await contend(store, int(args[0]))
    else:
        await hold(store, float(args[0]))
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
