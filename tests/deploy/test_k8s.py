"""``organelle deploy k8s``: manifests that Kubernetes' own schemas accept, and what they say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from organelle import Kernel
from organelle.cli import app
from organelle.deploy import NodeGroup, lag_query, plan_app, queue_query
from organelle.errors import ConfigError
from organelle.observability.metrics import Metrics
from tests.deploy.apps import Billing, Ledger

ROOT = Path(__file__).resolve().parents[2]
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda-scaledobject.schema.json").read_text())
K8S_VERSION = kubernetes_validate.utils.latest_version()
runner = CliRunner()

Manifest = dict[str, Any]


def write_app(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "app.toml"
    path.write_text(
        f"""
[kernel]
app = "billing-app"
pythonpath = [{str(ROOT)!r}]
modules = ["tests.deploy.apps:Billing", "tests.deploy.apps:Ledger", "tests.deploy.apps:Front"]
transport = "nats://nats.default.svc:4222"
transport_options = {{ token = "secret://env/NATS_TOKEN" }}
storage = "postgresql://app@db.default.svc/app"
drain_timeout_s = 12.5
hook_timeout_s = 4

[modules.front]
port = 8081
db_password = "secret://env/DB_PASSWORD"
{extra}""",
        encoding="utf-8",
    )
    return path


def deploy(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["deploy", "k8s", *map(str, args)], prog_name="organelle")
    return result.exit_code, result.stdout, result.stderr


def load(folder: Path) -> dict[tuple[str, str], Manifest]:
    found: dict[tuple[str, str], Manifest] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "values.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def validate(obj: Manifest) -> None:
    """Kubernetes' schema (strict) for built-in kinds; the KEDA schema for a ScaledObject."""
    if obj["kind"] == "ScaledObject":
        jsonschema.validate(obj, KEDA_SCHEMA)
        with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # why we bring our own
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def containers(objects: dict[tuple[str, str], Manifest]) -> list[Manifest]:
    return [
        c
        for (kind, _), obj in objects.items()
        if kind == "Deployment"
        for c in obj["spec"]["template"]["spec"]["containers"]
    ]


def env(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# the shop example: what the issue requires ----------------------------------------


def test_shop_manifests_pass_strict_validation_with_probes_a_service_and_a_configmap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = deploy("examples/shop/app.toml", "--out", tmp_path)
    assert code == 0, err
    files = sorted(tmp_path.glob("*.yaml"))
    assert sorted(out.split()) == sorted(map(str, files))
    validator = Path(sys.executable).with_name("kubernetes-validate")
    checked = subprocess.run(  # the command the issue names, on the files as written
        [str(validator), "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(" passed ") == len(files)
    objects = load(tmp_path)
    kinds = sorted(kind for kind, _ in objects)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    for c in containers(objects):
        assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "ops"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "ops"}
        assert c["startupProbe"]["httpGet"] == {"path": "/health/ready", "port": "ops"}
        assert {"name": "ops", "containerPort": 9000, "protocol": "TCP"} in c["ports"]
        assert env(c)["ORGANELLE__KERNEL__OPS_PORT"] == "9000"
        assert c["args"] == ["run", "/etc/organelle/app.toml"]  # one group: every module
    config = objects[("ConfigMap", "shop-config")]
    text = (ROOT / "examples/shop/app.toml").read_text(encoding="utf-8")
    assert config["data"] == {"app.toml": text}
    assert "transport is 'memory://'" in err  # told, not refused


def test_the_ops_paths_are_the_ones_the_ops_server_serves() -> None:
    from organelle.deploy.k8s import LIVE_PATH, METRICS_PATH, READY_PATH

    source = (ROOT / "src/organelle/ops/runtime.py").read_text(encoding="utf-8")
    for path in (LIVE_PATH, READY_PATH, METRICS_PATH):
        assert f'"{path}": self.' in source


# groups, ports, secrets, shutdown ----------------------------------------------------


def test_each_group_is_a_deployment_running_only_its_modules(tmp_path: Path) -> None:
    path = write_app(tmp_path)
    out = tmp_path / "out"
    code, _, err = deploy(path, "--out", out, "--only", "workers=billing,ledger", "--only", "front")
    assert code == 0, err
    assert err.count("note:") == 0  # NATS and PostgreSQL: nothing to warn about
    objects = load(out)
    for obj in objects.values():
        validate(obj)
    workers = objects[("Deployment", "billing-app-workers")]["spec"]["template"]["spec"]
    front = objects[("Deployment", "billing-app-front")]["spec"]["template"]["spec"]
    assert workers["containers"][0]["args"][-2:] == ["--only", "billing,ledger"]
    assert front["containers"][0]["args"][-2:] == ["--only", "front"]
    # The module with a port of its own is reachable: bound to the pod, on the Service.
    assert env(front["containers"][0])["ORGANELLE__MODULES__FRONT__HOST"] == "0.0.0.0"  # noqa: S104
    assert "ORGANELLE__MODULES__FRONT__HOST" not in env(workers["containers"][0])
    service = objects[("Service", "billing-app-front")]["spec"]
    assert service["ports"] == [
        {"name": "ops", "port": 9000, "targetPort": "ops"},
        {"name": "front", "port": 8081, "targetPort": "front"},
    ]
    assert service["selector"] == {
        "app.kubernetes.io/name": "billing-app",
        "app.kubernetes.io/component": "front",
    }
    pdb = objects[("PodDisruptionBudget", "billing-app-front")]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": service["selector"]}}


def test_grace_period_covers_the_prestop_wait_the_drain_and_the_stop_hooks(
    tmp_path: Path,
) -> None:
    path = write_app(tmp_path, "\n[deploy.k8s]\npre_stop_s = 3\n")
    code, _, err = deploy(path, "--out", tmp_path / "out")
    assert code == 0, err
    (deployment,) = [o for (k, _), o in load(tmp_path / "out").items() if k == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    # preStop 3 + drain_timeout_s 12.5 rounded up + hook_timeout_s 4 + 5 to exit
    assert pod["terminationGracePeriodSeconds"] == 3 + 13 + 4 + 5
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "3"]}}}


