"""The shape of the backend URLs in ``[kernel]``, checked when the config is read.

The backends connect lazily (a store on first use, a job queue when a module
declares a job), so a typo in a URL used to surface only then, mid-run. This
checks what can be checked without a driver or a network: a known scheme (with
a did-you-mean) and, for SQLite, a path. ``organelle check`` and every start run it.
"""

from __future__ import annotations

import difflib

__all__ = ["SCHEMES", "url_problem"]

_PG = ("postgres", "postgresql")
_REDIS = ("redis", "rediss")
SCHEMES: dict[str, tuple[str, ...]] = {
    "transport": ("memory", "nats", "tls"),
    "storage": ("memory", "sqlite", *_PG, "nats-kv", *_REDIS),
    "jobs": ("memory", "sqlite", *_PG, "nats", "tls", *_REDIS),
    "streams": ("memory", "sqlite", "nats", "tls"),
    "blobs": ("memory", "file", "s3", "nats", "tls"),
}


def url_problem(kind: str, url: str) -> str | None:
    """What is wrong with ``url`` as the ``kind`` backend's URL, or ``None``."""
    if not url:
        return None
    known = SCHEMES[kind]
    if "://" not in url:
        return f"{url!r} is not a URL (scheme://...; one of {', '.join(known)})"
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in known:
        close = difflib.get_close_matches(scheme, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}://?" if close else ""
        return f"unknown scheme {scheme!r} in {url!r} (one of {', '.join(known)}){hint}"
    if scheme == "sqlite" and (not rest.startswith("/") or not rest.strip("/")):
        return f"a SQLite URL needs a path: sqlite:///file.db, got {url!r}"
    return None
