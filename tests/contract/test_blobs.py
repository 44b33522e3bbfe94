"""One behaviour suite for every ``BlobStore`` backend: memory, filesystem, S3 (moto), NATS.

Time is a fake clock handed to each store (expiry is the store's own
metadata on every backend), so TTL tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
import random
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from organelle.blobs import (
    BaseBlobStore,
    BlobInfo,
    BlobStore,
    FilesystemBlobStore,
    MemoryBlobStore,
    NatsBlobStore,
    S3BlobStore,
    open_blobs,
)
from organelle.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    ConfigError,
    NotFoundError,
    StorageUnavailableError,
    ValidationError,
)
from organelle.testing import eventually
from organelle.testing.servers import NatsServer

pytestmark = pytest.mark.timeout(60)

BACKENDS = ["memory", "filesystem", "s3", "nats"]
MiB = 1 << 20
S3_CREDENTIALS: dict[str, Any] = {"access_key_id": "testing", "secret_access_key": "testing"}
PART = 5 * MiB  # S3's smallest part: what a streamed S3 write holds at once


class Clock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Make = Callable[..., BaseBlobStore]


def _tag() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[Make]:
    """Build fresh, isolated stores of ``backend`` (servers start only when asked for)."""
    made: list[BaseBlobStore] = []
    bucket = _tag()

    def build(**opts: Any) -> BaseBlobStore:
        opts.setdefault("clock", clock)
        store: BaseBlobStore
        if backend == "memory":
            store = MemoryBlobStore(**opts)
        elif backend == "filesystem":
            store = FilesystemBlobStore(tmp_path / "blobs", **opts)
        elif backend == "s3":
            endpoint: str = request.getfixturevalue("s3_server")
            store = S3BlobStore(
                bucket,
                endpoint_url=endpoint,
                region="us-east-1",
                create_bucket=True,
                part_bytes=PART,
                **S3_CREDENTIALS,
                **opts,
            )
        else:
            nats: NatsServer = request.getfixturevalue("nats_server")
            store = NatsBlobStore(nats.url, bucket=bucket, **opts)
        made.append(store)
        return store

    yield build
    for store in made:
        await store.close()


@pytest.fixture
async def blobs(make: Make) -> AsyncIterator[BaseBlobStore]:
    async with make() as store:
        yield store


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _keys(store: BaseBlobStore, prefix: str = "") -> list[str]:
    return [info.key async for info in store.list(prefix)]


# -- basics ----------------------------------------------------------------------------


async def test_it_is_a_blob_store(blobs: BaseBlobStore) -> None:
    assert isinstance(blobs, BlobStore)


async def test_put_get_head_roundtrip(blobs: BaseBlobStore, clock: Clock) -> None:
    data = b"\x00claim-check\xff" * 100
    info = await blobs.put(
        "events/2024/e1.bin",
        data,
        content_type="application/x-msgpack",
        metadata={"topic": "order.created", "trace-id": "abc-123"},
    )
    assert info == BlobInfo(
        key="events/2024/e1.bin",
        size=len(data),
        content_type="application/x-msgpack",
        created=clock.now,
        expires_at=None,
        sha256=_sha(data),
        metadata={"topic": "order.created", "trace-id": "abc-123"},
    )
    assert await blobs.get("events/2024/e1.bin") == data
    assert await blobs.head("events/2024/e1.bin") == info


async def test_empty_blob_and_default_content_type(blobs: BaseBlobStore) -> None:
    info = await blobs.put("empty", b"")
    assert info.size == 0
    assert info.content_type == "application/octet-stream"
    assert info.sha256 == _sha(b"")
    assert await blobs.get("empty") == b""
    assert await blobs.head("empty") == info


async def test_overwrite_replaces_bytes_and_info(blobs: BaseBlobStore, clock: Clock) -> None:
    await blobs.put("k", b"first version", metadata={"v": "1"})
    clock.now += 5
    second = await blobs.put("k", b"second", content_type="text/plain", metadata={"v": "2"})
    assert await blobs.get("k") == b"second"
    assert await blobs.head("k") == second
    assert second.created == clock.now
    assert await _keys(blobs) == ["k"]


async def test_concurrent_writers_leave_one_whole_blob(blobs: BaseBlobStore) -> None:
    payloads = [bytes([i]) * (1000 + i) for i in range(8)]
    await asyncio.gather(*(blobs.put("race", p) for p in payloads))
    data = await blobs.get("race")
    assert data in payloads
    head = await blobs.head("race")
    assert head is not None
    assert head.sha256 == _sha(data)
    assert await _keys(blobs) == ["race"]


async def test_delete(blobs: BaseBlobStore) -> None:
    await blobs.put("gone", b"x")
    assert await blobs.delete("gone") is True
    assert await blobs.delete("gone") is False
    assert await blobs.delete("never") is False
    assert await blobs.head("gone") is None
    with pytest.raises(BlobNotFoundError):
        await blobs.get("gone")


async def test_missing_is_a_not_found_error(blobs: BaseBlobStore) -> None:
    with pytest.raises(NotFoundError) as err:
        await blobs.get("absent/key")
    assert err.value.code == "organelle.blobs.not_found"
    assert err.value.details == {"key": "absent/key"}
    with pytest.raises(BlobNotFoundError):
        await blobs.open_read("absent/key")
    assert await blobs.head("absent/key") is None


async def test_list_in_key_order_under_a_prefix(blobs: BaseBlobStore) -> None:
    keys = ["b/1", "a/2", "a/b/3", "ab", "a/1", "A", "a-z", "a/1/x"]
    for key in keys:
        await blobs.put(key, key.encode())
    assert await _keys(blobs) == sorted(keys)
    assert await _keys(blobs, "a/") == ["a/1", "a/1/x", "a/2", "a/b/3"]
    assert await _keys(blobs, "a") == ["a-z", "a/1", "a/1/x", "a/2", "a/b/3", "ab"]
    assert await _keys(blobs, "zz") == []
    listed = {info.key: info async for info in blobs.list("b/")}
    assert listed["b/1"] == await blobs.head("b/1")


# -- input -------------------------------------------------------------------------------

BAD_KEYS: list[Any] = [
    "",
    "/abs",
    "..",
    "a/../b",
    "./a",
    "a//b",
    "trail/",
    "sp ace",
    "é",
    "nul\x00",
    "x" * 1025,
    None,
    b"bytes",
]


@pytest.mark.parametrize("backend", ["memory"])
@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
async def test_bad_keys_are_validation_errors(blobs: BaseBlobStore, key: Any) -> None:
    for call in (
        lambda: blobs.put(key, b"x"),
        lambda: blobs.get(key),
        lambda: blobs.head(key),
        lambda: blobs.delete(key),
        lambda: blobs.open_read(key),
    ):
        with pytest.raises(ValidationError) as err:
            await call()
        assert err.value.errors[0]["field"] == "key"


async def test_bad_input_is_refused_and_writes_nothing(blobs: BaseBlobStore) -> None:
    assert (await blobs.put("x" * 1024, b"longest key")).key == "x" * 1024
    bad: list[Callable[[], Awaitable[object]]] = [
        lambda: blobs.put("k", "text"),  # type: ignore[arg-type]
        lambda: blobs.put("k", b"x", content_type=""),
        lambda: blobs.put("k", b"x", content_type="text/é"),
        lambda: blobs.put("k", b"x", ttl_s=0),
        lambda: blobs.put("k", b"x", ttl_s=-1),
        lambda: blobs.put("k", b"x", ttl_s=math.nan),
        lambda: blobs.put("k", b"x", ttl_s=True),
        lambda: blobs.put("k", b"x", metadata={"Upper": "x"}),
        lambda: blobs.put("k", b"x", metadata={"organelle-sha256": "x"}),
        lambda: blobs.put("k", b"x", metadata={"k": "é"}),
        lambda: blobs.put("k", b"x", metadata={"k": "v" * 3000}),
        lambda: blobs.open_read("k", chunk_bytes=0),
    ]
    for call in bad:
        with pytest.raises(ValidationError):
            await call()
    with pytest.raises(ValidationError):
        await _keys(blobs, "/abs")
    assert await blobs.head("k") is None


# -- streaming ---------------------------------------------------------------------------


async def _chunks(count: int, size: int, *, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i in range(count):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("source broke")
        yield random.Random(i).randbytes(size)


def _expected_sha(count: int, size: int) -> str:
    h = hashlib.sha256()
    for i in range(count):
        h.update(random.Random(i).randbytes(size))
    return h.hexdigest()


async def test_a_20_mb_stream_is_written_and_read_in_bounded_memory(
    blobs: BaseBlobStore, backend: str
) -> None:
    count, size = 20, MiB
    # Every backend but S3 holds about one chunk. An S3 multipart write holds
    # one 5 MiB part, the copy asyncio's socket buffer takes of it on its way
    # out, and the next part filling: a bound set by the part, not the object.
    # The source itself costs up to 3 MiB at a time (the chunk the backend is
    # still holding, the random integer of the next, and its bytes).
    bound = 3 * PART + 3 * MiB if backend == "s3" else 5 * MiB
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        info = await blobs.put_stream("big/object", _chunks(count, size), content_type="video/mp4")
        after, peak = tracemalloc.get_traced_memory()
        retained = after - before  # what the memory backend keeps: the blob itself
        assert peak - before - retained < bound, f"write peak {(peak - before) / MiB:.1f} MiB"

        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        digest = hashlib.sha256()
        total = 0
        async with await blobs.open_read("big/object") as reader:
            assert reader.info == info
            async for chunk in reader:
                assert len(chunk) <= 256 * 1024
                digest.update(chunk)
                total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
        assert peak - start < bound, f"read peak {(peak - start) / MiB:.1f} MiB"
    finally:
        tracemalloc.stop()
    assert info.size == total == count * size
    assert info.sha256 == digest.hexdigest() == _expected_sha(count, size)
    assert info.content_type == "video/mp4"


async def test_open_read_gives_chunks_of_the_size_asked(blobs: BaseBlobStore) -> None:
    data = random.Random(7).randbytes(300_000)
    await blobs.put("c", data)
    reader = await blobs.open_read("c", chunk_bytes=64 * 1024)
    chunks = [chunk async for chunk in reader]
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= 64 * 1024 for c in chunks)
    assert len(chunks) >= 5
    async with await blobs.open_read("c", chunk_bytes=1000) as early:
        assert len(await anext(early)) <= 1000  # leaving early releases the handle


async def test_a_failed_stream_writes_nothing(blobs: BaseBlobStore) -> None:
    await blobs.put("k", b"old")
    with pytest.raises(RuntimeError, match="source broke"):
        await blobs.put_stream("k", _chunks(4, 2 * MiB, fail_after=3))
    assert await blobs.get("k") == b"old"
    with pytest.raises(RuntimeError):
        await blobs.put_stream("new", _chunks(4, 1000, fail_after=2))
    assert await blobs.head("new") is None
    assert await _keys(blobs) == ["k"]


async def test_put_stream_takes_odd_chunk_sizes(blobs: BaseBlobStore) -> None:
    async def odd() -> AsyncIterator[bytes]:
        for i in range(50):
            yield bytes([i]) * (i * 997)
        yield b""
        yield bytearray(b"tail")  # type: ignore[misc] # bytes-like chunks are taken too

    info = await blobs.put_stream("odd", odd())
    expected = b"".join(bytes([i]) * (i * 997) for i in range(50)) + b"tail"
    assert info.size == len(expected)
    assert await blobs.get("odd") == expected


# -- TTL -------------------------------------------------------------------------------


async def test_an_expired_blob_is_never_returned(blobs: BaseBlobStore, clock: Clock) -> None:
    info = await blobs.put("short", b"x", ttl_s=10)
    await blobs.put("forever", b"y")
    assert info.expires_at == clock.now + 10
    assert await blobs.head("short") == info
    clock.now += 9.9
    assert await blobs.get("short") == b"x"
    clock.now += 0.2
    assert await blobs.head("short") is None
    with pytest.raises(BlobNotFoundError):
        await blobs.get("short")
    with pytest.raises(BlobNotFoundError):
        await blobs.open_read("short")
    assert await _keys(blobs) == ["forever"]
    assert await blobs.delete("short") is False  # nothing live was there
    await blobs.put("short", b"again", ttl_s=10)  # an expired key takes a new blob
    assert await blobs.get("short") == b"again"


async def test_purge_expired_reclaims_only_expired_blobs(
    blobs: BaseBlobStore, clock: Clock
) -> None:
    for i in range(3):
        await blobs.put(f"ttl/{i}", b"x" * 10, ttl_s=5)
    await blobs.put("ttl/long", b"y", ttl_s=60)
    await blobs.put("keep", b"z")
    assert await blobs.purge_expired() == 0
    clock.now += 6
    assert await blobs.purge_expired() == 3
    assert await blobs.purge_expired() == 0
    assert await _keys(blobs) == ["keep", "ttl/long"]
    clock.now -= 6  # gone for good, not just hidden
    assert await _keys(blobs) == ["keep", "ttl/long"]


async def test_a_streamed_blob_expires_too(blobs: BaseBlobStore, clock: Clock) -> None:
    info = await blobs.put_stream("s", _chunks(2, 1000), ttl_s=1.5, metadata={"a": "b"})
    assert info.expires_at == clock.now + 1.5
    assert (await blobs.head("s")) == info
    clock.now += 2
    assert await blobs.head("s") is None


async def test_expiry_on_the_real_clock(make: Make) -> None:
    async with make(clock=time.time) as store:
        info = await store.put("brief", b"x", ttl_s=0.3)
        assert info.expires_at is not None
        assert abs(info.expires_at - (time.time() + 0.3)) < 5

        async def gone() -> None:
            assert await store.head("brief") is None
            assert await store.purge_expired() == 1

        await eventually(gone, timeout_s=10)


@pytest.mark.parametrize("backend", ["filesystem"])
async def test_files_a_crash_left_behind_are_swept(blobs: FilesystemBlobStore) -> None:
    await blobs.put("k", b"v")
    with pytest.raises(RuntimeError):
        await blobs.put_stream("k", _chunks(3, 1000, fail_after=2))
    (sidecar,) = blobs.root.glob("objects/*/*/*.json")
    (kept,) = blobs.root.glob("objects/*/*/*.data")  # the failed write left nothing
    leftovers = [sidecar.parent / f"{sidecar.stem}.0123.data", sidecar.parent / ".x.1.tmp"]
    for path in leftovers:
        path.write_bytes(b"crashed mid-write")
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert await blobs.purge_expired() == 0
    assert sorted(p.name for p in sidecar.parent.iterdir()) == sorted([sidecar.name, kept.name])
    assert await blobs.get("k") == b"v"


# -- integrity -----------------------------------------------------------------------------


async def _corrupt(store: BaseBlobStore, key: str) -> None:
    """Change the stored bytes (same length) behind the store's back."""
    if isinstance(store, MemoryBlobStore):
        info, parts = store._blobs[key]
        data = b"".join(parts)
        store._blobs[key] = (info, (b"!" + data[1:],))
    elif isinstance(store, FilesystemBlobStore):
        (data_file,) = store.root.glob("objects/*/*/*.data")
        raw = data_file.read_bytes()
        data_file.write_bytes(b"!" + raw[1:])
    elif isinstance(store, S3BlobStore):
        head = await store._client.head_object(Bucket=store.bucket, Key=key)
        got = await store._client.get_object(Bucket=store.bucket, Key=key)
        async with got["Body"] as body:
            raw = await body.read()
        await store._client.put_object(
            Bucket=store.bucket, Key=key, Body=b"!" + raw[1:], Metadata=head["Metadata"]
        )
    else:
        assert isinstance(store, NatsBlobStore)
        found = await store._meta(key)
        assert found is not None
        subject = store._chunk_subject(found[0]["nuid"])
        msg = await store._js.get_msg(store._stream, seq=1, subject=subject, next=True)
        await store._js.purge_stream(store._stream, subject=subject)
        await store._js.publish(subject, b"!" + msg.data[1:])


