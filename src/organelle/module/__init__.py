"""Modules: the ``Module`` base class, its decorators and what the kernel reads of it.

The second floor: it knows nothing of the kernel beyond ``KernelAPI``, the
Protocol of what a module may ask of the kernel that runs it.
"""

from organelle.module._base import KernelAPI, Module
from organelle.module._decorators import (
    ConsumeOptions,
    CronOptions,
    JobOptions,
    RpcOptions,
    SubscriptionOptions,
    consume,
    cron,
    job,
    on,
    rpc,
)
from organelle.module._describe import (
    Consumer,
    JobMethod,
    ModuleSpec,
    RpcMethod,
    Subscription,
    describe,
)

__all__ = [
    "ConsumeOptions",
    "Consumer",
    "CronOptions",
    "JobMethod",
    "JobOptions",
    "KernelAPI",
    "Module",
    "ModuleSpec",
    "RpcMethod",
    "RpcOptions",
    "Subscription",
    "SubscriptionOptions",
    "consume",
    "cron",
    "describe",
    "job",
    "on",
    "rpc",
]
