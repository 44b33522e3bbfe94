"""App configuration: files, environment overrides and kernel settings."""

from organelle.config.loader import apply_env, import_object, load_file, merge
from organelle.config.policy import (
    BreakerPolicy,
    BulkheadPolicy,
    CallRetryPolicy,
    Policy,
    RateLimitPolicy,
)
from organelle.config.settings import KernelSettings, parse_settings

__all__ = [
    "BreakerPolicy",
    "BulkheadPolicy",
    "CallRetryPolicy",
    "KernelSettings",
    "Policy",
    "RateLimitPolicy",
    "apply_env",
    "import_object",
    "load_file",
    "merge",
    "parse_settings",
]
