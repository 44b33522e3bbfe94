"""The Helm chart in deploy/helm/organelle renders the objects ``organelle deploy k8s`` writes.

Rendered by ``helm template`` when a ``helm`` binary is on PATH, else by Helm's
own Go engine through ``helm-python-sdk`` (dev extra); skipped when neither is there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from organelle.deploy import NodeGroup, dump_yaml, helm_values, plan_app, render_k8s
from tests.deploy.test_k8s import ROOT, validate, write_app, write_controller_app

CHART = ROOT / "deploy" / "helm" / "organelle"
Manifest = dict[str, Any]


def render_chart(values: dict[str, Any], tmp_path: Path) -> list[Manifest]:
    texts: list[str]
    helm = shutil.which("helm")
    if helm is not None:
        path = tmp_path / "values.yaml"
        path.write_text(dump_yaml(values), encoding="utf-8")
        done = subprocess.run(
            [helm, "template", "rel", str(CHART), "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        texts = [done.stdout]
    else:
        helm_python = pytest.importorskip(
            "helm_python", reason="no helm binary, no helm-python-sdk"
        )
        chart = helm_python.Chart.load(CHART)
        texts = list(chart.render(values, name="rel").values())
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def _key(obj: Manifest) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@pytest.mark.parametrize(
    ("groups", "options"),
    [
        ((), {}),
        (
            (NodeGroup.parse("workers=billing,ledger"), NodeGroup.parse("web=front")),
            {"namespace": "billing", "secret": "creds", "min_replicas": 1},
        ),
        ((NodeGroup.parse("web=front"),), {"autoscaler": "none", "replicas": 3}),
        ((NodeGroup.parse("billing"),), {"autoscaler": "hpa"}),
    ],
)
def test_the_chart_renders_what_the_command_writes(
    tmp_path: Path, groups: tuple[NodeGroup, ...], options: dict[str, Any]
) -> None:
    plan = plan_app(write_app(tmp_path), groups=groups or None, **options)
    cli = {_key(o): o for o in render_k8s(plan)}
    chart = {_key(o): o for o in render_chart(helm_values(plan), tmp_path)}
    assert sorted(chart) == sorted(cli)
    for key, ours in cli.items():
        theirs = chart[key]
        validate(theirs)
        assert theirs.get("spec") == ours.get("spec"), key
        assert theirs.get("data") == ours.get("data"), key
        assert theirs["metadata"].get("namespace") == ours["metadata"].get("namespace"), key
        # Helm adds its own labels (managed-by Helm, helm.sh/chart); ours are all there.
        want = {k: v for k, v in ours["metadata"]["labels"].items() if "managed-by" not in k}
        assert want.items() <= theirs["metadata"]["labels"].items(), key


def test_the_chart_renders_the_scaling_controllers_access_as_the_command_does(
    tmp_path: Path,
) -> None:
    groups = (NodeGroup.parse("workers=billing"), NodeGroup.parse("control=scaling,front"))
    plan = plan_app(write_controller_app(tmp_path), groups=groups, namespace="billing")
    cli = {_key(o): o for o in render_k8s(plan)}
    chart = {_key(o): o for o in render_chart(helm_values(plan), tmp_path)}
    assert sorted(chart) == sorted(cli)
    assert ("RoleBinding", "billing-app-scaler") in chart
    for key, ours in cli.items():
        validate(chart[key])
        for part in ("spec", "data", "rules", "roleRef", "subjects"):
            assert chart[key].get(part) == ours.get(part), (key, part)


def test_the_charts_default_values_render_valid_objects(tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    objects = render_chart(values, tmp_path)
    assert sorted(_key(o) for o in objects) == [
        ("ConfigMap", "rel-config"),
        ("Deployment", "rel-app"),
        ("HorizontalPodAutoscaler", "rel-app"),
        ("PodDisruptionBudget", "rel-app"),
        ("Service", "rel-app"),
    ]
    for obj in objects:
        validate(obj)


def test_helm_lint_finds_nothing_above_info() -> None:
    helm = shutil.which("helm")
    if helm is not None:
        done = subprocess.run(
            [helm, "lint", "--strict", str(CHART)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return
    helm_python = pytest.importorskip("helm_python", reason="no helm binary, no helm-python-sdk")
    report = helm_python.lint(CHART, strict=True)
    assert report["errors"] == []
    assert [
        m for m in report["messages"] if m["severity"] > 1
    ] == []  # 1: INFO ("icon is recommended")
