"""`organelle run` with ops: probes and metrics over HTTP, SIGHUP reloads, JSON logs."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from organelle.testing import eventually
from tests.cli.proc import ROOT, spawn

from .test_ops_server import get


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_toml(port: int, tax_rate: str) -> str:
    return (
        f"[kernel]\npythonpath = [{str(ROOT / 'examples')!r}]\n"
        f'modules = ["shop.pricing:Pricing"]\nops_port = {port}\nlog_format = "json"\n'
        f"[modules.pricing]\ntax_rate = {tax_rate}\n"
    )


async def ready(port: int) -> bool:
    """Whether the readiness probe answers 200 (``False`` while nothing listens yet)."""
    try:
        return (await get(port, "/health/ready"))[0] == 200
    except OSError:
        return False


async def tax_rate(port: int) -> str:
    status, body = await get(port, "/config")
    assert status == 200
    return str(json.loads(body)["modules"]["pricing"]["tax_rate"])


async def test_run_serves_probes_metrics_and_reloads_on_sighup(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "app.toml"
    path.write_text(app_toml(port, "0.2"))
    async with spawn("run", str(path)) as child:
        await child.wait_for("active", 30)
        await eventually(lambda: ready(port), timeout_s=20, interval_s=0.05)
        status, body = await get(port, "/metrics")
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"organelle_rpc_calls", "organelle_module_state"} <= names

        path.write_text(app_toml(port, "0.3"))
        child.signal(signal.SIGHUP)
        line = await child.wait_for("config reloaded")
        assert json.loads(line)["level"] == "info"
        assert await tax_rate(port) == "0.3"

        path.write_text(app_toml(port, "7"))  # outside 0..1: rejected
        child.signal(signal.SIGHUP)
        await child.wait_for("config reload rejected")
        assert await tax_rate(port) == "0.3"

        child.signal(signal.SIGTERM)
        assert await child.finish() == 0
