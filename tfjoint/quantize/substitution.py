"""Layers replaced, before quantization, by tfjoint's layers that compute the same with int8 TFLite operators.

A registry entry with `Quantization.substitute` (a MultiHeadAttention, a
LayerNormalization) names the layer of tfjoint's that stands in for it:
built from the layer's config, holding the same weights in the same order,
and made of the operators TFLite has int8 kernels for, each fake-quantized
(`tfjoint.registry.points`). The graph is cloned with Keras's own
`clone_model` (which replays every call, its keyword arguments such as an
attention mask included); every other layer is cloned as it is.
"""

from __future__ import annotations

from tfjoint._keras import keras
from tfjoint.registry import kind_of

__all__ = ["substituted", "substitutes"]


def substitutes(model) -> dict[str, object]:
    """`model`'s layers that their registry entries substitute: name -> the stand-in (unbuilt)."""
    found = {}
    for layer in model.layers:
        kind = kind_of(layer)
        if kind is not None and kind.quantization.substitute is not None:
            stand_in = kind.quantization.substitute(layer)
            if stand_in is not None:
                found[layer.name] = stand_in
    return found


def substituted(model):
    """`model`, or a copy whose substituted layers are tfjoint's stand-ins (weights copied, names kept)."""
    stand_ins = substitutes(model)
    if not stand_ins:
        return model

    def clone(layer):
        if layer.name in stand_ins:
            return stand_ins[layer.name]
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    sources = {layer.name: layer for layer in model.layers}
    for layer in copy.layers:
        values = sources[layer.name].get_weights()
        if values:
            layer.set_weights(values)
    return copy
