"""Choose a transport from ``[kernel] transport``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.envelope._claim import ClaimCheck
    from organelle.transport.base import Transport

__all__ = ["in_process", "open_transport"]


def in_process(url: str) -> bool:
    """Whether ``url`` is the bare ``memory://``: a solo node, no other node to reach.

    Then every module an app requires must run in this kernel; with a shared
    transport (``memory://<name>`` included) another node may serve it.
    """
    return url == "memory://"


def open_transport(settings: KernelSettings, claims: ClaimCheck | None = None) -> Transport:
    """Return the (unconnected) transport for the settings.

    The bare ``memory://`` is a solo ``MemoryTransport`` (one process, one
    node); ``memory://<name>`` joins the in-process cluster called ``<name>``
    (tests, single-process clusters); ``nats://`` the NATS cluster. ``claims``
    is the claim-check its events' large payloads go through (the kernel's).

    Raises:
        ConfigError: unknown scheme, a bad option, or the backend's extra is not installed.
    """
    url = settings.transport
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        from organelle.transport.memory import MemoryTransport

        return MemoryTransport.from_settings(settings, claims)
    if scheme in ("nats", "tls"):
        try:
            from organelle.transport.nats import NatsTransport
        except ImportError as exc:
            raise ConfigError(
                f"kernel.transport: {url!r} needs the NATS extra: "
                f"pip install 'organelle[nats]' ({exc})"
            ) from None
        return NatsTransport.from_settings(settings, claims)
    raise ConfigError(
        f"kernel.transport: unknown transport {url!r}; use 'memory://', 'memory://<name>' or 'nats://host:port'",
        details={"key": "kernel.transport"},
    )
