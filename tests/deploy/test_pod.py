"""The pod as rendered runs: its arguments, environment and ConfigMap start the app, its
probes answer on the paths and port the manifest names, and SIGTERM ends it within the grace
period. (Loopback only: ``OPS_HOST`` is 127.0.0.1 here where the pod has 0.0.0.0.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import organelle
from organelle.deploy import plan_app, render_k8s
from organelle.deploy.k8s import CONFIG_DIR
from organelle.testing import eventually
from tests.deploy.test_k8s import ROOT
from tests.ops.test_cli_ops import free_port
from tests.ops.test_ops_server import get

pytestmark = pytest.mark.timeout(90)
SRC = Path(organelle.__file__).resolve().parents[1]


def pod_env(container: dict[str, Any], port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGANELLE__")}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = "shop-api-7d9f-x2k4q"
    env["ORGANELLE__KERNEL__OPS_HOST"] = "127.0.0.1"
    env["ORGANELLE__KERNEL__OPS_PORT"] = str(port)
    # The image has organelle installed and APP_DIR (examples) on PYTHONPATH; here: the
    # organelle this test imported (not whichever the venv points at), and the examples.
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT / "examples")])
    return env


async def test_the_rendered_pod_starts_answers_its_probes_and_stops_in_its_grace_period(
    tmp_path: Path,
) -> None:
    plan = plan_app(ROOT / "examples/shop/app.toml", groups=None)
    objects = render_k8s(plan)
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    etc, data = tmp_path / "etc", tmp_path / "data"
    etc.mkdir()
    data.mkdir()
    for name, text in config_map["data"].items():  # the ConfigMap, mounted
        (etc / name).write_text(text, encoding="utf-8")
    etc.chmod(0o555)  # mounted read-only: nothing may be written beside the config
    args = [a.replace(CONFIG_DIR, str(etc)) for a in container["args"]]
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "organelle.cli", *args,
        cwd=data, env=pod_env(container, port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        ready = container["readinessProbe"]["httpGet"]["path"]
        live = container["livenessProbe"]["httpGet"]["path"]

        async def answers() -> bool:
            try:
                return (await get(port, ready))[0] == 200
            except OSError:
                return False

        await eventually(answers, timeout_s=30, interval_s=0.1)
        assert (await get(port, live))[0] == 200
        status, body = await get(
            port, deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        )
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"organelle_job_queue_depth", "organelle_stream_lag", "process_cpu_seconds"} <= names
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # what the kubelet sends after the preStop hook
        budget = pod["terminationGracePeriodSeconds"] - plan.options.pre_stop_s
        output, _ = await asyncio.wait_for(proc.communicate(), budget)
        assert proc.returncode == 0, output.decode()
        assert time.monotonic() - began < budget
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
        etc.chmod(0o755)  # let pytest clean up
