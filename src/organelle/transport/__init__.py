"""Transports: how a kernel reaches other nodes (none is needed in one process)."""

from organelle.transport.base import Inbound, Transport
from organelle.transport.url import in_process, open_transport

__all__ = ["Inbound", "Transport", "in_process", "open_transport"]
