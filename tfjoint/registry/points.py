"""Quantization points: fake quantization inside a layer, where the converter quantizes its operators.

TF-MOT's quantize configs reach a layer's weights, its `activation` and its
output. A layer that the converter turns into several integer operators (an
LSTM cell: FULLY_CONNECTED, ADD, SPLIT, LOGISTIC, TANH, MUL; a LayerNorm:
MEAN, SUB, MUL, RSQRT; attention: BATCH_MATMUL, SOFTMAX) needs an int8 range
at every operator's output, or the file computes something QAT never saw.

A layer of tfjoint's that inherits `PointsMixin` names its points
(`POINTS`: name and kind) and calls `self.point(name, x)` on each such tensor
in `call`; unwrapped it is the identity. `PointsQuantizeConfig` (the layer's
registry entry) hands TF-MOT one quantizer per point, through TF-MOT's own
activation machinery, so each point's range is a weight of the layer (named
after the point), trained like every other activation range, and read by the
converter:

* "range": a moving-average range, as TF-MOT gives a layer's output;
* "sigmoid", "probabilities": the fixed int8 grid TFLite's LOGISTIC and
  SOFTMAX write ([0, 255/256], scale 1/256);
* "tanh": TANH's fixed grid ([-1, 127/128], scale 1/128);
* "weight": a weight as the operator reads it (reshaped in `call`), 8-bit
  symmetric per tensor like TF-MOT's Dense kernels. The weight attribute
  itself then gets no quantizer of its own (`PointsQuantizeConfig(
  weight_attrs=..., weight_points=...)`), only the pruning masks.
"""

from __future__ import annotations

import threading
from typing import Any

import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint._keras import serializable
from tfjoint._tfmot import EqualByConfig

__all__ = ["PointsMixin", "PointQuantizer", "FixedPointQuantizer", "WeightPointQuantizer", "PointsQuantizeConfig",
           "POINT_KINDS", "point_quantizer"]

_quantizers = tfmot.quantization.keras.quantizers
# TF-MOT's quantizer classes, typed as Any: TF-MOT ships no type information for them.
_MovingAverageQuantizer: Any = _quantizers.MovingAverageQuantizer
_FixedQuantizer: Any = _quantizers.FixedQuantizer
_LastValueQuantizer: Any = _quantizers.LastValueQuantizer
# TFLite's fixed int8 output grids: LOGISTIC and SOFTMAX (scale 1/256, zero point -128), TANH (1/128, 0).
_FIXED_RANGES = {"sigmoid": (0.0, 255.0 / 256.0), "probabilities": (0.0, 255.0 / 256.0), "tanh": (-1.0, 127.0 / 128.0)}
POINT_KINDS = ("range", "weight") + tuple(_FIXED_RANGES)


def _identity(x):
    return x


_identity.__name__ = "linear"  # TF-MOT's QuantizeAwareActivation fake-quantizes after a "linear" activation


class PointsMixin:
    """A layer with quantization points: `POINTS` names them, `point(name, x)` marks each tensor in `call`."""

    POINTS: tuple[tuple[str, str], ...] = ()

    def point(self, name: str, x):
        """`x`, fake-quantized at point `name` once TF-MOT has wrapped the layer (the identity before)."""
        points = getattr(self, "_tfjoint_points", None)
        return points[name](x) if points and name in points else x

    def weight(self, name: str):
        """Weight `name` as this call sees it: the value the wrapper quantized for this call, else the layer's own.

        TF-MOT's wrapper sets the quantized weights as layer attributes before
        each call. Under MirroredStrategy the replicas' calls run in threads
        that take turns at every cross-replica update (a point's range), so an
        attribute read after a point could be another replica's. The values
        are kept per thread as well, and `call` reads them here.
        """
        local = getattr(self, "_tfjoint_call_weights", None)
        values = getattr(local, "values", None) if local is not None else None
        return values[name] if values and name in values else getattr(self, name)

    def use_weights(self, values: dict) -> None:
        """The quantized weights the wrapper hands over for this thread's call (see `weight`)."""
        local = getattr(self, "_tfjoint_call_weights", None)
        if local is None:
            local = threading.local()
            object.__setattr__(self, "_tfjoint_call_weights", local)  # not tracked by Keras
        local.values = dict(values)
        for name, value in values.items():
            setattr(self, name, value)

    def point_range(self, name: str):
        """The (min, max) variables of point `name`'s trained range once wrapped, else None."""
        points = getattr(self, "_tfjoint_points", None)
        variables = getattr(points.get(name), "_post_activation_vars", None) if points else None
        return (variables["min_var"], variables["max_var"]) if variables and "min_var" in variables else None

    def attach_points(self, quantizers: dict) -> None:
        """Fake quantization per point (TF-MOT's wrapper hands them over through `PointsQuantizeConfig`)."""
        object.__setattr__(self, "_tfjoint_points", dict(quantizers))  # not tracked: the wrapper owns their weights


