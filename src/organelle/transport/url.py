"""Choose a transport from ``[kernel] transport``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.transport.base import Transport

__all__ = ["open_transport"]


def open_transport(settings: KernelSettings) -> Transport | None:
    """Return the transport for the settings, or ``None`` for ``memory://`` (in-process).

    Raises:
        ConfigError: unknown scheme, or the backend's extra is not installed.
    """
    url = settings.transport
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        return None
    if scheme in ("nats", "tls"):
        try:
            from organelle.transport.nats import NatsTransport
        except ImportError as exc:
            raise ConfigError(
                f"kernel.transport: {url!r} needs the NATS extra: "
                f"pip install 'organelle[nats]' ({exc})"
            ) from None
        return NatsTransport.from_settings(settings)
    raise ConfigError(
        f"kernel.transport: unknown transport {url!r}; use 'memory://' or 'nats://host:port'",
        details={"key": "kernel.transport"},
    )
