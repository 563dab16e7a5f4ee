"""Every private TF-MOT import tfjoint makes, in one place.

TF-MOT 0.8's public API (`tfmot.quantization.keras.QuantizeScheme`,
`QuantizeRegistry`, `QuantizeLayoutTransform`, `default_8bit`,
`graph_transformations`, `tfmot.sparsity.keras.PolynomialDecay`) covers most
of what tfjoint builds on. What it does not expose is imported here, so that a
TF-MOT upgrade that moves one of these breaks exactly one file (and
tests/test_tfmot_contract.py says which name).
"""

from tensorflow_model_optimization.python.core.quantization.keras import quantize_aware_activation
from tensorflow_model_optimization.python.core.quantization.keras import quantize_config as quantize_config_lib
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_configs
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_registry
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_layout_transform,
)
# The public `tfmot.quantization.keras.default_8bit.default_8bit_transforms`
# lacks the Dense+BatchNorm transforms that TF-MOT's own list uses.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_transforms
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl

__all__ = [
    "OutputOnlyConfig",
    "QuantizeLayer",
    "NoOpActivation",
    "QuantizeAwareActivation",
    "Default8BitQuantizeConfig",
    "Default8BitOutputQuantizeConfig",
    "NoOpQuantizeConfig",
    "Pruning",
    "default_8bit_quantize_layout_transform",
    "default_8bit_transforms",
]

OutputOnlyConfig = quantize_config_lib.OutputOnlyConfig
QuantizeLayer = quantize_layer.QuantizeLayer
NoOpActivation = quantize_aware_activation.NoOpActivation
QuantizeAwareActivation = quantize_aware_activation.QuantizeAwareActivation
Default8BitQuantizeConfig = default_8bit_quantize_registry.Default8BitQuantizeConfig
Default8BitOutputQuantizeConfig = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig
NoOpQuantizeConfig = default_8bit_quantize_configs.NoOpQuantizeConfig
Pruning = pruning_impl.Pruning
