"""Errors to HTTP: one table, and 500s that carry an id instead of internals.

Status by error class (an error class may set ``http_status`` for its own)::

    ValidationError        422  with the field list
    UnauthenticatedError   401  with WWW-Authenticate
    ForbiddenError         403
    NotFoundError          404
    PayloadTooLargeError   413
    RateLimitedError       429  with Retry-After
    CallTimeoutError       504
    UnavailableError       503
    anything else          500  {"code": "organelle.internal", "id": ...}; logged with the id
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec

from organelle.errors import (
    CallTimeoutError,
    ForbiddenError,
    NotFoundError,
    OrganelleError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)

__all__ = [
    "error_response",
    "status_of",
]

log = logging.getLogger("organelle.gateway")
_encode = msgspec.json.Encoder().encode


_STATUS: tuple[tuple[type[OrganelleError], int], ...] = (
    (ValidationError, 422),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (CallTimeoutError, 504),
    (UnavailableError, 503),
)
_SHOW_DETAILS = frozenset({422, 429, 413})


def status_of(exc: BaseException) -> int:
    """The HTTP status for an exception (500 for anything unexpected)."""
    own = getattr(type(exc), "http_status", None)
    if isinstance(own, int) and isinstance(exc, OrganelleError):
        return own
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: BaseException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, extra headers and JSON body for ``exc``; 500s are logged under a fresh id."""
    status = status_of(exc)
    headers: list[tuple[bytes, bytes]] = []
    if status >= 500 and status not in (503, 504):  # noqa: PLR2004 - 5xx that are our fault
        error_id = os.urandom(8).hex()
        log.error("request failed [error id %s]", error_id, exc_info=exc)
        body: dict[str, Any] = {
            "code": "organelle.internal",
            "message": "internal error",
            "id": error_id,
        }
        return 500, headers, _encode({"error": body})
    assert isinstance(exc, OrganelleError)  # noqa: S101 - only organelle errors map below 500
    body = {"code": exc.code, "message": exc.message}
    if status in _SHOW_DETAILS or (
        getattr(type(exc), "http_status", None) is not None and exc.details
    ):
        body["details"] = exc.details
    if isinstance(exc, RateLimitedError):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    elif status == 401:  # noqa: PLR2004
        headers.append((b"www-authenticate", b'Bearer realm="organelle"'))
    try:
        payload = _encode({"error": body})
    except (TypeError, ValueError):  # details a handler filled with something unencodable
        payload = _encode({"error": {"code": exc.code, "message": exc.message}})
    return status, headers, payload