async def test_a_damaged_blob_is_an_integrity_error(blobs: BaseBlobStore) -> None:
    data = b"precious bytes " * 100
    await blobs.put("d", data)
    await _corrupt(blobs, "d")
    with pytest.raises(BlobIntegrityError) as err:
        await blobs.get("d")
    assert err.value.code == "organelle.blobs.integrity"
    assert err.value.details["field"] == "sha256"
    assert err.value.details["expected"] == _sha(data)
    with pytest.raises(BlobIntegrityError):
        async with await blobs.open_read("d") as reader:
            async for _ in reader:
                pass


@pytest.mark.parametrize("backend", ["memory"])
async def test_a_short_or_long_blob_is_an_integrity_error(blobs: MemoryBlobStore) -> None:
    info = await blobs.put("d", b"12345")
    blobs._blobs["d"] = (info, (b"1234",))
    with pytest.raises(BlobIntegrityError) as err:
        await blobs.get("d")
    assert err.value.details["field"] == "size"
    blobs._blobs["d"] = (info, (b"123456",))
    with pytest.raises(BlobIntegrityError):
        await blobs.get("d")


# -- lifecycle ---------------------------------------------------------------------------


async def test_async_with_and_idempotent_close(make: Make) -> None:
    async with make() as store:
        await store.put("k", b"v")
        assert await store.get("k") == b"v"
    await store.close()
    await store.close()
    with pytest.raises(StorageUnavailableError):
        await store.get("k")
    with pytest.raises(StorageUnavailableError):
        await store.put("k", b"v")
    opened = await make().open()
    async with opened as entered:  # entering an opened store opens nothing twice
        assert entered is opened
        assert await opened.open() is opened


