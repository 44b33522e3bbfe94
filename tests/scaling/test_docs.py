"""The config examples in docs/scaling.md and docs/deploy.md parse as documented."""

from __future__ import annotations

import re
import tomllib

from organelle.deploy import K8sOptions, NodeGroup
from organelle.scaling.module import ForecastConfig, ScalingConfig
from tests.deploy.test_k8s import ROOT


def toml_blocks(doc: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / doc).read_text(), flags=re.DOTALL)


def test_the_scaling_example_is_a_valid_config() -> None:
    block, _ = toml_blocks("scaling.md")
    config = ScalingConfig.model_validate(tomllib.loads(block)["modules"]["scaling"])
    (target,) = config.targets
    assert [r.metric for r in target.rules] == ["queue_depth", "rpc_p99_s"]
    assert target.forecast is not None
    assert target.forecast.model == "seasonal"


def test_the_onnx_forecast_example_is_a_valid_section() -> None:
    _, block = toml_blocks("scaling.md")
    raw = tomllib.loads(block)["modules"]["scaling"]["targets"]["forecast"]
    forecast = ForecastConfig.model_validate(raw)
    assert (forecast.model, forecast.window, forecast.step_s) == ("onnx", 12, 15)


def test_the_deploy_example_is_a_valid_section() -> None:
    (block,) = toml_blocks("deploy.md")
    options = K8sOptions.from_config(tomllib.loads(block)["deploy"]["k8s"])
    assert options.groups == (
        NodeGroup(name="api", modules=("gateway", "pricing", "inventory")),
        NodeGroup(name="workers", modules=("orders", "notifications")),
    )
    assert (options.namespace, options.max_replicas) == ("shop", 20)
