"""``Ops``: metrics, tracing, health, config reload and the ops HTTP server for one kernel.

One object wires what ``[kernel]`` asks for onto a kernel through its public
seams (middleware, event taps, the store hook), so ``organelle run`` and a
hand-built app get the same operations. Order matters and is handled here:
``install()`` before ``kernel.start()`` (so startup is measured and traced),
``start()`` before it too (probes answer "starting" rather than nothing), and
``stop()`` after ``kernel.stop()`` (probes answer "draining" meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from organelle.errors import ConfigError
from organelle.health import Health
from organelle.ops.server import ApiHandler, OpsServer, Response

if TYPE_CHECKING:
    from organelle.kernel import Kernel
    from organelle.observability.metrics import Metrics

__all__ = ["Ops"]

log = logging.getLogger("organelle.ops")
_UNSET: Any = object()


class Ops:
    """Operations around one kernel.

    Args:
        kernel: the kernel (not started yet).
        port: ops HTTP port; default ``[kernel] ops_port`` (``None``: no server).
        host: bind address; default ``[kernel] ops_host``.
        metrics: collect metrics; default ``[kernel] metrics``.
        tracing: trace; default ``[kernel] tracing``.
        tracer: an OpenTelemetry tracer to use instead of the configured one.
        config_path: the config file to watch when ``[kernel] config_watch``.

    Example::

        async with Ops(kernel, port=0) as ops, kernel:
            ...                                   # GET http://127.0.0.1:{ops.port}/metrics
    """

    def __init__(
        self,
        kernel: Kernel,
        *,
        port: int | None = _UNSET,
        host: str | None = None,
        metrics: bool | None = None,
        tracing: bool | None = None,
        tracer: Any = None,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        settings = kernel.settings
        self.kernel = kernel
        self.health = Health(kernel)
        self.metrics: Metrics | None = None
        self._port = settings.ops_port if port is _UNSET else port
        self._host = host or settings.ops_host
        self._want_metrics = settings.metrics if metrics is None else metrics
        self._want_tracing = settings.tracing if tracing is None else tracing
        self._tracer = tracer
        self._config_path = config_path if settings.config_watch else None
        self.server: OpsServer | None = None
        self._installed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()

    @property
    def port(self) -> int | None:
        """The ops server's bound port, or ``None`` when it is off."""
        return self.server.port if self.server is not None else None

    def install(self) -> None:
        """Add logs, metrics and tracing to the kernel (idempotent; before ``kernel.start()``).

        Raises:
            ConfigError: tracing asked for without the ``otel`` extra installed.
        """
        if self._installed:
            return
        self._installed = True
        from organelle.observability.logs import SlowCallLog, StateLog

        self.kernel.listen(StateLog())
        slow_s = self.kernel.settings.slow_call_s
        if slow_s is not None:
            self.kernel.listen(SlowCallLog(slow_s))
        if self._want_metrics:
            from organelle.observability.metrics import Metrics

            self.metrics = Metrics(self.kernel)
            self.metrics.install()
        if self._want_tracing:
            try:
                from organelle.observability.tracing import Tracing, make_tracer
            except ImportError as exc:
                raise ConfigError(
                    f"kernel.tracing needs OpenTelemetry: pip install 'organelle[otel]' ({exc})"
                ) from None
            Tracing(self.kernel, self._tracer or make_tracer(self.kernel.settings)).install()

    async def start(self) -> None:
        """Install, then start the HTTP server and the config watcher when configured."""
        self.install()
        api = await self._manage()
        if self._port is not None:
            self.server = OpsServer(
                {
                    "/health/live": self._live,
                    "/health/ready": self._ready,
                    "/health": self._ready,
                    "/metrics": self._metrics,
                    "/config": self._config,
                },
                host=self._host,
                port=self._port,
                api=api,
            )
            await self.server.start()
        if self._config_path is not None:
            from organelle.kernel._watch import watch_config

            self._spawn(watch_config(self.kernel, self._config_path, stop=self._stop))

    async def _manage(self) -> ApiHandler:
        """The management API (``/manage``), and the ``ops`` module when nodes share a transport.

        Raises:
            ConfigError: a bad ``[ops]`` section.
        """
        from organelle.errors import DefinitionError
        from organelle.ops._manage_http import ManageApi, OpsSection
        from organelle.ops.cluster import Cluster
        from organelle.ops.manage import MODULE_NAME, Manage

        kernel = self.kernel
        section = OpsSection.of(kernel.config)
        cluster = None
        if section.manage and not kernel.transport.solo:
            from organelle.ops._manage_rpc import OpsModule

            module = OpsModule()
            module.health_source = self.health
            try:
                await kernel.add_module(module)
                cluster = Cluster(kernel)
            except DefinitionError:
                log.warning(
                    "management over the cluster is off: the app has a module named %r",
                    MODULE_NAME,
                )
        return ManageApi(Manage(kernel, health=self.health), section, cluster=cluster)

    async def stop(self) -> None:
        """Stop the server and the watcher; never raises."""
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def request_reload(self) -> asyncio.Task[Any]:
        """Reload the config in the background (what SIGHUP does); failures are logged."""
        return self._spawn(self._reload())

    async def _reload(self) -> None:
        with contextlib.suppress(ConfigError):  # logged and announced by the reload itself
            await self.kernel.reload_config()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # endpoints -------------------------------------------------------------------
    async def _live(self) -> Response:
        return _json(200, self.health.live())

    async def _ready(self) -> Response:
        report = await self.health.report()
        return _json(200 if report.ready else 503, report.to_json())

    async def _metrics(self) -> Response:
        if self.metrics is None:
            return Response(404, b"metrics are off\n", "text/plain; charset=utf-8")
        from organelle.observability.metrics import CONTENT_TYPE

        await self.metrics.refresh()
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    async def _config(self) -> Response:
        return _json(200, self.kernel.config_dump())


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body, default=str).encode())