async def test_a_store_opens_on_first_use(make: Make) -> None:
    store = make()
    await store.put("lazy", b"v")
    assert await store.get("lazy") == b"v"
    await store.close()


async def test_data_outlives_the_store_object(make: Make, backend: str) -> None:
    if backend == "memory":
        pytest.skip("memory keeps nothing past close")
    async with make() as first:
        await first.put("durable/k", b"kept", metadata={"m": "1"})
    async with make() as second:
        assert await second.get("durable/k") == b"kept"
        assert (await second.head("durable/k")).metadata == {"m": "1"}  # type: ignore[union-attr]


# -- open_blobs ---------------------------------------------------------------------------


async def test_open_blobs_picks_the_backend_from_the_url(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    options: dict[str, Any] = {}
    expected: type[BaseBlobStore]
    if backend == "memory":
        url, expected = "memory://", MemoryBlobStore
    elif backend == "filesystem":
        url, expected = f"file://{tmp_path / 'b'}", FilesystemBlobStore
    elif backend == "s3":
        endpoint = request.getfixturevalue("s3_server")
        url = f"s3://{_tag()}/app?endpoint={endpoint}&region=us-east-1&create=true"
        options, expected = S3_CREDENTIALS, S3BlobStore
    else:
        nats: NatsServer = request.getfixturevalue("nats_server")
        url, expected = f"{nats.url}?bucket={_tag()}", NatsBlobStore
    async with await open_blobs(url, **options) as store:
        assert type(store) is expected
        await store.put("a/b", b"c")
        assert await store.get("a/b") == b"c"
        if isinstance(store, S3BlobStore):
            assert store.prefix == "app/"
            assert await _keys(store) == ["a/b"]


async def test_open_blobs_takes_a_plain_path(tmp_path: Path) -> None:
    async with await open_blobs(str(tmp_path / "plain")) as store:
        assert isinstance(store, FilesystemBlobStore)
        assert store.root == tmp_path / "plain"


async def test_open_blobs_refuses_bad_urls(s3_server: str) -> None:
    with pytest.raises(ConfigError) as err:
        await open_blobs("ftp://host/x")
    assert err.value.details["scheme"] == "ftp"
    with pytest.raises(ConfigError):
        await open_blobs("s3://bucket?colour=blue")
    with pytest.raises(ConfigError):
        await open_blobs("nats://127.0.0.1:4222?bucket=bad.name")
    with pytest.raises(ConfigError) as missing:  # no bucket, and not asked to create it
        await open_blobs(f"s3://{_tag()}?endpoint={s3_server}&region=us-east-1", **S3_CREDENTIALS)
    assert "does not exist" in str(missing.value)


def test_nats_meta_subject_is_the_object_store_one() -> None:
    store = NatsBlobStore("nats://127.0.0.1:4222", bucket="b")
    encoded = base64.urlsafe_b64encode(b"a/b.txt").decode()
    assert store._meta_subject("a/b.txt") == f"$O.b.M.{encoded}"
