"""Health: checks with a per-check timeout, aggregated, and liveness apart from readiness."""

from organelle.health.base import CheckResult, HealthCheck, Status, as_result
from organelle.health.monitor import Health, HealthReport

__all__ = ["CheckResult", "Health", "HealthCheck", "HealthReport", "Status", "as_result"]
