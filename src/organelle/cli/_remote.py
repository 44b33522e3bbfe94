"""How the CLI reaches a running app: as a client node of its cluster, or through its files.

``--app APP.toml`` (or ``ORGANELLE_APP``) names the app; only its ``[kernel]``
section is read (no module is imported), with ``ORGANELLE__…`` variables and
``--set`` on top, as ``run`` reads it.

* With a NATS transport the CLI starts a kernel with no modules on that
  transport — a client node — and sends management calls to the ``ops``
  module every node serves (``organelle.ops.cluster.Cluster``), RPC calls and
  events like any node would.
* With the in-process default (``memory://``) nothing outside the app's
  process can reach its modules; jobs, streams and KV kept in files (SQLite)
  are read and changed there directly (``Manage.offline``), and anything
  else is refused with a hint.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from organelle.config import merge
from organelle.errors import ConfigError

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.ops.cluster import Cluster
    from organelle.ops.manage import Manage

__all__ = ["AppOption", "NodeOption", "Remote", "connect", "principal", "read_config"]

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        metavar="APP",
        envvar="ORGANELLE_APP",
        help="The app config file (app.toml); default: $ORGANELLE_APP.",
        show_default=False,
    ),
]
NodeOption = Annotated[
    str | None,
    typer.Option("--node", help="Act on this node only (default: see the command)."),
]

_CLUSTER_SCHEMES = ("nats:", "tls:")
_STATE_KEYS = ("storage", "jobs", "streams")


def read_config(app: str | None, sets: list[str]) -> tuple[dict[str, Any], Path]:
    """The app's config (file, environment, ``--set``) and its folder; no module is imported.

    Raises:
        ConfigError: no ``--app``, or a file that cannot be read.
    """
    from organelle.cli._target import is_config_file, parse_sets
    from organelle.config.loader import apply_env, load_file

    if not app:
        raise ConfigError("which app? pass --app APP.toml or set ORGANELLE_APP")
    if not is_config_file(app):
        raise ConfigError(f"--app {app!r}: expected a config file (app.toml, app.yaml)")
    config = merge(apply_env(load_file(app)), parse_sets(sets))
    return config, Path(app).resolve().parent


def principal(roles: tuple[str, ...] = ("ops",)) -> Any:
    """Who the CLI acts as: ``cli:<user>@<host>`` with ``roles``."""
    from organelle.auth import Principal

    return Principal(
        id=f"cli:{getpass.getuser()}@{socket.gethostname()}",
        type="service",
        roles=frozenset(roles),
    )


@dataclass(slots=True)
class Remote:
    """A connection to an app: ``client`` and ``cluster`` for a cluster, ``manage`` for files."""

    client: Kernel | None = None
    cluster: Cluster | None = None
    offline: Manage | None = None

    def need_cluster(self, what: str) -> tuple[Kernel, Cluster]:
        """The client node and its cluster, or a ``ConfigError`` saying why there is none."""
        if self.client is None or self.cluster is None:
            raise ConfigError(
                f"{what} needs the app's cluster: its kernel.transport is in-process "
                "(memory://); run it with kernel.transport=nats://HOST:PORT"
            )
        return self.client, self.cluster


@contextlib.asynccontextmanager
async def connect(
    app: str | None, sets: list[str], *, timeout_s: float = 10.0
) -> AsyncIterator[Remote]:
    """Join the app's cluster as a client node, or open its state files; close on exit.

    Raises:
        ConfigError: a bad config, or an in-process app whose state is in memory.
        TransportError: NATS cannot be reached.
    """
    config, base = read_config(app, sets)
    section = dict(config.get("kernel") or {})
    transport = str(section.get("transport") or "memory://")
    if transport.startswith(_CLUSTER_SCHEMES):
        async with _client(section, base, timeout_s) as remote:
            yield remote
        return
    async with _files(section, base) as remote:
        yield remote


@contextlib.asynccontextmanager
async def _client(section: dict[str, Any], base: Path, timeout_s: float) -> AsyncIterator[Remote]:
    from organelle.kernel import Kernel
    from organelle.ops.cluster import Cluster

    # a client only talks: no module, no server, no job queue, stream log or store of its own
    for key in ("modules", "pythonpath", "ops_port", "config_watch", "jobs", "streams"):
        section.pop(key, None)
    section.update(storage="memory://", persist_state=False)
    # its own name: the app's config may name its node, and two nodes of one name collide
    section["node"] = f"cli-{socket.gethostname()}-{os.getpid()}"
    client = Kernel([], {"kernel": section}, base_path=base)
    async with client:
        yield Remote(
            client=client, cluster=Cluster(client, principal=principal(), timeout_s=timeout_s)
        )


@contextlib.asynccontextmanager
async def _files(section: dict[str, Any], base: Path) -> AsyncIterator[Remote]:
    from organelle.config.settings import parse_settings
    from organelle.jobs import open_queue
    from organelle.kernel._jobhost import DEFAULT_URL as JOBS_URL
    from organelle.kernel._streamhost import DEFAULT_URL as STREAMS_URL
    from organelle.ops.manage import Manage
    from organelle.storage import open_store
    from organelle.streams.url import open_log

    section.pop("modules", None)
    settings = parse_settings(section)
    urls = {
        "storage": settings.storage,
        "jobs": settings.jobs or JOBS_URL,
        "streams": settings.streams or STREAMS_URL,
    }
    del base  # SQLite paths are relative to where the app runs, as for the app itself
    async with contextlib.AsyncExitStack() as stack:

        async def opened(kind: str, opener: Any) -> Any:
            url = urls[kind]
            if url.startswith("memory:"):
                return None  # lives in the app's process: nothing to reach from here
            port = await opener(url)
            stack.push_async_callback(port.close)
            return port

        store = await opened("storage", open_store)
        queue = await opened("jobs", open_queue)
        log = await opened("streams", open_log)
        yield Remote(offline=Manage.offline(queue=queue, store=store, log=log))