def test_secret_references_stay_references_and_env_ones_read_a_kubernetes_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", "hunter2-never-written")
    path = write_app(tmp_path)
    code, _, err = deploy(path, "--out", tmp_path / "out", "--secret", "billing-creds")
    assert code == 0, err
    written = "".join(p.read_text() for p in (tmp_path / "out").glob("*.yaml"))
    assert "hunter2" not in written
    objects = load(tmp_path / "out")
    assert (
        'db_password = "secret://env/DB_PASSWORD"'
        in objects[("ConfigMap", "billing-app-config")]["data"]["app.toml"]
    )
    (container,) = containers(objects)
    got = env(container)
    for var in ("DB_PASSWORD", "NATS_TOKEN"):
        assert got[var] == {"secretKeyRef": {"name": "billing-creds", "key": var}}


# autoscaling -------------------------------------------------------------------------


def test_a_group_with_jobs_or_streams_gets_a_scaled_object_and_no_hpa(tmp_path: Path) -> None:
    path = write_app(tmp_path)
    code, _, err = deploy(path, "--out", tmp_path / "out", "--only", "workers=billing,ledger",
                          "--only", "web=front", "--prometheus", "http://prom.mon.svc:9090",
                          "--min-replicas", "1", "--max-replicas", "7")  # fmt: skip
    assert code == 0, err
    objects = load(tmp_path / "out")
    for obj in objects.values():
        validate(obj)
    assert ("HorizontalPodAutoscaler", "billing-app-workers") not in objects
    assert ("ScaledObject", "billing-app-web") not in objects
    hpa = objects[("HorizontalPodAutoscaler", "billing-app-web")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 7)
    scaled = objects[("ScaledObject", "billing-app-workers")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "billing-app-workers"
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 7)
    by_name = {t.get("name", t["type"]): t for t in scaled["triggers"]}
    assert sorted(by_name) == ["cpu", "queue-depth", "stream-lag"]
    queue = by_name["queue-depth"]["metadata"]
    assert queue["serverAddress"] == "http://prom.mon.svc:9090"
    assert queue["query"] == queue_query(("billing.charge",))
    assert queue["threshold"] == "100"
    assert by_name["stream-lag"]["metadata"]["query"] == lag_query(("billing", "ledger"))
    # An autoscaler owns the replica count: the Deployment does not set it.
    for (kind, _), obj in objects.items():
        if kind == "Deployment":
            assert "replicas" not in obj["spec"]


