"""Masking secrets in every config dump, diff, log line and event.

A module marks a secret by its type — a pydantic ``SecretStr`` / ``SecretBytes``
field — so masking follows the model, not a guess. The ``[kernel]`` section has
no model of secrets, so there credentials are found where they live in practice:
the password of a URL (``postgresql://user:pw@host``) and option keys named like
``password``, ``token`` or ``seed``. Values resolved from ``secret://`` references
(``organelle.secrets``) are remembered (``remember``), so they are masked wherever they
land — any section, any key name — and redacted from log lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from organelle.config._redact import redact, remember

__all__ = ["MASK", "config_dump", "dump_model", "mask", "mask_url", "redact", "remember"]

MASK = "**********"
_SECRET_WORDS = ("password", "passwd", "secret", "token", "credential", "seed", "private_key")


def is_secret(value: object) -> bool:
    """Whether ``value`` is a pydantic secret (duck-typed: pydantic is not imported here)."""
    return callable(getattr(value, "get_secret_value", None))


def _secret_key(key: object) -> bool:
    name = str(key).lower()
    return any(word in name for word in _SECRET_WORDS) or name in (
        "key",
        "keys",  # transport_options.security: signing keys
        "field_keys",
        "api_key",
        "nkey",
    )


def mask_url(url: str) -> str:
    """Replace the password of a URL by the mask (each of a comma-separated list)."""
    if "," in url:
        return ",".join(mask_url(part) for part in url.split(","))
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:{MASK}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def mask(value: Any, *, by_name: bool = False) -> Any:  # noqa: PLR0911 - one case per kind
    """Return a JSON-friendly copy of ``value`` with secrets masked.

    Args:
        value: a config value: scalars, mappings, sequences, pydantic secrets.
        by_name: also mask values under credential-like keys (for sections that
            have no model saying which fields are secret).
    """
    if is_secret(value):
        return MASK
    if isinstance(value, Mapping):
        return {
            str(k): (
                MASK
                if by_name and _secret_key(k) and v not in (None, "")
                else mask(v, by_name=by_name)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [mask(v, by_name=by_name) for v in value]
    if isinstance(value, str):
        value = redact(value)
        return mask_url(value) if "://" in value else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return str(value)


def dump_model(config: Any) -> dict[str, Any]:
    """A module's parsed config as a plain dict, secrets kept as secret objects (for comparing)."""
    if config is None:
        return {}
    dump = getattr(config, "model_dump", None)
    if callable(dump):
        result: dict[str, Any] = dump()
        return result
    return dict(config) if isinstance(config, Mapping) else {"value": config}


def settings_dump(settings: Any) -> dict[str, Any]:
    """The ``[kernel]`` settings as a plain dict (secrets not yet masked)."""
    result: dict[str, Any] = msgspec.structs.asdict(settings)
    return result


def config_dump(settings: Any, modules: Mapping[str, Any]) -> dict[str, Any]:
    """The effective config: ``[kernel]`` settings and each module's parsed section.

    Every secret is masked, so the result may be logged, served or emitted.
    """
    return {
        "kernel": mask(settings_dump(settings), by_name=True),
        "modules": {name: mask(dump_model(config)) for name, config in modules.items()},
    }
