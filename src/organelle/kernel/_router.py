"""Required modules served by other nodes: awaited at start, in a version every requirer accepts.

A mixin of ``Kernel``. The local graph check skips a dependency this node
does not run; here, once the transport is up, the kernel waits (within
``hook_timeout_s``) for the cluster registry to announce it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from organelle.errors import CallTimeoutError, DependencyError, LifecycleError
from organelle.module._graph import Dependency

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.kernel._lifecycle import Record
    from organelle.transport import Transport

__all__ = ["RemoteDeps"]

_monotonic = time.monotonic


class RemoteDeps:
    """``_await_remote_deps`` (state on ``Kernel``)."""

    settings: KernelSettings
    _records: dict[str, Record]
    _transport: Transport | None

    async def _await_remote_deps(self) -> None:
        """Wait (``hook_timeout_s`` in all) for each required remote module.

        Some node must serve it in a version every local module requiring it accepts.

        Raises:
            DependencyError: only versions outside a required range are served.
            LifecycleError: nobody serves a required module.
        """
        assert self._transport is not None  # noqa: S101 - called right after connect
        wanted: dict[str, list[tuple[str, Dependency]]] = {}
        for rec in self._records.values():
            for dep in rec.spec.deps:
                if not dep.optional and dep.name not in self._records:
                    wanted.setdefault(dep.name, []).append((rec.name, dep))
        deadline = _monotonic() + self.settings.hook_timeout_s
        for name in sorted(wanted):
            users = wanted[name]

            def accept(version: str, users: list[tuple[str, Dependency]] = users) -> bool:
                return all(_satisfies(dep, version) for _, dep in users)

            try:
                await self._transport.wait_for(name, max(0.0, deadline - _monotonic()), accept)
            except CallTimeoutError as exc:
                served: dict[str, str] = (exc.details or {}).get("versions") or {}
                if served:
                    blocking = [
                        (u, d)
                        for u, d in users
                        if not any(_satisfies(d, v) for v in served.values())
                    ]
                    user, dep = (blocking or users)[0]
                    listed = ", ".join(f"{v} on {n}" for n, v in sorted(served.items()))
                    raise DependencyError(
                        f"module {user!r} requires {dep}, but the cluster serves {name!r} "
                        f"only as {listed}",
                        details={"module": user, "requires": str(dep), "found": served},
                    ) from None
                raise LifecycleError(
                    f"required module {name!r} is not served by any node: {exc}",
                    details={"requires": name},
                ) from None


def _satisfies(dep: Dependency, version: str) -> bool:
    """Whether a version announced by another node is in ``dep``'s range."""
    if not dep.specifier:
        return True
    try:
        return dep.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