def test_autoscaler_none_sets_the_replica_count(tmp_path: Path) -> None:
    path = write_app(tmp_path)
    code, _, err = deploy(
        path, "--out", tmp_path / "out", "--autoscaler", "none", "--replicas", "3"
    )
    assert code == 0, err
    objects = load(tmp_path / "out")
    assert sorted(k for k, _ in objects) == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ]
    (deployment,) = [o for (k, _), o in objects.items() if k == "Deployment"]
    assert deployment["spec"]["replicas"] == 3


def _selector(query: str) -> tuple[str, str, re.Pattern[str]]:
    """Metric, label and regex of ``sum(max by (...) (metric{label=~"regex"}))``."""
    match = re.search(r'(\w+)\{(\w+)=~"((?:[^"\\]|\\.)*)"\}', query)
    assert match is not None, query
    regex = match.group(3).replace("\\\\", "\\")  # the PromQL string's own escaping
    return match.group(1), match.group(2), re.compile(regex)


async def test_the_queries_select_what_a_kernel_exports(tmp_path: Path) -> None:
    kernel = Kernel(
        [Billing, Ledger],
        {"kernel": {"jobs": "memory://", "job_worker": False,
                    "streams": f"sqlite:///{tmp_path}/s.db", "storage": "memory://"}},
    )  # fmt: skip
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        for n in range(3):
            await kernel.append("orders", f"o{n}")
        await kernel.drain_streams(timeout_s=10)  # each record enqueued a charge; no worker runs
        await metrics.refresh()
        text = metrics.render().decode()
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    plan = plan_app(write_app(tmp_path), groups=(NodeGroup.parse("w=billing,ledger"),))
    (group,) = plan.groups
    for query, want in ((queue_query(group.jobs), 3.0), (lag_query(group.consumer_groups), 0.0)):
        metric, label, regex = _selector(query)
        exported = [
            s
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == metric
        ]
        assert exported, f"{metric} is not exported"
        picked = [s for s in exported if regex.fullmatch(s.labels[label])]
        assert picked, (query, [s.labels for s in exported])
        assert sum(s.value for s in picked) == want
    assert samples["organelle_job_queue_depth"].labels == {"queue": "billing.charge"}
    _, _, jobs = _selector(queue_query(("billing.charge",)))
    assert not jobs.fullmatch("billingXcharge")  # the dot is escaped, not a wildcard
    _, _, groups = _selector(lag_query(("billing", "ledger")))
    assert {g for g in ("billing", "ledger", "billing2") if groups.fullmatch(g)} == {
        "billing",
        "ledger",
    }


CONTROLLER_APP = """
[kernel]
app = "billing-app"
pythonpath = [{root!r}]
modules = ["tests.deploy.apps:Billing", "tests.deploy.apps:Front",
           "organelle.scaling:ScalingController"]
transport = "nats://nats.default.svc:4222"
storage = "postgresql://app@db.default.svc/app"

[[modules.scaling.targets]]
name = "billing-app-workers"
metrics = ["http://billing-app-workers:9000/metrics"]
rules = [{{ metric = "queue_depth", up_above = 100 }}]
"""


def write_controller_app(tmp_path: Path) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(CONTROLLER_APP.format(root=str(ROOT)), encoding="utf-8")
    return path


