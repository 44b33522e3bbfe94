"""The job queue's own JetStream writes, against a real ``nats-server``.

They replace ``js.publish`` on the queue's hot path, so they must fail the
way it did: nats-py's error types, a timeout when no ack comes, and nothing
left waiting when the connection closes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

from organelle._jetstream_pub import JsPublisher
from organelle.testing.servers import NatsServer, shared_nats

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Any]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def stream(nc: Any) -> AsyncIterator[str]:
    name = f"PUB_{uuid.uuid4().hex[:10].upper()}"
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    yield name
    await js.delete_stream(name)


async def test_writes_return_their_sequences_in_order(nc: Any, stream: str) -> None:
    pub = JsPublisher(nc)
    seqs = await asyncio.gather(
        *(pub.publish(f"{stream}.a", str(i).encode(), {}) for i in range(50))
    )
    assert sorted(seqs) == list(range(1, 51))
    msg = await nc.jetstream().get_msg(stream, seqs[7])
    assert msg.data == b"7"
    await pub.close()


async def test_a_failed_expected_sequence_is_natss_own_api_error(nc: Any, stream: str) -> None:
    pub = JsPublisher(nc)
    first = await pub.publish(f"{stream}.k", b"1", {"Nats-Expected-Last-Subject-Sequence": "0"})
    with pytest.raises(APIError) as caught:
        await pub.publish(f"{stream}.k", b"2", {"Nats-Expected-Last-Subject-Sequence": "0"})
    assert caught.value.err_code == 10071  # JSStreamWrongLastSequenceErr
    second = await pub.publish(
        f"{stream}.k", b"3", {"Nats-Expected-Last-Subject-Sequence": str(first)}
    )
    assert second == first + 1
    await pub.close()


async def test_a_subject_no_stream_takes_is_no_stream_response(nc: Any) -> None:
    pub = JsPublisher(nc)
    with pytest.raises(NoStreamResponseError):
        await pub.publish(f"NOWHERE_{uuid.uuid4().hex}.x", b"x", {})
    await pub.close()


async def test_an_ack_that_never_comes_times_out(nc: Any) -> None:
    subject = f"SILENT_{uuid.uuid4().hex}.x"
    await nc.subscribe(subject, cb=_ignore)  # a responder that never answers
    pub = JsPublisher(nc, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(NatsTimeoutError):
        await pub.publish(subject, b"x", {})
    assert 0.25 <= time.monotonic() - started < 2.0  # the timeout, plus one sweep at most
    assert not pub._waiting
    await pub.close()


async def test_close_fails_what_still_waits(nc: Any) -> None:
    subject = f"SILENT_{uuid.uuid4().hex}.x"
    await nc.subscribe(subject, cb=_ignore)
    pub = JsPublisher(nc)
    pending = asyncio.ensure_future(pub.publish(subject, b"x", {}))
    await asyncio.sleep(0.05)
    await pub.close()
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(pending, 2)


async def test_a_cancelled_write_leaves_nothing_behind(nc: Any) -> None:
    subject = f"SILENT_{uuid.uuid4().hex}.x"
    await nc.subscribe(subject, cb=_ignore)
    pub = JsPublisher(nc)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await pub.publish(subject, b"x", {})
    assert not pub._waiting
    await pub.close()


async def _ignore(_msg: Any) -> None:
    return None
