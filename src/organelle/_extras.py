"""Which ``pip install 'organelle[...]'`` brings a missing third-party package.

A heavy backend's driver is an extra, imported only for its own scheme or
module; when it is absent the user gets the install line that fixes it, not a
bare ``ModuleNotFoundError: No module named 'asyncpg'``.
"""

from __future__ import annotations

from organelle.errors import ConfigError

__all__ = ["EXTRA_OF", "install_hint", "missing_extra"]

EXTRA_OF: dict[str, str] = {
    "nats": "nats",
    "nkeys": "nats",
    "asyncpg": "postgres",
    "opentelemetry": "otel",
    "structlog": "ops",
    "prometheus_client": "ops",
    "watchfiles": "ops",
    "starlette": "gateway",
    "uvicorn": "gateway",
    "jwt": "gateway",
    "limits": "gateway",
    "yaml": "yaml",
    "aiobotocore": "s3",
    "botocore": "s3",
    "zstandard": "zstd",
    "cryptography": "crypto",
    "redis": "redis",
}


def install_hint(exc: BaseException) -> str | None:
    """``pip install 'organelle[x]'`` when ``exc`` (or what caused it) is a missing extra."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ImportError):
            top = (cur.name or "").partition(".")[0]
            extra = EXTRA_OF.get(top)
            if extra is not None:
                return f"pip install 'organelle[{extra}]'"
        cur = cur.__cause__ or cur.__context__
    return None


def missing_extra(exc: ImportError, what: str) -> ConfigError:
    """A ``ConfigError`` for ``what`` (a URL, a module) whose driver is not installed."""
    hint = install_hint(exc)
    fix = f": {hint}" if hint else ""
    return ConfigError(
        f"{what} needs {exc.name or 'a package that is not installed'}{fix}",
        details={"missing": exc.name, "install": hint},
    )
