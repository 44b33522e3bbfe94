"""Operations: health probes, Prometheus metrics, tracing and reload, on a small HTTP server.

The management API lives in ``organelle.ops.manage`` (``Manage``: the
operations) and ``organelle.ops.cluster`` (``Cluster``: the same on any node
of the cluster); ``Ops`` serves it under ``/manage`` and, on a clustered
node, as the ``ops`` module (docs/operations.md).
"""

from organelle.ops.runtime import Ops
from organelle.ops.server import OpsServer, Response

__all__ = ["Ops", "OpsServer", "Response"]
