"""``NatsBlobStore``: blobs in a NATS JetStream object store (``nats://host:4222?bucket=…``).

The bucket is a standard object store (``js.create_object_store``: stream
``OBJ_<bucket>``), and blobs keep its wire format, so ``nats object get``
and other clients read them: chunks of ``chunk_bytes`` on
``$O.<bucket>.C.<nuid>``, then one meta message (JSON: name, size, chunks,
``SHA-256=`` digest, ``Content-Type`` header, ``metadata``) rolled up on
``$O.<bucket>.M.<base64url(key)>``. Publishing the meta is the commit: a
reader sees the old blob or the new one, and a stream that fails midway has
its chunks purged. The meta is published with the expected last subject
sequence of the meta it replaces, so concurrent writers each purge exactly the
chunks they replaced and none are orphaned.

nats-py's ``ObjectStore.put`` reads a blocking file object and its ``get``
joins the whole object in memory, so both directions are done here on the same
subjects: a write publishes chunk by chunk as the stream arrives, a read
fetches chunk by chunk (``STREAM.MSG.GET`` next-by-subject), one in memory.

Expiry is per blob (``organelle-created`` / ``organelle-expires`` in the
meta's ``metadata``), checked on every read and reclaimed by ``purge_expired``;
``ttl_s`` on the store sets the bucket's own ``max_age`` when it is created
(the server then drops anything older, whatever the blob's own TTL).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from organelle.blobs.base import (
    BaseBlobStore,
    BlobInfo,
    BlobReader,
    Digest,
    Draft,
    check_key,
    regroup,
)
from organelle.errors import (
    BlobNotFoundError,
    ConfigError,
    StorageUnavailableError,
    ValidationError,
)
from organelle.transport.nats_connect import NatsConnectOptions

__all__ = ["NatsBlobStore"]

_CREATED, _EXPIRES = "organelle-created", "organelle-expires"
_DIGEST = "SHA-256="
_WRONG_LAST = {10071, 10164}  # expected last subject sequence did not match
_COMMIT_TRIES = 20
_HEADROOM = 1024  # protocol overhead inside the server's max_payload


class NatsBlobStore(BaseBlobStore):
    """A ``BlobStore`` on a NATS JetStream object store bucket, created on open if missing.

    Args:
        servers: a ``NatsConnectOptions`` (servers, credentials, TLS) or NATS
            URLs (give every cluster node).
        bucket: the object store bucket (``[A-Za-z0-9_-]``).
        replicas: bucket replicas when it is created (3 on a cluster).
        ttl_s: the bucket's ``max_age`` when it is created (``None``: none).
        chunk_bytes: size of a stored chunk (capped by the server's ``max_payload``).
        op_timeout_s: bound on each JetStream request.
        list_concurrency: meta reads in flight while listing.
        **options: see ``BaseBlobStore`` (``clock``).
    """

    def __init__(
        self,
        servers: NatsConnectOptions | Sequence[str] | str = "nats://127.0.0.1:4222",
        *,
        bucket: str = "organelle-blobs",
        replicas: int = 1,
        ttl_s: float | None = None,
        chunk_bytes: int = 128 * 1024,
        op_timeout_s: float = 5.0,
        list_concurrency: int = 16,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not bucket or not all(c.isascii() and (c.isalnum() or c in "_-") for c in bucket):
            raise ConfigError(
                f"NATS object store bucket {bucket!r}: letters, digits, '-' or '_'",
                details={"key": "bucket"},
            )
        self.connect_options = NatsConnectOptions.coerce(servers)
        self.servers = self.connect_options.urls
        self.bucket = bucket
        self.replicas = replicas
        self.ttl_s = ttl_s
        self.chunk_bytes = chunk_bytes
        self.op_timeout_s = op_timeout_s
        self.list_concurrency = list_concurrency
        self._stream = f"OBJ_{bucket}"
        self._nc: Any = None
        self._js: Any = None
        self._nuid: Any = None

    # -- plumbing -----------------------------------------------------------------------

    async def _open(self) -> None:
        import nats.js.api
        import nats.js.errors
        from nats.aio.client import Client
        from nats.nuid import NUID

        async def quiet(_exc: Exception) -> None:
            """Failures surface as StorageUnavailableError on the calls they hit."""

        connect = self.connect_options
        nc = Client()
        try:
            with _mapped("connect"):
                # nats-py keeps trying forever when no server accepts the first connect.
                async with asyncio.timeout(connect.open_budget_s):
                    await nc.connect(
                        **connect.connect_kwargs(),
                        name=f"organelle-blobs:{self.bucket}",
                        max_reconnect_attempts=-1,
                        error_cb=quiet,
                    )
                js = nc.jetstream(timeout=self.op_timeout_s)
                try:
                    await js.object_store(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    config = nats.js.api.ObjectStoreConfig(
                        ttl=self.ttl_s,
                        replicas=self.replicas,
                        storage=nats.js.api.StorageType.FILE,
                    )
                    with contextlib.suppress(nats.js.errors.BadRequestError):  # made meanwhile
                        await js.create_object_store(self.bucket, config=config)
        except BaseException:
            await nc.close()
            raise
        self.chunk_bytes = min(self.chunk_bytes, nc.max_payload - _HEADROOM)
        self._nc, self._js, self._nuid = nc, js, NUID()

    async def _close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    def _meta_subject(self, key: str) -> str:
        return f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(key.encode()).decode()}"

    def _chunk_subject(self, nuid: str) -> str:
        return f"$O.{self.bucket}.C.{nuid}"

    async def _meta(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The meta JSON of ``key`` and its sequence (tombstones included), or ``None``."""
        import nats.js.errors

        with _mapped("read meta"):
            try:
                msg = await self._js.get_last_msg(self._stream, self._meta_subject(key))
            except nats.js.errors.NotFoundError:
                return None
        try:
            return json.loads(msg.data or b"{}"), int(msg.seq)
        except ValueError:
            return None

    def _info(self, key: str, meta: dict[str, Any]) -> BlobInfo | None:
        """The blob a meta JSON describes, or ``None`` for a tombstone or a link."""
        options = meta.get("options") or {}
        if meta.get("deleted") or options.get("link"):
            return None
        extra = {str(k): str(v) for k, v in (meta.get("metadata") or {}).items()}
        created, expires = extra.pop(_CREATED, None), extra.pop(_EXPIRES, None)
        if created is None and meta.get("mtime"):
            with contextlib.suppress(ValueError):
                created = str(datetime.fromisoformat(meta["mtime"]).timestamp())
        headers = meta.get("headers") or {}
        content_type = headers.get("Content-Type") or "application/octet-stream"
        if isinstance(content_type, list):
            content_type = content_type[0] if content_type else "application/octet-stream"
        digest = str(meta.get("digest") or "")
        sha = None
        if digest.upper().startswith(_DIGEST):
            with contextlib.suppress(ValueError):
                sha = base64.urlsafe_b64decode(digest[len(_DIGEST) :]).hex()
        return BlobInfo(
            key=key,
            size=int(meta.get("size") or 0),
            content_type=str(content_type),
            created=float(created or 0.0),
            expires_at=float(expires) if expires else None,
            sha256=sha,
            metadata=extra,
        )

    # -- writing ------------------------------------------------------------------------

    async def _write(self, draft: Draft, chunks: AsyncGenerator[bytes, None]) -> BlobInfo:
        nuid = self._nuid.next().decode()
        subject = self._chunk_subject(nuid)
        digest = Digest()
        count = 0
        try:
            pieces = regroup(chunks, self.chunk_bytes)
            try:
                async for piece in pieces:
                    with _mapped("write chunk"):
                        await self._js.publish(subject, digest.update(piece))
                    count += 1
            finally:
                await pieces.aclose()
            info = draft.info(digest.size, digest.hex)
            replaced = await self._commit(info, nuid, count)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._js.purge_stream(self._stream, subject=subject)
            raise
        if replaced is not None:
            with contextlib.suppress(Exception):  # leftovers only cost space
                await self._js.purge_stream(self._stream, subject=self._chunk_subject(replaced))
        return info

    async def _commit(self, info: BlobInfo, nuid: str, chunks: int) -> str | None:
        """Publish the meta over the current one; return the nuid whose chunks it replaced."""
        metadata = dict(info.metadata)
        metadata[_CREATED] = repr(info.created)
        if info.expires_at is not None:
            metadata[_EXPIRES] = repr(info.expires_at)
        body = {
            "name": info.key,
            "bucket": self.bucket,
            "nuid": nuid,
            "size": info.size,
            "chunks": chunks,
            "mtime": datetime.fromtimestamp(info.created, UTC).isoformat(),
            "digest": _DIGEST + base64.urlsafe_b64encode(bytes.fromhex(info.sha256 or "")).decode(),
            "headers": {"Content-Type": [info.content_type]},
            "metadata": metadata,
            "options": {"max_chunk_size": self.chunk_bytes},
        }
        return await self._replace_meta(info.key, body)

    async def _replace_meta(self, key: str, body: dict[str, Any]) -> str | None:
        import nats.js.errors

        data = json.dumps(body).encode()
        for _ in range(_COMMIT_TRIES):
            current = await self._meta(key)
            headers = {
                "Nats-Rollup": "sub",
                "Nats-Expected-Last-Subject-Sequence": str(0 if current is None else current[1]),
            }
            with _mapped("write meta"):
                try:
                    await self._js.publish(self._meta_subject(key), data, headers=headers)
                except nats.js.errors.APIError as exc:
                    if exc.err_code in _WRONG_LAST:
                        continue  # another writer got in first: replace theirs instead
                    raise
            if current is None or current[0].get("deleted"):
                return None
            return str(current[0].get("nuid") or "") or None
        raise StorageUnavailableError(
            f"blob {key!r}: too many concurrent writers", details={"key": key}
        )

    # -- reading ------------------------------------------------------------------------

    async def _read(self, key: str, chunk_bytes: int) -> BlobReader | None:
        found = await self._meta(key)
        info = None if found is None else self._info(key, found[0])
        if found is None or info is None:
            return None
        meta = found[0]
        chunks = self._chunks(key, str(meta.get("nuid")), info.size)
        return BlobReader(info, regroup(chunks, chunk_bytes))

    async def _chunks(self, key: str, nuid: str, size: int) -> AsyncGenerator[bytes, None]:
        import nats.js.errors

        subject = self._chunk_subject(nuid)
        seq = 0
        got = 0
        while got < size:
            with _mapped("read chunk"):
                try:
                    msg = await self._js.get_msg(
                        self._stream, seq=seq + 1, subject=subject, next=True
                    )
                except nats.js.errors.NotFoundError:
                    raise BlobNotFoundError(
                        f"blob {key!r} was replaced or deleted while being read",
                        details={"key": key},
                    ) from None
            seq = int(msg.seq)
            data = msg.data or b""
            if not data:
                break
            got += len(data)
            yield data

    async def _head(self, key: str) -> BlobInfo | None:
        found = await self._meta(key)
        return None if found is None else self._info(key, found[0])

    async def _remove(self, key: str) -> BlobInfo | None:
        found = await self._meta(key)
        info = None if found is None else self._info(key, found[0])
        if found is None or info is None:
            return None
        tombstone = {
            "name": key,
            "bucket": self.bucket,
            "nuid": found[0].get("nuid"),
            "deleted": True,
            "size": 0,
            "chunks": 0,
            "digest": "",
            "mtime": "",
        }
        replaced = await self._replace_meta(key, tombstone)
        if replaced is not None:
            with contextlib.suppress(Exception):
                await self._js.purge_stream(self._stream, subject=self._chunk_subject(replaced))
        return info

    async def _scan(self, prefix: str) -> AsyncIterator[BlobInfo]:
        with _mapped("list"):
            state = await self._js.stream_info(
                self._stream, subjects_filter=f"$O.{self.bucket}.M.>"
            )
        keys: list[str] = []
        start = len(f"$O.{self.bucket}.M.")
        for subject in state.state.subjects or {}:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                key = base64.urlsafe_b64decode(subject[start:]).decode()
                if key.startswith(prefix) and _valid(key):
                    keys.append(key)
        keys.sort()
        limit = asyncio.Semaphore(self.list_concurrency)

        async def head(key: str) -> BlobInfo | None:
            async with limit:
                return await self._head(key)

        for at in range(0, len(keys), 256):
            for info in await asyncio.gather(*(head(k) for k in keys[at : at + 256])):
                if info is not None:
                    yield info


def _valid(key: str) -> bool:
    try:
        check_key(key)
    except ValidationError:
        return False
    return True


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    """nats-py's connection and server errors as ``StorageUnavailableError``."""
    import nats.errors
    import nats.js.errors

    try:
        yield
    except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
        raise StorageUnavailableError(
            f"NATS object store {what} failed: {exc!r}", details={"error": type(exc).__name__}
        ) from exc
