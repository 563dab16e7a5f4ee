"""Layers replaced, before quantization, by tfjoint's layers that compute the same with int8 TFLite operators.

A registry entry with `Quantization.substitute` (a MultiHeadAttention, a
LayerNormalization, a LeakyReLU) names the layer of tfjoint's that stands in
for it: built from the layer's config, holding the same weights in the same
order, and made of the operators TFLite has int8 kernels for, each
fake-quantized (`tfjoint.registry.points`). Where the file will run in
TensorFlow Lite Micro, `Quantization.micro_substitute` stands in for a layer
whose operator TFLM lacks (a GELU, as `x * sigmoid(1.702 x)`). A layer whose
`activation` is one of those (`Dense(activation="leaky_relu")`) becomes the
same layer, linear, followed by the stand-in.

The graph is replayed with Keras's own nodes (`tfjoint._keras.replay`), every
call's keyword arguments (an attention mask) included; every other layer is
cloned as it is.
"""

from __future__ import annotations

from absl import logging

from tfjoint._keras import keras, keras_history, outbound_layers, replay
from tfjoint.registry import kind_of
from tfjoint.registry.activations import ACTIVATION_LAYERS, MICRO_ACTIVATION_LAYERS

__all__ = ["substituted", "substitutes"]

ACTIVATION_SUFFIX = "_activation"


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if callable(activation) else None


def substitutes(model, runtimes=()) -> dict[str, object]:
    """`model`'s layers that their registry entries substitute: name -> the stand-in (unbuilt)."""
    found = {}
    micro = "tflm" in runtimes
    for layer in model.layers:
        kind = kind_of(layer)
        if kind is None:
            continue
        stand_in = kind.quantization.micro_substitute(layer) if micro and kind.quantization.micro_substitute else None
        if stand_in is None and kind.quantization.substitute is not None:
            stand_in = kind.quantization.substitute(layer)
        if stand_in is not None:
            found[layer.name] = stand_in
    return found


def _activation_layers(model, runtimes) -> dict[str, object]:
    """Layers whose fused activation becomes a layer of its own: name -> that activation layer (unbuilt)."""
    table = dict(ACTIVATION_LAYERS, **(MICRO_ACTIVATION_LAYERS if "tflm" in runtimes else {}))
    found = {}
    for layer in model.layers:
        name = _activation_name(layer)
        if name in table and "activation" in layer.get_config():
            found[layer.name] = table[name](f"{layer.name}{ACTIVATION_SUFFIX}")
    return found


def _ids_inputs(model) -> set[str]:
    """Float inputs that only Embeddings read: token ids, which the file takes as int32 (not quantized to int8)."""
    found = set()
    for tensor in model.inputs:
        layer = keras_history(tensor)[0]
        readers = outbound_layers(layer)
        takes_ids = all("takes_ids" in getattr(kind_of(reader), "tags", ()) for reader in readers)
        if tensor.dtype.is_floating and readers and takes_ids:
            found.add(layer.name)
    return found


def substituted(model, runtimes=()):
    """`model`, or a copy whose substituted layers are tfjoint's stand-ins (weights copied, names kept), and whose
    float inputs that only Embeddings read are int32 token ids."""
    stand_ins = substitutes(model, runtimes)
    split = {name: activation for name, activation in _activation_layers(model, runtimes).items()
             if name not in stand_ins}
    ids = _ids_inputs(model)
    if not stand_ins and not split and not ids:
        return model
    if ids:
        logging.info("tfjoint: inputs %s feed only Embeddings: the file takes them as int32 token ids", sorted(ids))
    for name, layer in list(stand_ins.items()) + list(split.items()):
        if type(layer).__name__ == "SigmoidGelu":
            logging.warning("tfjoint: '%s' runs GELU as x * sigmoid(1.702 x) (MUL, LOGISTIC, MUL): TensorFlow Lite "
                            "Micro has no GELU kernel; quantization-aware training trains what the file computes", name)
    clones: dict[str, object] = {}

    def call(layer, args, kwargs):
        if layer.name in stand_ins:
            clone = stand_ins[layer.name]
        elif layer.name in split:
            clone = layer.__class__.from_config(dict(layer.get_config(), activation="linear"))
        else:
            clone = layer.__class__.from_config(layer.get_config())
        clones[layer.name] = clone
        output = clone(*args, **kwargs)
        return split[layer.name](output) if layer.name in split else output

    inputs = [keras.Input(tensor.shape[1:], batch_size=tensor.shape[0],
                          dtype="int32" if keras_history(tensor)[0].name in ids else tensor.dtype,
                          name=tensor.name.split(":")[0]) for tensor in model.inputs]
    outputs = replay(model, inputs, call)
    copy = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for layer in model.layers:
        values = layer.get_weights()
        if values and layer.name in clones:
            clones[layer.name].set_weights(values)
    return copy
