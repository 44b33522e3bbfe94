"""Logs, metrics and tracing around a kernel, built on its public seams.

Metrics and tracing are middleware on dispatch plus listeners on kernel
events, never code inside the kernel. Each submodule imports its heavy
library (structlog, prometheus-client, OpenTelemetry) itself, so importing
this package costs nothing.
"""
