"""`JointQuantizeScheme`: TF-MOT's default 8-bit scheme with tfjoint's quantizers.

`quantize_apply` takes quantize configs from two places: the registry (for
most layers) and the layout transforms (Conv+BatchNorm, activation fusing,
Concat, and the input `QuantizeLayer`), which bypass the registry. This scheme
wraps both, so every quantizer in the model is a tfjoint one:

* `JointQuantizeRegistry` asks TF-MOT's `Default8BitQuantizeRegistry` for a
  layer's config and wraps it in `JointQuantizeConfig`. It also supports
  Conv1D, which TF-MOT's 8-bit registry refuses, with TF-MOT's generic 8-bit
  config (per-tensor weights, fused activation); the converter lowers it to
  EXPAND_DIMS + CONV_2D.
* `JointLayoutTransform` runs TF-MOT's default 8-bit transforms, with the input
  quantizer gated, and wraps every config the transforms set.
"""

from typing import Mapping

from tensorflow_model_optimization.python.core.quantization.keras import quantize_layout_transform
from tensorflow_model_optimization.python.core.quantization.keras import quantize_registry
from tensorflow_model_optimization.python.core.quantization.keras import quantize_scheme
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_registry
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_transforms
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import model_transformer

from tfjoint._keras import keras
from tfjoint.config import JointConfig
from tfjoint.quantizers import GatedQuantizer, JointQuantizeConfig, serialize

__all__ = ["JointQuantizeScheme", "JointQuantizeRegistry", "JointLayoutTransform"]


class JointQuantizeRegistry(quantize_registry.QuantizeRegistry):
    """TF-MOT's 8-bit registry plus Conv1D, handing out `JointQuantizeConfig`s.

    Args:
      config: the joint run's configuration.
      pruned_weights: layer name -> names of the weights to prune in it.
    """

    def __init__(self, config: JointConfig, pruned_weights: Mapping[str, tuple[str, ...]]):
        self._config = config
        self._pruned_weights = dict(pruned_weights)
        self._default = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def supports(self, layer) -> bool:
        return type(layer) is keras.layers.Conv1D or self._default.supports(layer)

    def _float_config(self, layer):
        if type(layer) is keras.layers.Conv1D:
            # Per-tensor weights: the converter lowers Conv1D through
            # EXPAND_DIMS/TRANSPOSE and rejects per-channel scales there
            # ("'tfl.transpose' op has mismatched quantized axes").
            return default_8bit_quantize_registry.Default8BitQuantizeConfig(["kernel"], ["activation"], False)
        return self._default.get_quantize_config(layer)

    def get_quantize_config(self, layer):
        return self.wrap(layer.name, self._float_config(layer))

    def wrap(self, layer_name: str, config) -> JointQuantizeConfig:
        """Wraps TF-MOT's config for `layer_name` so that it prunes and gates."""
        if isinstance(config, JointQuantizeConfig):
            return config
        pruned = self._pruned_weights.get(layer_name, ())
        return JointQuantizeConfig(
            config,
            quant_start_step=self._config.quant_start_step,
            pruned_weights=pruned,
            schedule=self._config.polynomial_decay_kwargs() if pruned else None,
        )


class _GatedInputLayerQuantize(default_8bit_transforms.InputLayerQuantize):
    """TF-MOT's InputLayerQuantize, with its input quantizer gated by the QAT start."""

    def __init__(self, quant_start_step: int):
        super().__init__()
        self._quant_start_step = quant_start_step

    def replacement(self, match_layer):
        node = super().replacement(match_layer)
        config = node.layer["config"]
        inner = self.custom_objects()[config["quantizer"]["class_name"]].from_config(config["quantizer"]["config"])
        config["quantizer"] = serialize(GatedQuantizer(inner, self._quant_start_step))
        return node

    def custom_objects(self):
        objects = dict(super().custom_objects())
        objects["tfjoint>GatedQuantizer"] = GatedQuantizer
        return objects


class JointLayoutTransform(quantize_layout_transform.QuantizeLayoutTransform):
    """TF-MOT's default 8-bit layout transforms, with every quantizer tfjoint's."""

    def __init__(self, registry: JointQuantizeRegistry, quant_start_step: int):
        self._registry = registry
        self._quant_start_step = quant_start_step

    def apply(self, model, layer_quantize_map):
        # The same list, in the same order, as TF-MOT 0.8's
        # Default8BitQuantizeLayoutTransform.apply; only the first entry differs.
        transforms = [
            _GatedInputLayerQuantize(self._quant_start_step),
            default_8bit_transforms.SeparableConv1DQuantize(),
            default_8bit_transforms.SeparableConvQuantize(),
            default_8bit_transforms.Conv2DReshapeBatchNormReLUQuantize(),
            default_8bit_transforms.Conv2DReshapeBatchNormActivationQuantize(),
            default_8bit_transforms.Conv2DBatchNormReLUQuantize(),
            default_8bit_transforms.Conv2DBatchNormActivationQuantize(),
            default_8bit_transforms.Conv2DReshapeBatchNormQuantize(),
            default_8bit_transforms.Conv2DBatchNormQuantize(),
            default_8bit_transforms.ConcatTransform6Inputs(),
            default_8bit_transforms.ConcatTransform5Inputs(),
            default_8bit_transforms.ConcatTransform4Inputs(),
            default_8bit_transforms.ConcatTransform3Inputs(),
            default_8bit_transforms.ConcatTransform(),
            default_8bit_transforms.DenseBatchNormQuantize(),
            default_8bit_transforms.DenseBatchNormReLUQuantize(),
            default_8bit_transforms.DenseBatchNormActivationQuantize(),
            default_8bit_transforms.LayerReLUQuantize(),
            default_8bit_transforms.LayerReluActivationQuantize(),
        ]
        transformed, layer_quantize_map = model_transformer.ModelTransformer(
            model, transforms, set(layer_quantize_map.keys()), layer_quantize_map
        ).transform()
        for name, entry in layer_quantize_map.items():
            if entry.get("quantize_config") is not None:
                entry["quantize_config"] = self._registry.wrap(name, entry["quantize_config"])
        return transformed, layer_quantize_map


class JointQuantizeScheme(quantize_scheme.QuantizeScheme):
    """The scheme `tfjoint.prepare` hands to `tfmot...quantize_apply`."""

    def __init__(self, config: JointConfig, pruned_weights: Mapping[str, tuple[str, ...]]):
        self._registry = JointQuantizeRegistry(config, pruned_weights)
        self._transform = JointLayoutTransform(self._registry, config.quant_start_step)

    def get_layout_transformer(self):
        return self._transform

    def get_quantize_registry(self):
        return self._registry
