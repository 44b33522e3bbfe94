"""The example plugins are real packages: installed by pip, loaded by name, kept to their manifest.

Each package under ``examples/plugins/`` is built into a wheel from its own
files and its ``pyproject.toml``'s entry points, installed by pip into a
folder of its own, and an app naming the plugin runs in a child Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from organelle.testing._process import free_port
from tests.plugins.wheels import build_wheel, pip_install

ROOT = Path(__file__).resolve().parents[2]
USERS = ROOT / "examples" / "plugins" / "users"
AUTOMATION = ROOT / "examples" / "plugins" / "automation"
NOTIFICATIONS = ROOT / "examples" / "plugins" / "notifications"
ANALYTICS = ROOT / "examples" / "plugins" / "analytics"

CHILD = """
import asyncio, json, sys
from organelle import Kernel

async def main() -> None:
    async with Kernel.from_config(sys.argv[1]) as kernel:
        users = kernel.module("users")
        await kernel.call("users.register", email="ann@example.com", password="correct horse")
        tokens = await kernel.call("users.login", email="ann@example.com", password="correct horse")
        claims = await kernel.call("users.verify", access_token=tokens.access_token)
        try:
            await users.call("pricing.quote", sku="A1")
            denied = ""
        except Exception as exc:
            denied = getattr(exc, "code", "")
    print(json.dumps({"module": type(users).__module__, "sub": bool(claims["sub"]), "denied": denied}))

asyncio.run(main())
"""


def _wheel_of(package: Path, out: Path) -> Path:
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    files = {
        str(p.relative_to(package)): p.read_text()
        for p in sorted(package.glob("*/**/*.py"))
        if "tests" not in p.relative_to(package).parts
    }
    return build_wheel(
        out,
        dist=project["name"],
        version=project["version"],
        files=files,
        entry_points=project["entry-points"]["organelle.modules"],
    )


AUTOMATION_CHILD = """
import asyncio, json, sys
from organelle import Kernel

async def main() -> None:
    async with Kernel.from_config(sys.argv[1]) as kernel:
        await kernel.emit("order.created", {"id": "o1"})
        await kernel.drain()
        stats = await kernel.call("automation.rules")
        module = type(kernel.module("automation")).__module__
    print(json.dumps({"module": module, "fired": stats[0].fired}))

asyncio.run(main())
"""


def _run(tmp_path: Path, site: Path, child: str, app_text: str) -> dict[str, object]:
    app = tmp_path / "app.toml"
    app.write_text(app_text)
    (tmp_path / "child.py").write_text(child)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE__")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "src")])
    done = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(app)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_the_users_plugin_installs_and_loads_by_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip_install(_wheel_of(USERS, tmp_path / "dist"), site)
    assert (site / "organelle_users" / "_module.py").is_file()
    app = (
        '[kernel]\nstorage = "memory://"\nmodules = ["users"]\n'
        '[modules.users]\nsecret = "s3cret-s3cret-s3cret-s3cret-0123456789"\n'
        "argon2_memory_kib = 1024\nargon2_time_cost = 1\nargon2_parallelism = 1\n"
    )
    out = _run(tmp_path, site, CHILD, app)
    assert out == {
        "module": "organelle_users._module",
        "sub": True,
        "denied": "organelle.plugin.denied",  # it declared no RPC targets
    }


@pytest.mark.timeout(120)
def test_the_automation_plugin_installs_and_loads_by_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip_install(_wheel_of(AUTOMATION, tmp_path / "dist"), site)
    app = (
        '[kernel]\nstorage = "memory://"\nmodules = ["automation"]\n'
        '[[modules.automation.rules]]\nname = "trail"\non = "order.*"\nemit = "audit.order"\n'
    )
    assert _run(tmp_path, site, AUTOMATION_CHILD, app) == {
        "module": "organelle_automation._module",
        "fired": 1,
    }


NOTIFICATIONS_CHILD = """
import asyncio, json, sys
from organelle import Kernel

async def main() -> None:
    async with Kernel.from_config(sys.argv[1]) as kernel:
        notifications = kernel.module("notifications")
        sent = await kernel.call("notifications.send", to="ann@example.org", template="hi",
                                 params={"name": "Ann"})
        await kernel.drain_jobs(timeout_s=20)
        record = await kernel.call("notifications.get", id=sent)
        try:
            await notifications.call("users.get", user_id="u1")
            denied = ""
        except Exception as exc:
            denied = getattr(exc, "code", "")
    print(json.dumps({"module": type(notifications).__module__, "status": record.status,
                      "denied": denied}))

asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_the_notifications_plugin_installs_and_sends_mail(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    site = tmp_path / "site"
    pip_install(_wheel_of(NOTIFICATIONS, tmp_path / "dist"), site)
    port = free_port()
    received: list[list[str]] = []

    class Inbox(Sink):
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
            received.append(list(envelope.rcpt_tos))
            return "250 OK"

    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app = (
            f'[kernel]\nstorage = "memory://"\njobs = "sqlite:///{tmp_path}/jobs.db"\n'
            'modules = ["notifications"]\n'
            f'[modules.notifications]\nsender = "shop@example.com"\nsmtp_port = {port}\n'
            '[modules.notifications.templates.hi]\nsubject = "Hi $name"\nbody = "Hello"\n'
        )
        out = _run(tmp_path, site, NOTIFICATIONS_CHILD, app)
    finally:
        controller.stop()
    assert out == {
        "module": "organelle_notifications._module",
        "status": "sent",
        "denied": "organelle.plugin.denied",  # it declared no RPC targets
    }
    assert received == [["ann@example.org"]]


ANALYTICS_CHILD = """
import asyncio, json, sys, time
from organelle import Kernel

async def main() -> None:
    async with Kernel.from_config(sys.argv[1]) as kernel:
        now = time.time()
        await kernel.emit("order.placed", {"items": 3})
        await kernel.call("analytics.count", name="orders", value=2)
        await kernel.drain()
        points = await kernel.call("analytics.query", name="orders", since=now - 60,
                                   until=now + 60, resolution="1h")
        module = type(kernel.module("analytics")).__module__
    print(json.dumps({"module": module, "total": sum(p.value for p in points)}))

asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_the_analytics_plugin_installs_and_counts(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip_install(_wheel_of(ANALYTICS, tmp_path / "dist"), site)
    app = (
        f'[kernel]\nstorage = "memory://"\njobs = "sqlite:///{tmp_path}/jobs.db"\n'
        'modules = ["analytics"]\n'
        '[[modules.analytics.counters]]\non = "order.placed"\nname = "orders"\nvalue = "items"\n'
    )
    assert _run(tmp_path, site, ANALYTICS_CHILD, app) == {
        "module": "organelle_analytics._module",
        "total": 5,
    }
