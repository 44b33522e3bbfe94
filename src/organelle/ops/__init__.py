"""Operations: health probes, Prometheus metrics, tracing and reload, on a small HTTP server."""

from organelle.ops.runtime import Ops
from organelle.ops.server import OpsServer, Response

__all__ = ["Ops", "OpsServer", "Response"]
