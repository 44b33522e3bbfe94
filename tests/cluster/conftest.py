"""Cluster tests run real `organelle` processes against servers they start themselves."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def prefix() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def cluster_sets(url: str, prefix: str) -> list[str]:
    """``--set`` arguments that make an `organelle run` process a node of the test's cluster."""
    return [
        "--set",
        f"kernel.transport={url}",
        "--set",
        f"kernel.transport_options.prefix={prefix}",
        "--set",
        "kernel.transport_options.heartbeat_s=0.2",
        "--set",
        "kernel.transport_options.registry_ttl_s=1.0",
        "--set",
        "kernel.drain_timeout_s=2",
    ]
