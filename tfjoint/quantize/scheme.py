"""`JointQuantizeScheme`: TF-MOT's default 8-bit scheme with tfjoint's quantizers and coverage.

`quantize_apply` takes quantize configs from two places: the registry (for
most layers) and the layout transforms (Conv+BatchNorm, activation fusing,
Concat, and the input `QuantizeLayer`), which bypass the registry. This scheme
wraps both, so every quantizer in the model is a tfjoint one:

* `JointQuantizeRegistry` takes a layer's config from its registry entry
  (`tfjoint.registry`: the kinds TF-MOT's 8-bit registry refuses but TFLite
  runs in int8, with TF-MOT's own generic configs), else from TF-MOT's
  `Default8BitQuantizeRegistry` (for a subclass, its nearest ancestor's), and
  wraps it in `JointQuantizeConfig`. A kind the registry refuses is named
  with its reason.
* `JointLayoutTransform` runs TF-MOT's default 8-bit transforms after the
  rewrites the registry names (`tfjoint.registry.rewrites`: Conv1D and Dense+BN as Conv2D, so
  the BN folds; Rescaling, Normalization and a BatchNorm nothing folds as an
  int8 depthwise 1x1), with the input quantizer gated, wraps every config the transforms set, and refuses
  any layer left without a config with `UnsupportedLayerError` (instead of
  TF-MOT's raw RuntimeError later on).
"""

from typing import Mapping

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot, errors
from tfjoint._keras import outbound_layers, tf
from tfjoint.prune.schedule import JointSchedule
from tfjoint.quantize.config import JointQuantizeConfig
from tfjoint.quantize.quantizers import GatedQuantizer, serialize
from tfjoint.registry import int8_kinds_sentence, is_input_layer, kind_of
from tfjoint.registry.activations import UNQUANTIZABLE_ACTIVATION_ADVICE
from tfjoint.registry.rewrites import DEPTHWISE_SUFFIX, batchnorm_transforms, rewrite_transforms

__all__ = ["JointQuantizeScheme", "JointQuantizeRegistry", "JointLayoutTransform", "default_8bit_transforms"]

_model_transformer = tfmot.quantization.keras.graph_transformations.model_transformer


def default_8bit_transforms(input_transform=None) -> list:
    """TF-MOT 0.8's Default8BitQuantizeLayoutTransform list, in its order.

    A test compares this copy with the list TF-MOT itself builds, so a TF-MOT
    change does not go unnoticed. `input_transform` replaces the first entry.
    """
    return [
        input_transform or _tfmot.default_8bit_transforms.InputLayerQuantize(),
        _tfmot.default_8bit_transforms.SeparableConv1DQuantize(),
        _tfmot.default_8bit_transforms.SeparableConvQuantize(),
        _tfmot.default_8bit_transforms.Conv2DReshapeBatchNormReLUQuantize(),
        _tfmot.default_8bit_transforms.Conv2DReshapeBatchNormActivationQuantize(),
        _tfmot.default_8bit_transforms.Conv2DBatchNormReLUQuantize(),
        _tfmot.default_8bit_transforms.Conv2DBatchNormActivationQuantize(),
        _tfmot.default_8bit_transforms.Conv2DReshapeBatchNormQuantize(),
        _tfmot.default_8bit_transforms.Conv2DBatchNormQuantize(),
        _tfmot.default_8bit_transforms.ConcatTransform6Inputs(),
        _tfmot.default_8bit_transforms.ConcatTransform5Inputs(),
        _tfmot.default_8bit_transforms.ConcatTransform4Inputs(),
        _tfmot.default_8bit_transforms.ConcatTransform3Inputs(),
        _tfmot.default_8bit_transforms.ConcatTransform(),
        _tfmot.default_8bit_transforms.DenseBatchNormQuantize(),
        _tfmot.default_8bit_transforms.DenseBatchNormReLUQuantize(),
        _tfmot.default_8bit_transforms.DenseBatchNormActivationQuantize(),
        _tfmot.default_8bit_transforms.LayerReLUQuantize(),
        _tfmot.default_8bit_transforms.LayerReluActivationQuantize(),
    ]


