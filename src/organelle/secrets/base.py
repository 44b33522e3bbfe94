"""The secret provider port and the ``secret://`` reference it reads.

A reference is a whole config value: ``secret://<provider>/<path>[#<key>]``.
Providers are synchronous on purpose: a kernel resolves its config while it is
built (``Kernel(config)`` is not a coroutine), and a reload or a periodic
re-read runs the same resolution in a worker thread, off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from organelle.errors import ConfigError

__all__ = ["PREFIX", "SecretProvider", "SecretRef", "is_ref", "parse_ref"]

PREFIX = "secret://"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """A parsed reference; its text may be shown, never the value it resolves to.

    Attributes:
        provider: ``env``, ``file``, ``vault`` (the first path segment).
        path: what the provider looks up (a variable name, a file, a Vault path).
        key: the field of a multi-valued secret (Vault's ``#KEY``), else ``""``.
        text: the reference as written.
    """

    provider: str
    path: str
    key: str = ""
    text: str


class SecretProvider(Protocol):
    """Reads the value a reference names.

    Raises ``ConfigError`` with the reason (absent, unreadable, denied); the
    resolver adds the config key and the reference. The message must never
    carry a secret value.
    """

    def read(self, ref: SecretRef) -> str:
        """The current value of ``ref``."""
        ...


def is_ref(value: object) -> bool:
    """Whether ``value`` is a ``secret://`` reference."""
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_ref(text: str) -> SecretRef:
    """Split ``secret://provider/path#key``.

    Raises:
        ConfigError: no provider or no path.
    """
    rest = text.removeprefix(PREFIX)
    provider, _, tail = rest.partition("/")
    path, _, key = tail.partition("#")
    if not provider or not path:
        raise ConfigError(f"{text!r} is not a secret reference: expected secret://provider/path")
    return SecretRef(provider=provider, path=path, key=key, text=text)
