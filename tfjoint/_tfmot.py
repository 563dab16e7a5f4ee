"""Every private TF-MOT name tfjoint imports or reads, in one place.

TF-MOT 0.8's public API (`tfmot.quantization.keras.QuantizeScheme`,
`QuantizeRegistry`, `QuantizeLayoutTransform`, `default_8bit`,
`graph_transformations`, `tfmot.sparsity.keras.PolynomialDecay`) covers most
of what tfjoint builds on. What it does not expose is imported or read here,
so that a TF-MOT upgrade that moves one of these breaks exactly one file, and
tests/test_tfmot_contract.py says which name (`PRIVATE_ATTRIBUTES` lists
every private attribute read below).
"""

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import (
    quant_ops,
    quantize_aware_activation,
    quantize_layer,
)
from tensorflow_model_optimization.python.core.quantization.keras import quantize_config as quantize_config_lib

# The public `tfmot.quantization.keras.default_8bit.default_8bit_transforms`
# lacks the Dense+BatchNorm transforms that TF-MOT's own list uses.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs,
    default_8bit_quantize_layout_transform,
    default_8bit_quantize_registry,
    default_8bit_transforms,
)
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl

from tfjoint._keras import tf  # sets TF_USE_LEGACY_KERAS before TensorFlow loads

__all__ = [
    "OutputOnlyConfig",
    "QuantizeLayer",
    "NoOpActivation",
    "QuantizeAwareActivation",
    "Default8BitQuantizeConfig",
    "Default8BitOutputQuantizeConfig",
    "NoOpQuantizeConfig",
    "Pruning",
    "MovingAvgQuantize",
    "JointPolynomialDecay",
    "default_8bit_quantize_layout_transform",
    "default_8bit_transforms",
    "weight_vars",
    "output_quantizers",
    "output_quantizer_vars",
    "activation_quantizer_vars",
    "fused_activation_names",
    "default_config_for_class",
    "is_quantize_wrapper",
    "is_quantize_layer",
    "PRIVATE_ATTRIBUTES",
    "EqualByConfig",
]

OutputOnlyConfig = quantize_config_lib.OutputOnlyConfig
QuantizeLayer = quantize_layer.QuantizeLayer
NoOpActivation = quantize_aware_activation.NoOpActivation
QuantizeAwareActivation = quantize_aware_activation.QuantizeAwareActivation
Default8BitQuantizeConfig = default_8bit_quantize_registry.Default8BitQuantizeConfig
Default8BitOutputQuantizeConfig = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig
NoOpQuantizeConfig = default_8bit_quantize_configs.NoOpQuantizeConfig
Pruning = pruning_impl.Pruning
# The fake-quant op behind MovingAverageQuantizer; GatedQuantizer calls it with a bias-corrected decay (warm start).
MovingAvgQuantize = quant_ops.MovingAvgQuantize

# (what holds it, attribute): the private attributes read below.
PRIVATE_ATTRIBUTES = (
    ("QuantizeWrapperV2 (built)", "_weight_vars"),
    ("QuantizeWrapperV2 (built)", "_output_quantizers"),
    ("QuantizeWrapperV2 (output-quantized)", "_output_quantizer_vars"),
    ("QuantizeWrapperV2 (built)", "_quantize_activations"),
    ("QuantizeAwareActivation (post-quantized)", "_post_activation_vars"),
    ("QuantizeAwareActivation", "_PRE_QUANT_ACTIVATIONS"),
    ("QuantizeAwareActivation", "_POST_QUANT_ACTIVATIONS"),
    ("QuantizeAwareActivation", "_NO_QUANTIZE_ACTIVATIONS"),
    ("PolynomialDecay", "_should_prune_in_step"),
    ("Default8BitQuantizeRegistry", "_get_quantize_config"),
    ("Default8BitQuantizeRegistry", "_is_supported_layer"),
)


def is_quantize_wrapper(layer) -> bool:
    """Whether `layer` is a TF-MOT QuantizeWrapper (V1 or V2, or a subclass such as tfjoint's)."""
    return isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)


def is_quantize_layer(layer) -> bool:
    """Whether `layer` is TF-MOT's input QuantizeLayer (or a subclass such as tfjoint's)."""
    return isinstance(layer, QuantizeLayer)


def weight_vars(wrapper) -> list:
    """A built QuantizeWrapper's `(weight, quantizer, quantizer variables)` triples."""
    return list(getattr(wrapper, "_weight_vars", []) or [])


def output_quantizers(wrapper) -> list:
    """A built QuantizeWrapper's output quantizers."""
    return list(getattr(wrapper, "_output_quantizers", []) or [])


def output_quantizer_vars(wrapper) -> dict:
    """The variables of a built QuantizeWrapper's output quantizer."""
    return getattr(wrapper, "_output_quantizer_vars", {}) or {}


def activation_quantizer_vars(wrapper) -> list[dict]:
    """The range variables of each activation a built QuantizeWrapper fake-quantizes after its activation."""
    found = []
    for activation in getattr(wrapper, "_quantize_activations", []) or []:
        variables = getattr(activation, "_post_activation_vars", None)
        if variables:
            found.append(variables)
    return found


def fused_activation_names() -> frozenset[str]:
    """Activations a quantized Conv/Dense accepts inside (QuantizeAwareActivation's lists)."""
    fused = QuantizeAwareActivation
    return frozenset(fused._PRE_QUANT_ACTIVATIONS | fused._POST_QUANT_ACTIVATIONS | fused._NO_QUANTIZE_ACTIVATIONS)


def default_config_for_class(registry, layer_class):
    """TF-MOT's default 8-bit config for `layer_class` (exactly that class), or None if it has none."""
    if not registry._is_supported_layer(layer_class):
        return None
    return registry._get_quantize_config(layer_class)


class JointPolynomialDecay(tfmot.sparsity.keras.PolynomialDecay):
    """TF-MOT's PolynomialDecay that always reaches its target at `end_step`, on or off the frequency grid.

    TF-MOT updates masks only where `(step - begin_step) % frequency == 0`, so
    an `end_step` off that grid is never reached: the masks stop at the last
    grid step below it, at less than the target, silently. This subclass keeps
    every grid value of TF-MOT's schedule exactly (tested against it) and adds
    one mask update at `end_step` itself. It overrides a private method, so it
    lives here.
    """

    def _should_prune_in_step(self, step, begin_step, end_step, frequency):
        on_grid = super()._should_prune_in_step(step, begin_step, end_step, frequency)
        return tf.math.logical_or(on_grid, tf.math.equal(step, tf.cast(end_step, step.dtype)))


class EqualByConfig:
    """Equality by class and `get_config()`, as TF-MOT compares quantizers and quantize configs."""

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # mutable configs: equal objects need not hash alike
