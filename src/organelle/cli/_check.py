"""What ``organelle check`` lists under each module besides RPCs and events.

Jobs (with their cron schedules), stream consumers and HTTP routes: the
parts of an app that run without anyone calling them, or that the outside
calls, which a person checking a config wants to see before starting it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from organelle.module import Module, describe

__all__ = ["handlers"]


def handlers(instance: Module) -> Iterator[str]:
    """One line per job, cron entry, consumer and HTTP route of ``instance``'s module."""
    spec = describe(type(instance))
    for name, job in sorted(spec.jobs.items()):
        if job.cron is not None:
            cron = job.cron
            yield f"cron {cron.expr!r} ({cron.tz}, misfire {cron.misfire}) -> job {name}"
        else:
            yield f"job {name} (max {job.options.max_attempts} attempts)"
    for consumer in spec.consumers:
        opts = consumer.options
        group = opts.group or spec.name
        yield f"consumer {consumer.attr} <- stream {opts.stream!r} (group {group})"
    for method in sorted(spec.rpcs):
        fn: Any = getattr(type(instance), spec.rpcs[method].attr, None)
        for route in getattr(fn, "__organelle_routes__", ()):
            yield f"route {route.method} {route.path} -> {spec.name}.{method}"
