"""The kernel: a façade over named parts that run modules and connect them.

Floor 3. It imports the ground (errors, codec, context, config), the module
floor and the ports (transport, storage, jobs, streams); nothing below it
imports it. ``docs/architecture.md`` maps its parts.
"""

from organelle.kernel._kernel import Kernel, ModuleRef, kernel_of
from organelle.kernel._slots import Binder, Slot
from organelle.kernel._states import ModuleInfo, ModuleState

__all__ = ["Binder", "Kernel", "ModuleInfo", "ModuleRef", "ModuleState", "Slot", "kernel_of"]
