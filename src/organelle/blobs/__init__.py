"""Blobs: large binary objects behind one ``BlobStore`` port.

Open one from a URL (``await open_blobs("file:///var/blobs")``) or construct a
backend directly; see ``docs/blobs.md``. Backends are imported on first access,
so ``import organelle`` never pulls in aiobotocore or nats-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle.blobs.base import BaseBlobStore, BlobInfo, BlobReader, BlobStore
from organelle.blobs.url import open_blobs
from organelle.errors import BlobIntegrityError, BlobNotFoundError

if TYPE_CHECKING:
    from organelle.blobs.filesystem import FilesystemBlobStore
    from organelle.blobs.memory import MemoryBlobStore
    from organelle.blobs.nats import NatsBlobStore
    from organelle.blobs.s3 import S3BlobStore

__all__ = [
    "BaseBlobStore",
    "BlobInfo",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobReader",
    "BlobStore",
    "FilesystemBlobStore",
    "MemoryBlobStore",
    "NatsBlobStore",
    "S3BlobStore",
    "open_blobs",
]

_LAZY = {
    "FilesystemBlobStore": "organelle.blobs.filesystem",
    "MemoryBlobStore": "organelle.blobs.memory",
    "NatsBlobStore": "organelle.blobs.nats",
    "S3BlobStore": "organelle.blobs.s3",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'organelle.blobs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
