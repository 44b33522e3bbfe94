"""``FilesystemBlobStore``: blobs as files under a directory, the embedded default.

Layout, under ``root/objects/``: a blob whose key hashes (SHA-256) to ``h``
lives in the shard ``h[0:2]/h[2:4]/`` as a sidecar ``h.json`` (key, size,
type, times, SHA-256, metadata, and the name of its data file) and a data
file ``h.<nonce>.data``. Keys never become paths, so no key can escape the
root, and no directory grows past a few thousand entries.

A write streams into a fresh data file and fsyncs it, then writes the new
sidecar to a temporary file, fsyncs it and renames it over the old one (and
fsyncs the directory): that rename is the commit, so a reader sees the old
blob or the new one and a crash leaves one of them. The old data file is
removed afterwards; a reader that lost the race reads the sidecar again.
Files left by a crash mid-write are swept by ``purge_expired`` once older
than ``orphan_grace_s``. All blocking IO runs in ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import IO, Any

from organelle.blobs.base import BaseBlobStore, BlobInfo, BlobReader, Digest, Draft
from organelle.errors import BlobIntegrityError, ConfigError, StorageUnavailableError

__all__ = ["FilesystemBlobStore"]

_WRITE_BYTES = 1 << 20  # small chunks are gathered to this before a thread hop
_READ_RETRIES = 5


class FilesystemBlobStore(BaseBlobStore):
    """A ``BlobStore`` on a local directory (created on open).

    Args:
        root: the directory; relative paths are taken from the working directory.
        fsync: flush data and directory entries to disk before a write
            returns (off: faster, but a power loss may lose recent writes).
        orphan_grace_s: age after which ``purge_expired`` removes files a
            crashed write left behind.
        **options: see ``BaseBlobStore`` (``clock``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        orphan_grace_s: float = 3600.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not os.fspath(root):
            raise ConfigError("filesystem blob store needs a directory", details={"key": "root"})
        self.root = Path(root)
        self.fsync = fsync
        self.orphan_grace_s = orphan_grace_s
        self._objects = self.root / "objects"

    async def _open(self) -> None:
        try:
            await asyncio.to_thread(self._objects.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailableError(
                f"cannot create blob directory {str(self._objects)!r}: {exc}",
                details={"root": str(self.root)},
            ) from exc

    # -- paths and sidecars ----------------------------------------------------------

    def _where(self, key: str) -> tuple[Path, str]:
        name = hashlib.sha256(key.encode()).hexdigest()
        return self._objects / name[:2] / name[2:4], name

    def _load(self, shard: Path, name: str, key: str | None) -> dict[str, Any] | None:
        try:
            text = (shard / f"{name}.json").read_bytes()
        except FileNotFoundError:
            return None
        try:
            meta: dict[str, Any] = json.loads(text)
            stored_key = meta["key"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BlobIntegrityError(
                f"unreadable blob sidecar {str(shard / name)!r}.json", details={"key": key}
            ) from exc
        if key is not None and stored_key != key:
            raise BlobIntegrityError(
                f"sidecar of {key!r} holds {stored_key!r}", details={"key": key}
            )
        return meta

    @staticmethod
    def _info(meta: dict[str, Any]) -> BlobInfo:
        return BlobInfo(
            key=meta["key"],
            size=int(meta["size"]),
            content_type=meta["content_type"],
            created=float(meta["created"]),
            expires_at=meta.get("expires_at"),
            sha256=meta.get("sha256"),
            metadata=dict(meta.get("metadata") or {}),
        )

    def _sync_dir(self, path: Path) -> None:
        if self.fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- writing -----------------------------------------------------------------------

    async def _write(self, draft: Draft, chunks: AsyncGenerator[bytes, None]) -> BlobInfo:
        shard, name = self._where(draft.key)
        await asyncio.to_thread(shard.mkdir, parents=True, exist_ok=True)
        data_name = f"{name}.{secrets.token_hex(8)}.data"
        data_path = shard / data_name
        file = await asyncio.to_thread(data_path.open, "xb")
        digest = Digest()
        try:
            pending: list[bytes] = []
            held = 0
            async for chunk in chunks:
                pending.append(digest.update(chunk))
                held += len(chunk)
                if held >= _WRITE_BYTES:
                    await asyncio.to_thread(file.writelines, pending)
                    pending, held = [], 0
            await asyncio.to_thread(self._finish, file, pending)
        except BaseException:
            # Synchronous on purpose: this also runs on cancellation, where
            # awaiting a thread could be cancelled in turn.
            with contextlib.suppress(OSError, ValueError):
                file.close()
            with contextlib.suppress(OSError):
                data_path.unlink()
            raise
        info = draft.info(digest.size, digest.hex)
        meta = {
            "key": info.key,
            "size": info.size,
            "content_type": info.content_type,
            "created": info.created,
            "expires_at": info.expires_at,
            "sha256": info.sha256,
            "metadata": info.metadata,
            "data": data_name,
        }
        # Once the rename may have happened the data file is the blob's:
        # finish the commit even if the caller is cancelled meanwhile.
        commit = asyncio.ensure_future(asyncio.to_thread(self._commit, shard, name, meta))
        await asyncio.shield(commit)
        return info

    def _finish(self, file: IO[bytes], pending: list[bytes]) -> None:
        with file:
            file.writelines(pending)
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())

    def _commit(self, shard: Path, name: str, meta: dict[str, Any]) -> None:
        old = self._load(shard, name, None)
        temp = shard / f".{name}.{secrets.token_hex(8)}.tmp"
        with temp.open("xb") as file:
            file.write(json.dumps(meta).encode())
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())
        temp.replace(shard / f"{name}.json")
        self._sync_dir(shard)
        if old is not None and old.get("data") != meta["data"]:
            with contextlib.suppress(OSError):
                (shard / str(old.get("data"))).unlink()

    # -- reading -----------------------------------------------------------------------

    async def _read(self, key: str, chunk_bytes: int) -> BlobReader | None:
        found = await asyncio.to_thread(self._open_data, key)
        if found is None:
            return None
        info, file = found

        async def release() -> None:
            file.close()

        return BlobReader(info, _chunks(file, chunk_bytes), release)

    def _open_data(self, key: str) -> tuple[BlobInfo, IO[bytes]] | None:
        shard, name = self._where(key)
        for _ in range(_READ_RETRIES):
            meta = self._load(shard, name, key)
            if meta is None:
                return None
            try:
                file = (shard / str(meta["data"])).open("rb")
            except FileNotFoundError:
                continue  # overwritten since the sidecar was read: read it again
            return self._info(meta), file
        raise StorageUnavailableError(
            f"blob {key!r} kept changing while being opened", details={"key": key}
        )

    async def _head(self, key: str) -> BlobInfo | None:
        shard, name = self._where(key)
        meta = await asyncio.to_thread(self._load, shard, name, key)
        return None if meta is None else self._info(meta)

    async def _scan(self, prefix: str) -> AsyncIterator[BlobInfo]:
        for info in await asyncio.to_thread(self._list, prefix):
            yield info

    def _list(self, prefix: str) -> list[BlobInfo]:
        found: list[BlobInfo] = []
        for sidecar in self._objects.glob("*/*/*.json"):
            with contextlib.suppress(BlobIntegrityError):
                meta = self._load(sidecar.parent, sidecar.stem, None)
                if meta is not None and str(meta["key"]).startswith(prefix):
                    found.append(self._info(meta))
        found.sort(key=lambda info: info.key)
        return found

    # -- removing ----------------------------------------------------------------------

    async def _remove(self, key: str) -> BlobInfo | None:
        return await asyncio.to_thread(self._unlink, key, None)

    async def _remove_expired(self, key: str, now: float) -> bool:
        return await asyncio.to_thread(self._unlink, key, now) is not None

    def _unlink(self, key: str, expired_at: float | None) -> BlobInfo | None:
        """Remove ``key`` (only if expired at ``expired_at``, when given): sidecar first."""
        shard, name = self._where(key)
        meta = self._load(shard, name, key)
        if meta is None:
            return None
        info = self._info(meta)
        if expired_at is not None and not info.expired(expired_at):
            return None
        try:
            (shard / f"{name}.json").unlink()
        except FileNotFoundError:
            return None
        self._sync_dir(shard)
        with contextlib.suppress(OSError):
            (shard / str(meta["data"])).unlink()
        return info

    async def purge_expired(self) -> int:
        """Remove expired blobs, then files a crashed write left (older than ``orphan_grace_s``)."""
        count = await super().purge_expired()
        await asyncio.to_thread(self._sweep_orphans)
        return count

    def _sweep_orphans(self) -> None:
        cutoff = time.time() - self.orphan_grace_s  # file times are real times, whatever the clock
        for path in self._objects.glob("*/*/*"):
            if path.suffix not in {".data", ".tmp"}:
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
                name = path.name.lstrip(".").split(".", 1)[0]
                meta = self._load(path.parent, name, None)
                if meta is None or meta.get("data") != path.name:
                    path.unlink()
            except (OSError, BlobIntegrityError):
                continue


async def _chunks(file: IO[bytes], size: int) -> AsyncGenerator[bytes, None]:
    while chunk := await asyncio.to_thread(file.read, size):
        yield chunk
