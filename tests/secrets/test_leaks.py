"""A resolved secret never shows: logs, errors, events, diffs, dashboard, contract, ``config show``.

Each check also asserts that the place it greps did get the line or field the
secret would have been in, so a silent empty output cannot pass it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

import pydantic
import pytest

from organelle import ConfigError, Module, rpc
from organelle.cli._config import effective
from organelle.config.secrets import MASK
from organelle.contracts import dumps, snapshot
from organelle.testing import capture, eventually
from tests.cli.proc import ROOT, run_once, spawn
from tests.dashboard.apps import API, ON, serve
from tests.ops.test_cli_ops import free_port
from tests.ops.test_ops_server import get

pytestmark = pytest.mark.timeout(60)

SECRETS = ("leak-api-key-1", "leak-api-key-2", "leak-db-password", "leak-nats-token")


class Careless(Module):
    """Everything a careless module could do with a secret: a plain str field, logging it."""

    name = "careless"
    version = "1.0.0"

    class Config(pydantic.BaseModel):
        api_key: str = ""
        password: pydantic.SecretStr = pydantic.SecretStr("")

    config: Config

    async def on_start(self) -> None:
        self.log.info("starting with key %s and config %r", self.config.api_key, self.config)

    async def on_config_changed(self, old: Config, new: Config) -> None:
        if new.api_key.endswith("-2"):
            raise RuntimeError(f"the upstream refused key {new.api_key}")

    @rpc
    async def key(self) -> str:
        return self.config.api_key


def clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked:\n{text}"


async def test_in_process_every_surface_is_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="organelle")  # conftest quiets it
    monkeypatch.setenv("LEAK_API_KEY", "leak-api-key-1")
    (tmp_path / "pw").write_text("leak-db-password")
    token = tmp_path / "token"
    token.write_text("leak-nats-token")
    modules = {
        "careless": {
            "api_key": "secret://env/LEAK_API_KEY",
            "password": f"secret://file/{tmp_path}/pw",
        },
        "gateway": {"port": 0, "dashboard": ON},
    }
    async with serve(Careless, dashboard=ON, storage="memory://") as (kernel, client):
        events = capture(kernel, "kernel.config.>")
        source: dict[str, Any] = {
            **kernel.config,
            "kernel": {
                **kernel.config["kernel"],
                "transport_options": {"x": f"secret://file/{token}"},
            },
            "modules": modules,
        }
        result = await kernel.reload_config(source)  # resolves references, the diff shows them
        assert kernel.module("careless").config.api_key == "leak-api-key-1"
        monkeypatch.setenv("LEAK_API_KEY", "leak-api-key-2")
        with pytest.raises(ConfigError) as refused:  # the module's error quotes the new key
            await kernel.reload_config(source)
        kernel.module("careless").log.warning("config is %s", kernel.config)
        api = (await client.get(f"{API}/config")).text
        shown = json.dumps(effective(kernel))
        contract = dumps(snapshot(kernel))
        await eventually(lambda: len(events) >= 2)
    assert "careless.api_key" not in str(result.restart_required)
    diff = {d["key"]: d for d in result.diff}
    assert diff["modules.careless.api_key"]["new"] == MASK
    assert diff["kernel.transport_options"]["new"] == {"x": MASK}
    assert "upstream refused key" in str(refused.value)
    assert f"refused key {MASK}" in caplog.text
    assert "config is" in caplog.text
    assert '"api_key":"**********"' in api.replace(" ", "")
    assert json.loads(shown)["modules"]["careless"]["api_key"] == MASK
    assert "careless" in contract
    for text in (caplog.text, str(refused.value), repr(result), repr(events), api, shown, contract):
        clean(text)


APP = """\
import hashlib
import pydantic
from organelle import Module, rpc

class Vaulted(Module):
    name = "vaulted"
    version = "1.0.0"

    class Config(pydantic.BaseModel):
        password: pydantic.SecretStr = pydantic.SecretStr("")
        api_key: str = ""
        marker: str = ""

    async def on_start(self):
        self._mark()

    async def on_config_changed(self, old, new):
        self.config = new
        self._mark()
        self.log.info("rotated to %s", new.api_key)

    def _mark(self):
        digest = hashlib.sha256(self.config.password.get_secret_value().encode()).hexdigest()
        with open(self.config.marker, "w") as f:
            f.write(digest)

    @rpc
    async def ping(self) -> str:
        return "pong"
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def test_organelle_run_rotates_on_sighup_and_no_output_shows_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "vaulted_app.py").write_text(APP)
    (tmp_path / "pw").write_text("leak-db-password\n")
    marker = tmp_path / "marker"
    port = free_port()
    config = tmp_path / "app.toml"
    config.write_text(
        f'[kernel]\npythonpath = ["."]\nmodules = ["vaulted_app:Vaulted"]\nops_port = {port}\n'
        'storage = "memory://"\nlog_level = "INFO"\n'
        "[modules.vaulted]\n"
        f'password = "secret://file/pw"\napi_key = "secret://env/LEAK_API_KEY"\nmarker = "{marker}"\n'
    )
    monkeypatch.setenv("LEAK_API_KEY", "leak-api-key-1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))  # this checkout, not the installed one
    code, shown, err = await run_once("config", "show", str(config))
    assert code == 0, err
    assert json.loads(shown)["modules"]["vaulted"]["password"] == MASK
    code, contract, err = await run_once("contract", "export", str(config))
    assert code == 0, err
    async with spawn("run", str(config)) as child:
        await child.wait_for("active", 30)
        await eventually(lambda: marker.read_text() == digest("leak-db-password"), timeout_s=10)
        status, body = await get(port, "/config")
        assert status == 200
        (tmp_path / "pw").write_text("leak-api-key-2")  # rotated (any new value)
        child.signal(signal.SIGHUP)
        await child.wait_for("config reloaded", 20)
        await eventually(lambda: marker.read_text() == digest("leak-api-key-2"), timeout_s=10)
        (tmp_path / "pw").unlink()  # a rotation that cannot resolve: rejected, old kept
        child.signal(signal.SIGHUP)
        rejected = await child.wait_for("config reload rejected", 20)
        assert "modules.vaulted.password" in rejected
        assert "secret://file/pw" in rejected
        assert marker.read_text() == digest("leak-api-key-2")
        child.signal(signal.SIGTERM)
        assert await child.finish() == 0
    assert "rotated to" in child.output
    for text in (shown, err, contract, body.decode(), child.output):
        clean(text)


async def test_config_show_fails_with_the_key_and_reference_when_a_reference_does_not_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEAK_ABSENT", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    config = tmp_path / "app.toml"
    config.write_text('[kernel]\nstorage = "secret://env/LEAK_ABSENT"\n')
    code, out, err = await run_once("config", "show", str(config))
    assert code == 2
    assert "kernel.storage: cannot resolve 'secret://env/LEAK_ABSENT'" in out + err
