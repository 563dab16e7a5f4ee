"""`tfjoint.strip`: remove the pruning machinery, keep TF-MOT's QAT model.

The result is exactly what `tfmot.quantization.keras.quantize_apply` with the
default 8-bit scheme would have built (QuantizeWrapperV2 layers with TF-MOT's
own quantize configs and quantizers, trained ranges kept), with every pruned
kernel multiplied by its mask: the zeros are in the weights themselves, and
no mask, threshold or step counter is left. It loads with
`tfmot.quantization.keras.quantize_scope()` alone, and converts to int8.
"""

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot, errors
from tfjoint._keras import check_tf_keras_model, keras, weight_short_name
from tfjoint.quantize.config import JointQuantizeConfig, unwrap_config
from tfjoint.quantize.quantizers import GatedQuantizer
from tfjoint.train.inspect import is_prepared, pruned_kernels

__all__ = ["strip", "strips_cleanly"]

_QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapperV2
_QuantizeLayer = _tfmot.QuantizeLayer


def _strip_layer(layer):
    if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
        inner = layer.layer.__class__.from_config(layer.layer.get_config())
        return _QuantizeWrapper(inner, unwrap_config(layer.quantize_config), name=layer.name)
    if isinstance(layer, _QuantizeLayer):
        quantizer = layer.quantizer.quantizer if isinstance(layer.quantizer, GatedQuantizer) else layer.quantizer
        return _QuantizeLayer(quantizer=quantizer, name=layer.name)
    return layer.__class__.from_config(layer.get_config())


def strip(model: keras.Model) -> keras.Model:
    """Returns a copy of a prepared model with pruning baked in and removed.

    Args:
      model: a model returned by `tfjoint.prepare` (trained or not), or one
        loaded with `tfjoint.load_model`.

    Returns:
      A new, uncompiled tf_keras QAT model whose pruned kernels hold exact zeros.

    Raises:
      errors.ModelTypeError: `model` is not a tf_keras model.
      errors.ModelStructureError: `model` was not prepared with tfjoint.
    """
    check_tf_keras_model(model)
    if not is_prepared(model):
        raise errors.ModelStructureError(
            f"model '{model.name}' was not prepared with tfjoint.prepare, so there is nothing to "
            "strip. Pass the model tfjoint.prepare returned (or tfjoint.load_model loaded)."
        )
    with tfmot.quantization.keras.quantize_scope():
        stripped = keras.models.clone_model(model, clone_function=_strip_layer)

    masked = {(pk.layer_name, pk.weight_name): pk.masked_kernel() for pk in pruned_kernels(model)}
    source_layers = {layer.name: layer for layer in model.layers}
    for layer in stripped.layers:
        source = source_layers[layer.name]
        values = {weight_short_name(w): w.numpy() for w in source.weights}
        inner_name = layer.layer.name if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) else None
        new_values = []
        for weight in layer.weights:
            key = weight_short_name(weight)
            if (inner_name, key) in masked:
                new_values.append(masked[(inner_name, key)])
            else:
                new_values.append(values[key])
        layer.set_weights(new_values)
    return stripped


def strips_cleanly(model: keras.Model) -> bool:
    """True if no tfjoint object (config, quantizer, variable) remains in `model`."""
    for layer in model.layers:
        if isinstance(getattr(layer, "quantize_config", None), JointQuantizeConfig):
            return False
        if isinstance(getattr(layer, "quantizer", None), GatedQuantizer):
            return False
    return not any("tfjoint" in w.name for w in model.weights)
