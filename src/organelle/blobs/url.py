"""``open_blobs(url)``: pick a ``BlobStore`` backend from a config URL and open it.

==========================================================  ==================================
``memory://``                                               ``MemoryBlobStore`` (lost on exit)
``file:///var/blobs``, ``file://blobs``, ``/var/blobs``     ``FilesystemBlobStore`` (a plain
                                                            path too)
``s3://bucket[/prefix]?endpoint=…&region=…&create=true``    ``S3BlobStore``
``nats://h1:4222,h2:4222?bucket=…``                         ``NatsBlobStore`` (object store)
==========================================================  ==================================

``open_blobs`` returns the store opened (directory made, bucket checked or
created, connection up), so a wrong URL or an absent server fails there. The
drivers (aiobotocore, nats-py) are only imported for their own scheme. A NATS
URL takes credentials and TLS like every NATS backend (``NatsConnectOptions``);
S3 credentials go in keyword options or botocore's usual chain, never the URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle._extras import missing_extra
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.blobs.base import BaseBlobStore

__all__ = ["blobs_backend", "open_blobs"]

_S3_QUERY = {"endpoint": "endpoint_url", "region": "region", "prefix": "prefix"}
_S3_FLAGS = {"create": "create_bucket", "path_style": "path_style"}


async def open_blobs(url: str, **options: Any) -> BaseBlobStore:
    """Open the blob store ``url`` names and return it ready; ``options`` go to the backend.

    Use it as ``async with await open_blobs(url) as blobs:`` or close it with
    ``await blobs.close()`` (safe to call twice).

    Raises:
        ConfigError: unknown scheme, a URL the backend cannot use, a bad
            option, or (S3) a missing bucket without ``create=true``.
        StorageUnavailableError: the backend is unreachable.
    """
    store = blobs_backend(url, **options)
    try:
        await store.open()
    except BaseException:
        await store.close()
        raise
    return store


def blobs_backend(url: str, **options: Any) -> BaseBlobStore:
    """The backend ``url`` names, not yet opened (it opens on first use).

    Raises:
        ConfigError: unknown scheme, a URL the backend cannot use, a bad option.
    """
    try:
        return _blobs_backend(url, **options)
    except ImportError as exc:  # the backend's driver is an extra
        raise missing_extra(exc, f"{str(url).split('://', 1)[0]}:// URL") from exc


def _blobs_backend(url: str, **options: Any) -> BaseBlobStore:
    if not isinstance(url, str) or not url:
        raise ConfigError(
            f"blob store URL must be a non-empty str, got {url!r}", details={"key": "url"}
        )
    if "://" not in url:
        from organelle.blobs.filesystem import FilesystemBlobStore

        return FilesystemBlobStore(url, **options)
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        from organelle.blobs.memory import MemoryBlobStore

        return MemoryBlobStore(**options)
    if scheme == "file":
        from urllib.parse import unquote

        from organelle.blobs.filesystem import FilesystemBlobStore

        path = unquote(rest.split("?", 1)[0])
        if not path or path == "/":
            raise ConfigError(
                f"file blob URL needs a directory, got {url!r}", details={"key": "url"}
            )
        return FilesystemBlobStore(path, **options)
    if scheme == "s3":
        return _s3(url, options)
    if scheme in {"nats", "tls"}:
        from organelle.blobs.nats import NatsBlobStore
        from organelle.transport.nats_connect import backend_options

        connect, own = backend_options(NatsBlobStore, url, options, query_known=("bucket",))
        return NatsBlobStore(connect, **own)
    raise ConfigError(
        f"unknown blob store scheme {scheme!r}; expected memory, file, s3 or nats",
        details={"key": "url", "scheme": scheme},
    )


def _s3(url: str, options: dict[str, Any]) -> BaseBlobStore:
    from urllib.parse import parse_qs, unquote, urlsplit

    from organelle.blobs.s3 import S3BlobStore

    parts = urlsplit(url)
    if not parts.netloc:
        raise ConfigError(
            f"S3 blob URL must be s3://bucket[/prefix], got {url!r}", details={"key": "url"}
        )
    values: dict[str, Any] = {}
    path = unquote(parts.path.lstrip("/"))
    if path:
        values["prefix"] = path if path.endswith("/") else f"{path}/"
    for key, found in parse_qs(parts.query, keep_blank_values=True).items():
        value = found[-1]
        if key in _S3_QUERY:
            values[_S3_QUERY[key]] = value
        elif key in _S3_FLAGS:
            if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ConfigError(
                    f"S3 URL parameter {key}={value!r}: expected true or false",
                    details={"key": key},
                )
            values[_S3_FLAGS[key]] = value.lower() in {"true", "1", "yes"}
        else:
            expected = ", ".join(sorted([*_S3_QUERY, *_S3_FLAGS]))
            raise ConfigError(
                f"unknown S3 URL parameter {key!r}; expected one of: {expected}",
                details={"key": key},
            )
    return S3BlobStore(unquote(parts.netloc), **(values | options))
