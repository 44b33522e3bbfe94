"""Transports: how a kernel reaches other nodes (none is needed in one process)."""

from organelle.transport.base import Inbound, Transport

__all__ = ["Inbound", "Transport"]
