"""A forecast by a trained model in ONNX form, run with onnxruntime when it is installed.

The trend and seasonal models know nothing of a particular workload; a team
that has trained one on its own history (in any framework that exports ONNX)
gives its file here. The contract is small, so any such model fits:

* one input, float32, shape ``[1, window]``: the last ``window`` samples of the
  signal, oldest first, one every ``step_s`` seconds (the latest sample held
  where the scrapes were further apart);
* one output whose first element is the signal's value ``horizon_s`` ahead
  (the horizon the model was trained for; ``ForecastSpec.horizon_s``).

The model is loaded once per target and signal; a prediction is one
``InferenceSession.run`` on a tiny tensor (tens of microseconds), a few times
a minute.
"""

from __future__ import annotations

import importlib
from collections import deque
from pathlib import Path
from typing import Any

from organelle.errors import ConfigError

__all__ = ["OnnxForecast"]


class OnnxForecast:
    """Feeds the last ``window`` samples to an ONNX model and reads its forecast.

    Args:
        path: the ``.onnx`` file.
        window: the samples the model takes (its input's second dimension).
        step_s: the spacing the model was trained on.

    Raises:
        ConfigError: onnxruntime is not installed, the file cannot be loaded, or
            the model's input does not take ``[1, window]``.
    """

    def __init__(self, path: str | Path, *, window: int, step_s: float) -> None:
        if window < 1 or step_s <= 0:
            raise ConfigError("onnx forecast: need window >= 1 and step_s > 0")
        try:
            ort: Any = importlib.import_module("onnxruntime")
            self._np: Any = importlib.import_module("numpy")
        except ImportError as exc:
            raise ConfigError(
                "an onnx forecast needs onnxruntime: pip install 'organelle[onnx]'"
            ) from exc
        try:
            self._session: Any = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise ConfigError(f"onnx forecast: cannot load {str(path)!r}: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"onnx forecast: {str(path)!r} must take one input")
        shape = inputs[0].shape
        size = shape[-1] if shape else None
        if isinstance(size, int) and size != window:
            raise ConfigError(
                f"onnx forecast: {str(path)!r} takes {size} samples, config says window={window}"
            )
        self._input = inputs[0].name
        self.window = window
        self.step_s = step_s
        self._samples: deque[float] = deque(maxlen=window)
        self._next_at: float | None = None
        self._last = 0.0

    def observe(self, at: float, value: float) -> None:
        """Take a sample; resampled to one every ``step_s`` (gaps hold the last value)."""
        if self._next_at is None:
            self._samples.append(value)
            self._next_at = at + self.step_s
            self._last = value
            return
        while at >= self._next_at:
            # a step with no sample of its own keeps the value before it
            self._samples.append(self._last if at - self._next_at >= self.step_s else value)
            self._next_at += self.step_s
        self._last = value

    def predict(self, at: float) -> float | None:  # noqa: ARG002 - the model's horizon is fixed
        """The model's value ahead, once ``window`` samples are in; never below zero."""
        if len(self._samples) < self.window:
            return None
        batch = self._np.asarray([list(self._samples)], dtype=self._np.float32)
        out = self._session.run(None, {self._input: batch})[0]
        return max(0.0, float(self._np.asarray(out).reshape(-1)[0]))