class _NamedByPoint(EqualByConfig):
    """A TF-MOT quantizer whose weights are named after its point (`<point>_min`, ...), not the layer's tensor."""

    point: str

    def build(self, tensor_shape, name, layer):
        return super().build(tensor_shape, self.point, layer)  # type: ignore[misc]

    def get_config(self):
        return dict(super().get_config(), point=self.point)  # type: ignore[misc]


@serializable
class PointQuantizer(_NamedByPoint, _MovingAverageQuantizer):
    """TF-MOT's MovingAverageQuantizer (8 bits, per tensor, asymmetric) whose range weights carry the point's name.

    Args:
      point: the point's name (its range weights are `<point>_min`, `<point>_max`).
    """

    def __init__(self, point: str, num_bits: int = 8, per_axis: bool = False, symmetric: bool = False,
                 narrow_range: bool = False):
        super().__init__(num_bits=num_bits, per_axis=per_axis, symmetric=symmetric, narrow_range=narrow_range)
        self.point = str(point)


@serializable
class FixedPointQuantizer(EqualByConfig, _FixedQuantizer):
    """TF-MOT's FixedQuantizer on the grid TFLite fixes for an operator's output (no weights)."""

    def __init__(self, point: str, kind: str = "sigmoid", num_bits: int = 8, init_min: float | None = None,
                 init_max: float | None = None, narrow_range: bool = False):
        low, high = _FIXED_RANGES[kind]
        super().__init__(num_bits=num_bits, init_min=low if init_min is None else init_min,
                         init_max=high if init_max is None else init_max, narrow_range=narrow_range)
        self.point = str(point)
        self.kind = kind

    def get_config(self):
        return dict(super().get_config(), point=self.point, kind=self.kind)


@serializable
class WeightPointQuantizer(_NamedByPoint, _LastValueQuantizer):
    """TF-MOT's LastValueQuantizer (8 bits, per tensor, symmetric, narrow range), its weights named after the point."""

    def __init__(self, point: str, num_bits: int = 8, per_axis: bool = False, symmetric: bool = True,
                 narrow_range: bool = True):
        super().__init__(num_bits=num_bits, per_axis=per_axis, symmetric=symmetric, narrow_range=narrow_range)
        self.point = str(point)


def point_quantizer(name: str, kind: str):
    """The quantizer of a point of `kind`."""
    if kind == "range":
        return PointQuantizer(name)
    if kind == "weight":
        return WeightPointQuantizer(name)
    if kind in _FIXED_RANGES:
        return FixedPointQuantizer(name, kind)
    raise errors.ConfigError(f"a quantization point's kind must be one of {list(POINT_KINDS)}; received {kind!r}.")


@serializable
class PointsQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantizes a `PointsMixin` layer: its weights (8-bit, symmetric), each of its points, not its output.

    Args:
      weight_attrs: the layer's weights handed to the wrapper, by attribute
        name (so pruning can mask them).
      per_channel: weight attribute -> True to quantize it per output channel
        (its last axis), as the converter does for a convolution's filters.
      weight_points: the weights of `weight_attrs` that the layer
        fake-quantizes itself, at a "weight" point, as the operator reads
        them (reshaped): they get no quantizer here.
    """

    def __init__(self, weight_attrs=(), per_channel=None, weight_points=()):
        self.weight_attrs = list(weight_attrs)
        self.per_channel = dict(per_channel or {})
        self.weight_points = list(weight_points)

    def _weight_quantizer(self, name: str):
        if name in self.weight_points:
            from tfjoint.registry.own_configs import PassThroughQuantizer

            return PassThroughQuantizer()
        per_axis = bool(self.per_channel.get(name, False))
        return _quantizers.LastValueQuantizer(num_bits=8, per_axis=per_axis, symmetric=True, narrow_range=True)

    def _present(self, layer) -> list[str]:
        """The weight attributes the layer has (a LayerNorm without `center` has no beta)."""
        return [name for name in self.weight_attrs if getattr(layer, name, None) is not None]

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, name), self._weight_quantizer(name)) for name in self._present(layer)]

    def get_activations_and_quantizers(self, layer):
        return [(_identity, point_quantizer(name, kind)) for name, kind in layer.POINTS]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.use_weights(dict(zip(self._present(layer), quantize_weights)))

    def set_quantize_activations(self, layer, quantize_activations):
        layer.attach_points({name: activation for (name, _), activation in zip(layer.POINTS, quantize_activations)})

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"weight_attrs": list(self.weight_attrs), "per_channel": dict(self.per_channel),
                "weight_points": list(self.weight_points)}

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)
