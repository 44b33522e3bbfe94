"""The kernel: a façade over named parts that run modules and connect them.

Floor 3. It imports the ground (errors, codec, context, config), the module
floor and the ports (transport, storage, jobs, streams); nothing below it
imports it. ``docs/architecture.md`` maps its parts.

Every unit of work (an RPC call served or sent, an event delivery, a job run,
a stream record, a gateway HTTP request) is an ``Invocation`` run through one
middleware onion (``build_chain``, ``run_invocation``). Observers watch a
kernel through ``Kernel.listen(listener)``: subclass ``BaseListener`` and
override the ``on_*`` methods you care about; each gets one frozen report
(``CallReport``, ``EventReport``...).
"""

from organelle.kernel._dispatch import (
    CallNext,
    Invocation,
    Middleware,
    build_chain,
    run_invocation,
)
from organelle.kernel._kernel import Kernel, ModuleRef, kernel_of
from organelle.kernel._listen import (
    BaseListener,
    CallReport,
    ConnectionReport,
    EventReport,
    JobReport,
    LifecycleReport,
    Listener,
    RecordReport,
    StoreReport,
)
from organelle.kernel._slots import Binder, Slot
from organelle.kernel._states import ModuleInfo, ModuleState

__all__ = [
    "BaseListener",
    "Binder",
    "CallNext",
    "CallReport",
    "ConnectionReport",
    "EventReport",
    "Invocation",
    "JobReport",
    "Kernel",
    "LifecycleReport",
    "Listener",
    "Middleware",
    "ModuleInfo",
    "ModuleRef",
    "ModuleState",
    "RecordReport",
    "Slot",
    "StoreReport",
    "build_chain",
    "kernel_of",
    "run_invocation",
]
