"""Layers replaced, before quantization, by layers of tfjoint's that compute the same with operators TFLite runs in int8.

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


def substitutes(model) -> list[str]:
    """The names of `model`'s layers whose registry entry substitutes them."""
    return [layer.name for layer in model.layers
            if (kind := kind_of(layer)) is not None and kind.quantization.substitute is not None]


def substituted(model):
    """`model`, or a copy whose substituted layers are tfjoint's stand-ins (weights copied, names kept)."""
    if not substitutes(model):
        return model

    def clone(layer):
        kind = kind_of(layer)
        if kind is not None and kind.quantization.substitute is not None:
            return kind.quantization.substitute(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    sources = {layer.name: layer for layer in model.layers}
    for layer in copy.layers:
        values = sources[layer.name].get_weights()
        if values:
            layer.set_weights(values)
    return copy
