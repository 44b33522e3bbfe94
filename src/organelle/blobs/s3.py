"""``S3BlobStore``: blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto), via aiobotocore.

``s3://bucket?endpoint=http://127.0.0.1:9000&region=eu-west-1&prefix=app/&create=true``

A blob is one object: its key is ``prefix + key``, its type the object's
``Content-Type``, and the rest travels as user metadata: the caller's pairs
beside ``organelle-created``, ``organelle-expires`` and ``organelle-sha256``.
A write is atomic per object, as S3 makes every PUT: a blob up to
``part_bytes`` is one ``PutObject``; a longer stream is a multipart upload
(parts of ``part_bytes`` in memory, aborted if the stream fails), and its
SHA-256, known only at the end, is then set by copying the object onto itself
(only if it is still this upload's, by ETag). Between those two steps a
reader sees the new bytes without a recorded SHA-256 (checked by size only).

Expiry is this metadata, checked by every read and reclaimed by
``purge_expired``; for bulk reclaim a bucket lifecycle rule (day precision)
may back it. Credentials come from the options, else botocore's usual chain
(``AWS_ACCESS_KEY_ID`` …, profiles, instance roles).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
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
from organelle.errors import ConfigError, StorageUnavailableError, ValidationError

__all__ = ["S3BlobStore"]

_MIN_PART = 5 << 20  # S3 refuses smaller parts (but the last)
_MAX_COPY = 5 << 30  # CopyObject's limit: a larger streamed blob keeps no SHA-256
_CREATED, _EXPIRES, _SHA = "organelle-created", "organelle-expires", "organelle-sha256"
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_MOVED = {"412", "PreconditionFailed"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "429"}


class S3BlobStore(BaseBlobStore):
    """A ``BlobStore`` on an S3 bucket.

    Args:
        bucket: the bucket name.
        prefix: put before every key (``app/``), so stores can share a bucket.
        endpoint_url: for S3-compatible servers (``http://127.0.0.1:9000``);
            ``None`` is AWS.
        region: the region (``us-east-1`` when unset and none is configured).
        access_key_id, secret_access_key, session_token: credentials; unset,
            botocore's chain finds them (environment, profile, role).
        create_bucket: create the bucket on open if it does not exist.
        path_style: address the bucket in the path, not the host name
            (default: on with an ``endpoint_url``, as MinIO and moto need).
        part_bytes: multipart part size (at least 5 MiB): what one streamed
            write holds in memory.
        list_concurrency: ``HEAD`` requests in flight while listing.
        timeout_s: connect and read timeout of one request.
        **options: see ``BaseBlobStore`` (``clock``).
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        create_bucket: bool = False,
        path_style: bool | None = None,
        part_bytes: int = 8 << 20,
        list_concurrency: int = 16,
        timeout_s: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not bucket or "/" in bucket:
            raise ConfigError(f"S3 bucket name {bucket!r} is invalid", details={"key": "bucket"})
        if part_bytes < _MIN_PART:
            raise ConfigError("part_bytes must be at least 5 MiB", details={"key": "part_bytes"})
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.create_bucket = create_bucket
        self.path_style = endpoint_url is not None if path_style is None else path_style
        self.part_bytes = part_bytes
        self.list_concurrency = list_concurrency
        self.timeout_s = timeout_s
        self._credentials = {
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "aws_session_token": session_token,
        }
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    # -- plumbing -----------------------------------------------------------------------

    async def _open(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            s3={"addressing_style": "path" if self.path_style else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=self.timeout_s,
            read_timeout=self.timeout_s,
            # Checksums only where S3 demands them: S3-compatible servers vary.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                    **{k: v for k, v in self._credentials.items() if v is not None},
                )
            )
            await self._ensure_bucket()
        except BaseException:
            await stack.aclose()
            self._client = None
            raise
        self._stack = stack

    async def _ensure_bucket(self) -> None:
        try:
            await self._call("head_bucket", Bucket=self.bucket)
        except _Missing:
            if not self.create_bucket:
                raise ConfigError(
                    f"S3 bucket {self.bucket!r} does not exist (create_bucket=True makes it)",
                    details={"key": "bucket", "bucket": self.bucket},
                ) from None
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            region = self._client.meta.region_name
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            with contextlib.suppress(_Exists):
                await self._call("create_bucket", **kwargs)

    async def _close(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()

    async def _call(self, op: str, **kwargs: Any) -> Any:
        """One S3 request, its failures as organelle errors (``_Missing`` for a 404)."""
        import botocore.exceptions as bx

        try:
            return await getattr(self._client, op)(**kwargs)
        except bx.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND or code == "NoSuchBucket":
                raise _Missing(code) from exc
            if code in _MOVED:
                raise _Moved(code) from exc
            if code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise _Exists(code) from exc
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = f"S3 {op} failed: {code} {error.get('Message', '')}".strip()
            if 400 <= status < 500 and code not in _THROTTLED:  # noqa: PLR2004 - HTTP classes
                # Input is checked before it gets here: a 4xx is the settings
                # (bucket name, credentials, permissions), not a passing outage.
                raise ConfigError(message, details={"key": "s3", "op": op, "code": code}) from exc
            raise StorageUnavailableError(message, details={"op": op, "code": code}) from exc
        except bx.NoCredentialsError as exc:
            raise ConfigError(
                "no S3 credentials: pass access_key_id/secret_access_key or set AWS_* variables",
                details={"key": "access_key_id"},
            ) from exc
        except (bx.BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailableError(
                f"S3 {op} failed: {exc}", details={"op": op, "error": type(exc).__name__}
            ) from exc

    def _info(self, key: str, head: dict[str, Any]) -> BlobInfo:
        meta = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
        created = meta.pop(_CREATED, None)
        expires = meta.pop(_EXPIRES, None)
        sha = meta.pop(_SHA, None)
        modified = head.get("LastModified")
        return BlobInfo(
            key=key,
            size=int(head.get("ContentLength", 0)),
            content_type=str(head.get("ContentType") or "application/octet-stream"),
            created=float(created) if created else (modified.timestamp() if modified else 0.0),
            expires_at=float(expires) if expires else None,
            sha256=sha or None,
            metadata=meta,
        )

    @staticmethod
    def _metadata(info: BlobInfo | Draft, sha256: str | None = None) -> dict[str, str]:
        meta = dict(info.metadata)
        meta[_CREATED] = repr(info.created)
        if info.expires_at is not None:
            meta[_EXPIRES] = repr(info.expires_at)
        if sha256 is not None:
            meta[_SHA] = sha256
        return meta

    # -- writing ------------------------------------------------------------------------

    async def _write(self, draft: Draft, chunks: AsyncGenerator[bytes, None]) -> BlobInfo:
        name = self.prefix + draft.key
        digest = Digest()
        parts = regroup(chunks, self.part_bytes)
        try:
            first = await anext(parts, b"")
            if len(first) < self.part_bytes:  # the whole blob: one PUT
                digest.update(first)
                info = draft.info(digest.size, digest.hex)
                await self._call(
                    "put_object",
                    Bucket=self.bucket,
                    Key=name,
                    Body=first,
                    ContentType=draft.content_type,
                    Metadata=self._metadata(info, info.sha256),
                )
                return info
            pending = [first]  # handed over, not kept here: one part in memory at a time
            del first
            etag = await self._multipart(name, draft, pending, parts, digest.update)
        finally:
            await parts.aclose()
        info = draft.info(digest.size, digest.hex)
        if info.size <= _MAX_COPY:
            with contextlib.suppress(_Moved):  # overwritten meanwhile: the newer write stands
                await self._call(
                    "copy_object",
                    Bucket=self.bucket,
                    Key=name,
                    CopySource={"Bucket": self.bucket, "Key": name},
                    CopySourceIfMatch=etag,
                    MetadataDirective="REPLACE",
                    ContentType=draft.content_type,
                    Metadata=self._metadata(info, info.sha256),
                )
        return info

    async def _multipart(
        self,
        name: str,
        draft: Draft,
        pending: list[bytes],
        rest: AsyncIterator[bytes],
        count: Callable[[bytes], bytes],
    ) -> str:
        """Upload the part in ``pending``, then ``rest``; return the finished object's ETag."""
        created = await self._call(
            "create_multipart_upload",
            Bucket=self.bucket,
            Key=name,
            ContentType=draft.content_type,
            Metadata=self._metadata(draft),
        )
        upload_id = created["UploadId"]
        done: list[dict[str, Any]] = []
        try:
            part: bytes | None = pending.pop()
            while part is not None:
                number = len(done) + 1
                sent = await self._call(
                    "upload_part",
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=count(part),
                )
                done.append({"ETag": sent["ETag"], "PartNumber": number})
                part = None  # let it go before the next one arrives
                part = await anext(rest, None)
            finished = await self._call(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._call(
                    "abort_multipart_upload", Bucket=self.bucket, Key=name, UploadId=upload_id
                )
            raise
        return str(finished["ETag"])

    # -- reading ------------------------------------------------------------------------

    async def _read(self, key: str, chunk_bytes: int) -> BlobReader | None:
        try:
            got = await self._call("get_object", Bucket=self.bucket, Key=self.prefix + key)
        except _Missing:
            return None
        body = got["Body"]

        async def chunks() -> AsyncGenerator[bytes, None]:
            import aiohttp
            import botocore.exceptions as bx

            try:
                while chunk := await body.read(chunk_bytes):
                    yield chunk
            except (bx.BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise StorageUnavailableError(
                    f"S3 read of {key!r} failed: {exc}", details={"key": key}
                ) from exc

        async def release() -> None:
            body.close()

        return BlobReader(self._info(key, got), chunks(), release)

    async def _head(self, key: str) -> BlobInfo | None:
        try:
            head = await self._call("head_object", Bucket=self.bucket, Key=self.prefix + key)
        except _Missing:
            return None
        return self._info(key, head)

    async def _remove(self, key: str) -> BlobInfo | None:
        info = await self._head(key)
        if info is not None:
            await self._call("delete_object", Bucket=self.bucket, Key=self.prefix + key)
        return info

    async def _scan(self, prefix: str) -> AsyncIterator[BlobInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        limit = asyncio.Semaphore(self.list_concurrency)

        async def head(key: str) -> BlobInfo | None:
            async with limit:
                return await self._head(key)

        pages = aiter(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix))
        while True:
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise StorageUnavailableError(f"S3 list failed: {exc}") from exc
            keys = [
                key
                for item in page.get("Contents", ())
                if _valid(key := str(item["Key"])[len(self.prefix) :])
            ]
            for info in await asyncio.gather(*(head(k) for k in keys)):
                if info is not None:  # deleted since the listing
                    yield info


def _valid(key: str) -> bool:
    """Whether an object of the bucket has a blob key (others' objects are skipped)."""
    try:
        check_key(key)
    except ValidationError:
        return False
    return True


class _Missing(Exception):  # noqa: N818 - internal signal, never leaves this module
    """A 404 from S3."""


class _Moved(Exception):  # noqa: N818
    """A failed precondition: the object changed since."""


class _Exists(Exception):  # noqa: N818
    """The bucket exists already."""
