"""The ``ops`` module: ``Manage`` served as RPC on every clustered node, for the ``ops`` role.

``Ops`` adds it to a kernel whose transport reaches other nodes, so any node
or the CLI (a client node with no modules) calls ``ops.<operation>`` on one
node by name (``transport.request(..., node=NAME)``) or on each in turn. The
role is checked by the kernel on every call path: through the gateway a JWT
must carry it; over NATS the caller's principal travels in the message, so
NATS credentials (and TLS) are what keeps strangers out of the cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from organelle._version import __version__
from organelle.kernel import kernel_of
from organelle.module import Module, rpc
from organelle.ops.manage import MODULE_NAME, Manage

if TYPE_CHECKING:
    from organelle.health import Health

__all__ = ["OPS_ROLE", "OpsModule"]

OPS_ROLE = "ops"
_OPS = (OPS_ROLE,)


class OpsModule(Module):
    """Management operations of this node (see ``organelle.ops.manage.Manage``)."""

    name = MODULE_NAME
    version = __version__.split("+")[0].split(".dev")[0]
    health_source: Health | None = None

    @property
    def manage(self) -> Manage:
        """The operations, bound to this node's kernel."""
        known: Manage | None = self.__dict__.get("_manage")
        if known is None:
            known = Manage(kernel_of(self), health=self.health_source)
            self.__dict__["_manage"] = known
        return known

    @rpc(roles=_OPS)
    async def modules(self) -> list[dict[str, Any]]:
        """Every module of this node."""
        return self.manage.modules()

    @rpc(roles=_OPS)
    async def load(self, path: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Import and start a module."""
        return await self.manage.load(path, config)

    @rpc(roles=_OPS)
    async def unload(self, name: str, cascade: bool = False) -> dict[str, Any]:
        """Stop and remove a module."""
        return await self.manage.unload(name, cascade=cascade)

    @rpc(roles=_OPS)
    async def restart(self, name: str) -> dict[str, Any]:
        """Replace a module by a fresh instance."""
        return await self.manage.restart(name)

    @rpc(roles=_OPS)
    async def reload(self, name: str) -> dict[str, Any]:
        """Re-import a module's code and swap it in."""
        return await self.manage.reload(name)

    @rpc(name="config", roles=_OPS)  # ``config`` and ``health`` are a module's own attributes
    async def config_show(self) -> dict[str, Any]:
        """The effective config, masked."""
        return self.manage.config()

    @rpc(roles=_OPS)
    async def config_reload(self) -> dict[str, Any]:
        """Re-read and apply the config file."""
        return await self.manage.config_reload()

    @rpc(roles=_OPS)
    async def config_diff(self) -> dict[str, Any]:
        """What a reload would change."""
        return await self.manage.config_diff()

    @rpc(name="health", roles=_OPS)
    async def health_report(self) -> dict[str, Any]:
        """The readiness report."""
        return await self.manage.health()

    @rpc(roles=_OPS)
    async def jobs(
        self, state: str | None = None, name: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Jobs by state and name."""
        return await self.manage.jobs(state=state, name=name, limit=limit, offset=offset)

    @rpc(roles=_OPS)
    async def job(self, job_id: str) -> dict[str, Any]:
        """One job."""
        return await self.manage.job(job_id)

    @rpc(roles=_OPS)
    async def job_retry(self, job_id: str) -> dict[str, Any]:
        """Queue a finished job again."""
        return await self.manage.job_retry(job_id)

    @rpc(roles=_OPS)
    async def job_cancel(self, job_id: str) -> dict[str, Any]:
        """Delete a waiting job."""
        return await self.manage.job_cancel(job_id)

    @rpc(roles=_OPS)
    async def dead_purge(self, job_ids: list[str] | None = None) -> dict[str, Any]:
        """Delete dead jobs."""
        return await self.manage.dead_purge(job_ids)

    @rpc(roles=_OPS)
    async def queues(self) -> dict[str, Any]:
        """Backlog and paused names."""
        return await self.manage.queues()

    @rpc(roles=_OPS)
    async def queue_pause(self, names: list[str] | None = None) -> dict[str, Any]:
        """Pause job names on this node."""
        return self.manage.queue_pause(names)

    @rpc(roles=_OPS)
    async def queue_resume(self, names: list[str] | None = None) -> dict[str, Any]:
        """Resume job names on this node."""
        return self.manage.queue_resume(names)

    @rpc(roles=_OPS)
    async def streams(self) -> list[str]:
        """Streams this node knows."""
        return self.manage.streams()

    @rpc(roles=_OPS)
    async def stream(self, stream: str) -> dict[str, Any]:
        """A stream's layout and groups."""
        return await self.manage.stream(stream)

    @rpc(roles=_OPS)
    async def stream_seek(self, stream: str, group: str, to: int | str) -> dict[str, Any]:
        """Move a group's position."""
        return await self.manage.stream_seek(stream, group, to)

    @rpc(roles=_OPS)
    async def stream_dead(self, stream: str, group: str, limit: int = 100) -> list[dict[str, Any]]:
        """A group's dead letters."""
        return await self.manage.stream_dead(stream, group, limit)

    @rpc(roles=_OPS)
    async def kv_get(self, key: str) -> dict[str, Any]:
        """Read a key."""
        return await self.manage.kv_get(key)

    @rpc(roles=_OPS)
    async def kv_put(self, key: str, value: Any, ttl_s: float | None = None) -> dict[str, Any]:
        """Write a key."""
        return await self.manage.kv_put(key, value, ttl_s)

    @rpc(roles=_OPS)
    async def kv_delete(self, key: str) -> dict[str, Any]:
        """Delete a key."""
        return await self.manage.kv_delete(key)

    @rpc(roles=_OPS)
    async def kv_scan(
        self, prefix: str = "", limit: int = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of keys."""
        return await self.manage.kv_scan(prefix, limit=limit, cursor=cursor)