class JointQuantizeRegistry(tfmot.quantization.keras.QuantizeRegistry):
    """TF-MOT's 8-bit registry plus the layers above, handing out `JointQuantizeConfig`s.

    Args:
      schedule: the joint run's schedule.
      pruned_weights: layer name -> names of the weights to prune in it.
      channel_specs: layer name -> its channel-group spec (see
        `JointQuantizeConfig`), for channel pruning.
    """

    def __init__(
        self,
        schedule: JointSchedule,
        pruned_weights: Mapping[str, tuple[str, ...]],
        channel_specs: Mapping[str, dict] | None = None,
    ):
        self._schedule = schedule
        self._pruned_weights = dict(pruned_weights)
        self._channel_specs = dict(channel_specs or {})
        self._default = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()

    def _float_config(self, layer):
        """The TF-MOT config for `layer`: its registry entry's, TF-MOT's own, or its nearest known ancestor's."""
        kind = kind_of(layer)
        if kind is not None and kind.quantization.refused:
            return None
        if kind is not None and kind.quantization.config is not None:
            return kind.quantization.config()
        if self._default.supports(layer):
            return self._default.get_quantize_config(layer)
        for ancestor in type(layer).__mro__[1:]:  # a subclass of a kind TF-MOT knows gets its config
            config = _tfmot.default_config_for_class(self._default, ancestor)
            if config is not None:
                return config
        return None

    def supports(self, layer) -> bool:
        return self._float_config(layer) is not None

    def get_quantize_config(self, layer):
        return self.wrap(layer.name, self._float_config(layer))

    def wrap(self, layer_name: str, config) -> JointQuantizeConfig:
        """Wraps TF-MOT's config for `layer_name` so that it prunes and gates."""
        if isinstance(config, JointQuantizeConfig):
            return config
        pruned = self._pruned_weights.get(layer_name, ())
        target = self._schedule.target_for(layer_name) if pruned else None
        return JointQuantizeConfig(
            config,
            quant_start_step=self._schedule.quant_start_step,
            pruned_weights=pruned,
            schedule=self._schedule.weight_schedule_config(target) if pruned and target is not None else None,
            channels=self._channel_specs.get(layer_name),
            clusters=self._schedule.clusters_for(layer_name) if pruned else None,
            shared_tables=self._schedule.shared_tables,
        )


