"""The modules of ``bench/isolation.py``, in a file of their own: an isolated
module's child process imports its class by name, which ``__main__`` is not."""

from __future__ import annotations

from organelle import Module, rpc


class Adder(Module):
    """Runs in process."""

    name = "adder"

    @rpc
    async def add(self, a: int, b: int) -> int:
        return a + b


class IsolatedAdder(Adder):
    """The same code, run isolated (``[modules.isolated_adder] isolate = true``)."""

    name = "isolated_adder"
