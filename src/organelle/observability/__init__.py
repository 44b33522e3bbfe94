"""Logs, metrics and tracing around a kernel, built on its public seams.

Metrics, tracing and the kernel's own logs (``logs.py``) are kernel
listeners (``Kernel.listen``) — tracing also middleware on the one
invocation pipeline — never code inside the kernel.
Each submodule imports its heavy library (structlog, prometheus-client,
OpenTelemetry) itself, so importing this package costs nothing.
"""