# Activations TF-MOT's 8-bit scheme quantizes in an Activation layer
# (Default8BitActivationQuantizeConfig's list, which TF-MOT does not expose).
_ACTIVATION_LAYER_ACTIVATIONS = frozenset({"relu", "relu6", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh"})


def _unquantizable_activation(layer) -> str | None:
    """The name of `layer`'s activation if TF-MOT's 8-bit scheme cannot quantize it there, else None."""
    activation = getattr(layer, "activation", None)
    if activation is None or not callable(activation):
        return None
    name = getattr(activation, "__name__", type(activation).__name__)
    kind = kind_of(layer)
    if kind is not None and "activation" in kind.tags:
        return None if name in _ACTIVATION_LAYER_ACTIVATIONS else name
    return None if name in _tfmot.fused_activation_names() else name


class _GatedInputLayerQuantize(_tfmot.default_8bit_transforms.InputLayerQuantize):
    """TF-MOT's InputLayerQuantize, with its input quantizer gated by the QAT start.

    Integer inputs (token ids) are left alone, and so are inputs read only by
    layers whose ranges the converter calibrates (an LSTM on the input): their
    input's range is calibrated with them, and a fake quantizer there would
    leave a DEQUANTIZE / QUANTIZE pair in the file.
    """

    def __init__(self, quant_start_step: int, calibrated_inputs=()):
        super().__init__()
        self._quant_start_step = quant_start_step
        self._calibrated_inputs = set(calibrated_inputs)

    def replacement(self, match_layer):
        dtype = match_layer.layer["config"].get("dtype") or "float32"
        if not tf.as_dtype(dtype).is_floating:  # token ids, indices: nothing to quantize
            return match_layer
        if match_layer.layer["config"].get("name") in self._calibrated_inputs:
            return match_layer
        node = super().replacement(match_layer)
        config = node.layer["config"]
        inner = self.custom_objects()[config["quantizer"]["class_name"]].from_config(config["quantizer"]["config"])
        config["quantizer"] = serialize(GatedQuantizer(inner, self._quant_start_step))
        return node

    def custom_objects(self):
        objects = dict(super().custom_objects())
        objects["tfjoint>GatedQuantizer"] = GatedQuantizer
        return objects


class _NamedSeparableConvQuantize(_tfmot.default_8bit_transforms.SeparableConvQuantize):
    """TF-MOT's SeparableConv2D split, with the two new layers named after the one they replace.

    TF-MOT leaves the names of the DepthwiseConv2D and the pointwise Conv2D to
    tf_keras's global name counter ("depthwise_conv2d", "conv2d"). In a model
    loaded from a file or bridged from Keras 3 the counter has never seen the
    model's own names, so the new Conv2D can be named like an existing layer,
    and the transformer then wires the wrong layers together (TF-MOT's
    `quantize_model` fails the same way on such a model). Here the pointwise
    Conv2D keeps the separable layer's name, so reports name the user's layer,
    and the depthwise part is `<name>_depthwise`.
    """

    def replacement(self, match_layer):
        node = super().replacement(match_layer)
        if node is match_layer:
            return node
        name = match_layer.layer["config"]["name"]
        for replaced, new_name in ((node, name), (node.input_layers[0], f"{name}{DEPTHWISE_SUFFIX}")):
            replaced.layer["config"]["name"] = new_name
            replaced.layer["name"] = new_name
        return node


def _with_named_separable_conv(transforms: list) -> list:
    """`transforms` with TF-MOT's SeparableConvQuantize replaced by `_NamedSeparableConvQuantize`."""
    return [_NamedSeparableConvQuantize() if type(transform) is _tfmot.default_8bit_transforms.SeparableConvQuantize
            else transform for transform in transforms]


class JointLayoutTransform(tfmot.quantization.keras.QuantizeLayoutTransform):
    """TF-MOT's default 8-bit layout transforms and the Conv1D+BN folds, every quantizer tfjoint's."""

    def __init__(self, registry: JointQuantizeRegistry, quant_start_step: int,
                 input_shapes: Mapping[str, tuple] | None = None):
        self._registry = registry
        self._quant_start_step = quant_start_step
        self._input_shapes = dict(input_shapes or {})
        self._calibrated_inputs: set[str] = set()

    def transforms(self) -> list:
        """In order: the input quantizer, tfjoint's rewrites, the rest of TF-MOT's list, lone BatchNorms.

        Two of TF-MOT's entries are subclassed: the input quantizer (gated by
        the QAT start) and the SeparableConv2D split (named after the layer).
        """
        tfmot_transforms = _with_named_separable_conv(
            default_8bit_transforms(_GatedInputLayerQuantize(self._quant_start_step, self._calibrated_inputs)))
        return (tfmot_transforms[:1] + rewrite_transforms(self._input_shapes) + tfmot_transforms[1:]
                + batchnorm_transforms(self._input_shapes))

    def apply(self, model, layer_quantize_map):
        self._calibrated_inputs = {
            layer.name for layer in model.layers if is_input_layer(layer) and outbound_layers(layer)
            and all(getattr(kind_of(consumer), "quantization", None) is not None
                    and kind_of(consumer).quantization.calibrated for consumer in outbound_layers(layer))}
        transformed, layer_quantize_map = _model_transformer.ModelTransformer(
            model, self.transforms(), set(layer_quantize_map.keys()), layer_quantize_map
        ).transform()
        unsupported = [
            layer
            for layer in transformed.layers
            if not is_input_layer(layer) and not isinstance(layer, _tfmot.QuantizeLayer)
            and (layer_quantize_map.get(layer.name) or {}).get("quantize_config") is None
            and not self._registry.supports(layer)
        ]
        if unsupported:
            raise errors.UnsupportedLayerError(
                f"model '{model.name}' has layers that TF-MOT's 8-bit quantization, and so tfjoint, cannot "
                f"quantize: {_refusals(unsupported)}"
            )
        classes = {layer.name: type(layer).__name__ for layer in model.layers}  # the user's, before the rewrites
        bad_activations = [
            f"'{layer.name}' ({classes.get(layer.name, type(layer).__name__)}, activation "
            f"'{_unquantizable_activation(layer)}')"
            for layer in transformed.layers
            if (layer_quantize_map.get(layer.name) or {}).get("quantize_config") is None
            and _unquantizable_activation(layer) is not None
        ]
        if bad_activations:
            raise errors.UnsupportedLayerError(
                f"model '{model.name}' has activations that TF-MOT's 8-bit quantization, and so tfjoint, cannot "
                f"quantize: {', '.join(bad_activations)}. {UNQUANTIZABLE_ACTIVATION_ADVICE}"
            )
        for name, entry in layer_quantize_map.items():
            if entry.get("quantize_config") is not None:
                entry["quantize_config"] = self._registry.wrap(name, entry["quantize_config"])
        return transformed, layer_quantize_map


def _refusals(layers) -> str:
    """Each unquantizable layer named, with its kind's reason and what to do; unknown kinds listed together."""
    reasons: dict[str, list[str]] = {}
    for layer in layers:
        kind = kind_of(layer)
        reason = kind.quantization.refused if kind is not None and kind.quantization.refused else None
        reasons.setdefault(reason or "", []).append(f"'{layer.name}' ({type(layer).__name__})")
    sentences = [f"{', '.join(names)}: {reason}." for reason, names in reasons.items() if reason]
    if "" in reasons:
        sentences.append(
            f"{', '.join(reasons[''])}: tfjoint has no registry entry for this kind and TF-MOT's registry does not "
            f"know it. Replace it with layers TFLite runs in int8 ({int8_kinds_sentence()}), or, for your own "
            "layer, register how it is quantized with tfjoint.register_layer(YourLayer, "
            "quantization=tfjoint.Quantization(...)).")
    return " ".join(sentences)


class JointQuantizeScheme(tfmot.quantization.keras.QuantizeScheme):
    """The scheme `tfjoint.prepare` hands to `tfmot.quantization.keras.quantize_apply`.

    Args:
      schedule: the run's `JointSchedule`.
      pruned_weights: layer name -> the weights pruned in it.
      channel_specs: layer name -> its channel-group spec, for channel pruning.
      input_shapes: layer name -> its input shape, for the rewrites that need
        it (Dense+BatchNorm, Rescaling, Normalization).
    """

    def __init__(
        self,
        schedule: JointSchedule,
        pruned_weights: Mapping[str, tuple[str, ...]],
        channel_specs: Mapping[str, dict] | None = None,
        input_shapes: Mapping[str, tuple] | None = None,
    ):
        self._registry = JointQuantizeRegistry(schedule, pruned_weights, channel_specs)
        self._transform = JointLayoutTransform(self._registry, schedule.quant_start_step, input_shapes)

    def get_layout_transformer(self):
        return self._transform

    def get_quantize_registry(self):
        return self._registry
