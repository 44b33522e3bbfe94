"""Durable streams: partitioned, replayable logs read by consumer groups.

``StreamLog`` is the port (memory for tests, SQLite embedded, NATS JetStream
distributed), opened with ``await open_log(url)``; the kernel wires
``@consume`` handlers and ``Module.append`` to it (see docs/streams.md).
Delivery is at-least-once, in order within a partition.
"""

from __future__ import annotations

from organelle.errors import LeaseLostError, StreamNotFoundError
from organelle.streams.base import (
    Delivery,
    GroupInfo,
    PartitionInfo,
    Record,
    Start,
    StreamInfo,
    StreamLog,
    StreamSpec,
    partition_for,
)
from organelle.streams.url import open_log

__all__ = [
    "Delivery",
    "GroupInfo",
    "LeaseLostError",
    "PartitionInfo",
    "Record",
    "Start",
    "StreamInfo",
    "StreamLog",
    "StreamNotFoundError",
    "StreamSpec",
    "open_log",
    "partition_for",
]