def test_the_scaling_controller_gets_api_access_and_its_targets_no_other_autoscaler(
    tmp_path: Path,
) -> None:
    path = write_controller_app(tmp_path)
    out = tmp_path / "out"
    code, _, err = deploy(path, "--out", out, "--namespace", "billing", "--only",
                          "workers=billing", "--only", "web=front", "--only", "control=scaling")  # fmt: skip
    assert code == 0, err
    objects = load(out)
    for obj in objects.values():
        validate(obj)
    role = objects[("Role", "billing-app-scaler")]
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]}
    ]
    binding = objects[("RoleBinding", "billing-app-scaler")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "billing-app-scaler", "namespace": "billing"}
    ]
    assert ("ServiceAccount", "billing-app-scaler") in objects
    pods = {
        name: obj["spec"]["template"]["spec"]
        for (kind, name), obj in objects.items()
        if kind == "Deployment"
    }
    assert pods["billing-app-control"]["serviceAccountName"] == "billing-app-scaler"
    for other in ("billing-app-workers", "billing-app-web"):
        assert pods[other]["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pods[other]
    # The controller scales the workers: no HPA or ScaledObject fights it, apply keeps its count.
    assert not [k for k in objects if k[1] == "billing-app-workers" and k[0] in
                ("HorizontalPodAutoscaler", "ScaledObject")]  # fmt: skip
    assert "replicas" not in objects[("Deployment", "billing-app-workers")]["spec"]
    assert ("HorizontalPodAutoscaler", "billing-app-web") in objects


def test_the_scaling_controller_needs_a_namespace(tmp_path: Path) -> None:
    code, _, err = deploy(write_controller_app(tmp_path), "--out", tmp_path / "out")
    assert code == 2
    assert "RoleBinding needs a namespace" in err


# options and bad input ---------------------------------------------------------------


def test_the_deploy_section_sets_defaults_the_command_line_overrides(tmp_path: Path) -> None:
    extra = """
[deploy.k8s]
image = "registry.example/billing:1.0"
namespace = "billing"
groups = { workers = ["billing", "ledger"], web = ["front"] }
"""
    path = write_app(tmp_path, extra)
    code, _, err = deploy(
        path, "--out", tmp_path / "out", "--image", "registry.example/billing:1.1"
    )
    assert code == 0, err
    objects = load(tmp_path / "out")
    assert {name for kind, name in objects if kind == "Deployment"} == {
        "billing-app-workers",
        "billing-app-web",
    }
    assert {c["image"] for c in containers(objects)} == {"registry.example/billing:1.1"}
    assert {o["metadata"]["namespace"] for o in objects.values()} == {"billing"}


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["--only", "billing,nope"], "", "no module named 'nope'"),
        (["--only", "="], "", "expected NAME=module,module"),
        (["--autoscaler", "sometimes"], "", "use auto, hpa, keda or none"),
        (["--min-replicas", "5", "--max-replicas", "2"], "", "min_replicas (5) <= max_replicas"),
        ([], "\n[deploy.k8s]\nreplica = 2\n", "unknown key 'replica'"),
        ([], "\n[deploy.k8s]\nmax_replicas = 'many'\n", "deploy.k8s"),
        (["--name", "Ünïcode!!"], "", "not usable as a Kubernetes name"),
        (["--only", "web=front", "--only", "web=billing"], "", "two groups share a name"),
    ],
)
def test_bad_options_exit_2_with_the_reason(
    tmp_path: Path, args: list[str], extra: str, message: str
) -> None:
    path = write_app(tmp_path, extra)
    code, _, err = deploy(path, "--out", tmp_path / "out", *args)
    assert code == 2, err
    assert err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "out").exists()


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    code, _, err = deploy(tmp_path / "absent.toml", "--out", tmp_path / "out")
    assert (code, err) == (
        2,
        f"error: config file {str(tmp_path / 'absent.toml')!r} does not exist\n",
    )


def test_node_group_parsing() -> None:
    assert NodeGroup.parse("api=gateway, pricing") == NodeGroup(
        name="api", modules=("gateway", "pricing")
    )
    assert NodeGroup.parse("orders,billing_jobs").name == "orders-billing-jobs"
    with pytest.raises(ConfigError, match="not usable"):
        NodeGroup.parse("__=a")


def test_the_ops_port_follows_the_config_unless_given(tmp_path: Path) -> None:
    path = write_app(tmp_path)
    path.write_text(
        path.read_text().replace("hook_timeout_s = 4", "hook_timeout_s = 4\nops_port = 9100")
    )
    assert plan_app(path).ops_port == 9100
    assert plan_app(path, ops_port=9200).ops_port == 9200
    assert plan_app(write_app(tmp_path)).ops_port == 9000
