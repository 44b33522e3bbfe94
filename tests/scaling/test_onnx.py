"""The onnx forecast: a real model file, run by onnxruntime (skipped where it is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from organelle.errors import ConfigError
from organelle.scaling import ForecastSpec, OnnxForecast, ScalingRule, Signals, Target

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
helper = onnx.helper
TensorProto = onnx.TensorProto

WINDOW = 4


def linear_model(
    path: Path, weights: list[float], bias: float = 0.0, *, window: int = WINDOW
) -> Path:
    """``y = x · weights + bias``: a model any framework could have exported."""
    x = helper.make_tensor_value_info("samples", TensorProto.FLOAT, [1, window])
    y = helper.make_tensor_value_info("ahead", TensorProto.FLOAT, [1, 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [window, 1], weights)
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [bias])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["samples", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["ahead"]),
        ],
        "linear",
        [x],
        [y],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ahead = last + 2 * (last - previous): straight-line extrapolation two steps on
EXTRAPOLATE = [0.0, 0.0, -2.0, 3.0]


def test_the_model_sees_the_last_window_and_its_answer_is_the_forecast(tmp_path: Path) -> None:
    model = OnnxForecast(linear_model(tmp_path / "m.onnx", EXTRAPOLATE), window=WINDOW, step_s=10)
    for i, value in enumerate([1.0, 2.0, 3.0]):
        model.observe(i * 10.0, value)
        assert model.predict(i * 10.0) is None  # fewer than window samples
    model.observe(30.0, 5.0)
    assert model.predict(30.0) == pytest.approx(5 + 2 * (5 - 3))
    model.observe(40.0, 4.0)  # the window slides: [2, 3, 5, 4]
    assert model.predict(40.0) == pytest.approx(4 + 2 * (4 - 5))


def test_samples_are_resampled_to_the_model_step(tmp_path: Path) -> None:
    last_only = [0.0, 0.0, 0.0, 1.0]
    model = OnnxForecast(linear_model(tmp_path / "m.onnx", last_only), window=WINDOW, step_s=10)
    model.observe(0.0, 1.0)
    model.observe(3.0, 7.0)  # inside the first step: no new sample yet
    model.observe(35.0, 9.0)  # three steps passed: 7 held at 10 and 20, 9 at 30
    assert list(model._samples) == [1.0, 7.0, 7.0, 9.0]
    assert model.predict(35.0) == pytest.approx(9.0)


def test_a_negative_answer_is_zero(tmp_path: Path) -> None:
    model = OnnxForecast(linear_model(tmp_path / "m.onnx", [0.0] * 4, bias=-5), window=4, step_s=1)
    for i in range(4):
        model.observe(float(i), 1.0)
    assert model.predict(3.0) == 0.0


def test_a_rising_forecast_scales_out_before_the_load_arrives(tmp_path: Path) -> None:
    path = linear_model(tmp_path / "m.onnx", EXTRAPOLATE)
    spec = ForecastSpec(
        model="onnx", path=str(path), window=WINDOW, step_s=10, metrics=("queue_depth",)
    )
    rule = ScalingRule(metric="queue_depth", up_above=10)
    plain = Target("workers", [rule])
    ahead = Target("workers", [rule], forecast=spec)
    for i, depth in enumerate([4.0, 6.0, 8.0, 9.0]):  # under the threshold, rising
        signals = Signals(at=i * 10.0, queue_depth=depth)
        now, early = plain.plan(signals, 1), ahead.plan(signals, 1)
    assert now.desired == 1
    assert early.desired > 1  # 9 + 2 * (9 - 8) = 11 > 10 ahead


def test_bad_models_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load"):
        OnnxForecast(tmp_path / "missing.onnx", window=4, step_s=1)
    path = linear_model(tmp_path / "m.onnx", EXTRAPOLATE)
    with pytest.raises(ConfigError, match="takes 4 samples, config says window=6"):
        OnnxForecast(path, window=6, step_s=1)
    with pytest.raises(ConfigError, match="needs a path"):
        ForecastSpec(model="onnx").build()
