"""The doorbell that wakes SQLite workers of other processes (``jobs/_sqlite_doorbell.py``).

Rung by a producer after its enqueue commits; a waiting worker's thread polls
at once instead of at its next ``poll_s``. The poll stays the fallback, so
these tests check the ring itself, the cleanup of a dead listener's socket,
and that a worker whose poll is slow is still woken at once.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from organelle.jobs import NewJob
from organelle.jobs._sqlite_doorbell import Doorbell, wake_dir
from organelle.jobs.sqlite import SqliteJobQueue

pytestmark = pytest.mark.timeout(30)


def test_a_ring_with_nobody_listening_is_a_no_op(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path / "jobs.db"))
    assert bell.ring() == 0
    assert bell.dir is not None
    assert not bell.dir.exists()
    bell.close()


def test_a_listener_elsewhere_hears_each_ring(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    listener, producer = Doorbell(db), Doorbell(db)
    heard = threading.Semaphore(0)
    assert listener.listen(heard.release)
    try:
        for _ in range(3):
            assert producer.ring() == 1
            assert heard.acquire(timeout=2.0)
        assert listener.ring() == 0  # a process does not ring itself
    finally:
        listener.close()
        producer.close()
    assert listener.dir is not None
    assert list(listener.dir.iterdir()) == []  # its socket is gone with it


def test_the_socket_of_a_process_that_died_is_removed(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    directory = wake_dir(db)
    assert directory is not None
    directory.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "999999-0000000000000000"))
    dead.close()  # as a killed process leaves it: the file stays, nobody reads
    producer = Doorbell(db)
    assert producer.ring() == 0
    assert list(directory.iterdir()) == []
    producer.close()


def test_close_stops_the_reader_thread(tmp_path: Path) -> None:
    bell = Doorbell(str(tmp_path / "jobs.db"))
    assert bell.listen(lambda: None)
    reader = bell._reader
    assert reader is not None
    assert reader.is_alive()
    bell.close()
    assert not reader.is_alive()


def test_a_database_path_too_long_for_a_socket_rings_in_the_temp_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "jobs.db"
    first, second = wake_dir(str(deep)), wake_dir(str(deep))
    assert first is not None
    assert first == second  # every process finds the same place
    assert not str(first).startswith(str(tmp_path))
    assert len(str(first)) < 80  # room for a socket name within 108 bytes
    heard = threading.Semaphore(0)
    listener, producer = Doorbell(str(deep)), Doorbell(str(deep))
    assert listener.listen(heard.release)
    try:
        assert producer.ring() == 1
        assert heard.acquire(timeout=2.0)
    finally:
        listener.close()
        producer.close()


async def test_a_worker_with_a_slow_poll_is_woken_at_once_by_an_enqueue(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    worker = await SqliteJobQueue(db, poll_s=5.0).open()  # its own poll would take 5 s
    producer = await SqliteJobQueue(db).open()
    try:
        assert await worker.claim(names=["work"], limit=1) == []
        for i in range(3):
            waiting = asyncio.ensure_future(worker.wait(10.0))
            await asyncio.sleep(0.05)  # the worker is waiting, its thread watching
            started = time.monotonic()
            await producer.enqueue([NewJob(name="work", params={"i": i})])
            await asyncio.wait_for(waiting, 5.0)
            assert time.monotonic() - started < 1.0
            (lease,) = await worker.claim(names=["work"], limit=1)
            await worker.complete(lease)
    finally:
        await producer.close()
        await worker.close()
