"""Keras 3 layers with no tf_keras twin, and how the Keras 3 bridge rebuilds each from tf_keras and tfjoint layers.

keras.applications' own layers (ConvNeXt's `LayerScale`, InceptionResNetV2's
`CustomScaleLayer`), Keras's `ReversibleEmbedding` and keras_hub's
(`TransformerEncoder`, decoder-only `TransformerDecoder`,
`TokenAndPositionEmbedding`, `PositionEmbedding`, `SinePositionEncoding`,
`ReversibleEmbedding`) are registry entries like every other kind: their
`Keras3.rebuild` takes the layer's config entry and the Keras 3 layer and
returns a `Rebuilt`, the layers that replay it and where their weights come
from. `register_keras3_layers()` enters them (keras_hub's once keras_hub is
imported: a model that holds its layers has imported it); the bridge calls it
before rebuilding a model.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

import numpy as np

from tfjoint import errors
from tfjoint._keras import keras
from tfjoint.registry.array_ops import OpUntranslatable
from tfjoint.registry.kind import Keras3, LayerKind
from tfjoint.registry.own_layers import Affine
from tfjoint.registry.table import register_layer, registered_class
from tfjoint.registry.transformer import Gelu, IntegerAttention, PositionEmbedding

__all__ = ["Rebuilt", "Arrays", "register_keras3_layers", "activation_ok"]


@dataclasses.dataclass
class Rebuilt:
    """How one entry of a Keras 3 config is replayed in tf_keras.

    `call(args, kwargs)` takes the resolved call arguments of one inbound node
    and returns its outputs; `weights` pairs each tf_keras layer with the Keras
    3 layer (or `Arrays`) whose weights it takes.
    """

    call: Callable[[list, dict], Any]
    weights: list[tuple[Any, Any]]


class Arrays:
    """Weights for a rebuilt layer that come from part of a Keras 3 layer (`get_weights()` and a `name`)."""

    def __init__(self, name: str, values: list):
        self.name, self._values = name, list(values)

    def get_weights(self) -> list:
        return list(self._values)


def layer_call(layer) -> Callable[[list, dict], Any]:
    return lambda args, kwargs: layer(*args, **kwargs)


def activation_ok(value) -> bool:
    """Whether tf_keras knows activation `value` (a name, or None)."""
    if value is None or not isinstance(value, str):
        return value is None
    try:
        keras.activations.get(value)
    except ValueError:
        return False
    return True


def weights_by_path(layer3) -> dict[str, Any]:
    """A Keras 3 layer's weights by their path below the layer ("self_attention_layer/query/kernel")."""
    prefix = f"{layer3.name}/"
    return {w.path[len(prefix):] if w.path.startswith(prefix) else w.path: w.numpy() for w in layer3.weights}


def _custom_scale(entry, layer3) -> Rebuilt:
    """InceptionResNetV2's `CustomScaleLayer` (`inputs[0] + inputs[1] * scale`): an Affine, then an Add."""
    name, scale = entry["config"]["name"], float(entry["config"]["scale"])

    def call(args, kwargs):
        first, second = args[0]
        return keras.layers.Add(name=name)([first, Affine(scale=scale, name=f"{name}_scale")(second)])

    return Rebuilt(call, [])


def _layer_scale(entry, layer3) -> Rebuilt:
    """ConvNeXt's `LayerScale` (`x * gamma`, one gamma per channel): an Affine with its gamma."""
    name = entry["config"]["name"]
    gamma = layer3.get_weights()[0] if layer3 is not None and layer3.get_weights() else None
    if gamma is None:
        raise OpUntranslatable("its gamma weight is missing (build the model before bridging it)")
    layer = Affine(scale=gamma, name=name)
    return Rebuilt(layer_call(layer), [])


def _reversible_embedding(entry, layer3) -> Rebuilt:
    """keras_hub's ReversibleEmbedding (Keras's own since 3.x): its forward pass is an Embedding lookup."""
    config = entry["config"]
    layer = keras.layers.Embedding(config["input_dim"], config["output_dim"], name=config["name"])
    if layer3 is None:
        raise OpUntranslatable("its table is not available (build the model before bridging it)")
    return Rebuilt(layer_call(layer), [(layer, Arrays(config["name"], layer3.get_weights()[:1]))])


def _check_positions(kind: str, name: str, args, kwargs) -> None:
    """A keras_hub position layer is rebuilt for positions 0 .. steps-1 of a sequence of known length."""
    if args[0].shape[-2] is None:
        raise errors.UnsupportedLayerError(
            f"keras_hub {kind} '{name}' gets sequences of unknown length: an int8 file runs fixed shapes. Pass "
            "sample_inputs (a batch of your data, padded to the length you deploy) to tfjoint.prepare / "
            "tfjoint.from_keras3, or give the model's Input a fixed length.")
    if kwargs.get("positions") is not None or kwargs.get("start_index"):
        raise errors.UnsupportedLayerError(f"keras_hub {kind} '{name}' is called with custom positions or a start "
                                           "index; tfjoint takes positions 0 .. steps-1.")


def _position_embedding(entry, layer3) -> Rebuilt:
    """keras_hub's PositionEmbedding: tfjoint's (the table's first rows, as wide as the input)."""
    config = entry["config"]
    layer = PositionEmbedding(config["sequence_length"], name=config["name"])

    def call(args, kwargs):
        _check_positions("PositionEmbedding", config["name"], args, kwargs)
        return layer(args[0])

    return Rebuilt(call, [(layer, layer3)] if layer3 is not None else [])


def _token_and_position_embedding(entry, layer3) -> Rebuilt:
    """keras_hub's TokenAndPositionEmbedding: an Embedding plus a PositionEmbedding."""
    config, name = entry["config"], entry["config"]["name"]
    if layer3 is None:
        raise OpUntranslatable("its tables are not available (build the model before bridging it)")
    weights = weights_by_path(layer3)
    tokens = keras.layers.Embedding(config["vocabulary_size"], config["embedding_dim"], name=f"{name}_tokens")
    positions = PositionEmbedding(config["sequence_length"], name=f"{name}_positions")
    token_table = next(v for k, v in weights.items() if k.endswith("embeddings") and "position" not in k)
    position_table = next(v for k, v in weights.items() if "position" in k)

    def call(args, kwargs):
        embedded = tokens(args[0])
        return keras.layers.Add(name=name)([embedded, positions(embedded)])

    return Rebuilt(call, [(tokens, Arrays(tokens.name, [token_table])),
                           (positions, Arrays(positions.name, [position_table]))])


def _activation_layers(activation, name: str) -> tuple[Any, Any]:
    """(Dense activation, a layer after it or None) for a keras_hub activation (a name or a registered function)."""
    if isinstance(activation, dict):  # a registered function: {"class_name": "function", "config": "pkg>name"}
        activation = activation.get("config")
    if activation in ("keras_hub>gelu_approximate", "gelu_approximate"):
        return "linear", Gelu(approximate=True, name=f"{name}_gelu")
    if not activation_ok(activation):
        raise OpUntranslatable(f"its activation {activation!r} is not one tf_keras knows")
    return activation, None


def _transformer_encoder(entry, layer3) -> Rebuilt:
    """keras_hub's TransformerEncoder, as the layers it is made of: attention, residual adds, LayerNorms, the FFN."""
    return _transformer_block(entry, layer3, attention_path="self_attention_layer", causal=False)


def _transformer_decoder(entry, layer3) -> Rebuilt:
    """keras_hub's TransformerDecoder used decoder-only (GPT-style, keras.io's text generation): the encoder's layers
    with causal self-attention. With an encoder sequence (cross-attention) it is refused."""
    if entry["config"].get("encoder_sequence_shape") is not None:
        raise OpUntranslatable("it attends to an encoder sequence (cross-attention), which tfjoint does not rebuild; "
                              "a decoder-only TransformerDecoder (called on one sequence) is rebuilt")
    return _transformer_block(entry, layer3, attention_path="self_attention", causal=True)


def _transformer_block(entry, layer3, attention_path: str, causal: bool) -> Rebuilt:
    config, name = entry["config"], entry["config"]["name"]
    if layer3 is None:
        raise OpUntranslatable("its weights are not available (build the model before bridging it)")
    weights = weights_by_path(layer3)
    attention_weights = [weights[f"{attention_path}/{part}/{kind}"]
                         for part in ("query", "key", "value", "attention_output") for kind in ("kernel", "bias")]
    dim, heads, key_dim = attention_weights[0].shape
    epsilon, rate = config.get("layer_norm_epsilon", 1e-5), config.get("dropout", 0.0)
    attention = IntegerAttention(heads, key_dim, use_bias=True, dropout=rate, name=f"{name}_attention")
    attention_norm = keras.layers.LayerNormalization(epsilon=epsilon, name=f"{name}_attention_norm")
    activation, after = _activation_layers(config.get("activation", "relu"), name)
    inner = keras.layers.Dense(config["intermediate_dim"], activation=activation, name=f"{name}_ffn_in")
    outer = keras.layers.Dense(dim, name=f"{name}_ffn_out")
    ffn_norm = keras.layers.LayerNormalization(epsilon=epsilon, name=f"{name}_ffn_norm")
    first = config.get("normalize_first", False)
    kind = "TransformerDecoder" if causal else "TransformerEncoder"

    def call(args, kwargs):
        if causal and (len(args) > 1 and args[1] is not None or kwargs.get("encoder_sequence") is not None):
            raise errors.UnsupportedLayerError(f"keras_hub TransformerDecoder '{name}' is given an encoder sequence "
                                               "(cross-attention), which tfjoint does not rebuild.")
        if causal and kwargs.get("use_causal_mask") is False:
            raise errors.UnsupportedLayerError(f"keras_hub TransformerDecoder '{name}' is called with "
                                               "use_causal_mask=False; tfjoint rebuilds its causal form.")
        names = ("decoder_padding_mask", "decoder_attention_mask") if causal else ("padding_mask", "attention_mask")
        padding, attention_mask = (kwargs.get(key) for key in names)
        if padding is not None and attention_mask is not None:
            raise errors.UnsupportedLayerError(f"keras_hub {kind} '{name}' is given both a padding mask and an "
                                               "attention mask; tfjoint takes one of them.")
        mask = padding if padding is not None else attention_mask
        x = args[0]
        residual = x
        x = attention_norm(x) if first else x
        options = {"use_causal_mask": True} if causal else {}
        x = attention(x, x, attention_mask=mask, **options) if mask is not None else attention(x, x, **options)
        x = keras.layers.Dropout(rate, name=f"{name}_attention_dropout")(x)
        x = keras.layers.Add(name=f"{name}_attention_add")([residual, x])
        x = x if first else attention_norm(x)
        residual = x
        x = ffn_norm(x) if first else x
        x = inner(x)
        x = after(x) if after is not None else x
        x = keras.layers.Dropout(rate, name=f"{name}_ffn_dropout")(outer(x))
        x = keras.layers.Add(name=f"{name}_ffn_add")([residual, x])
        return x if first else ffn_norm(x)

    return Rebuilt(call, [
        (attention, Arrays(attention.name, attention_weights)),
        (attention_norm, Arrays(attention_norm.name, [weights["self_attention_layer_norm/gamma"],
                                                       weights["self_attention_layer_norm/beta"]])),
        (inner, Arrays(inner.name, [weights["feedforward_intermediate_dense/kernel"],
                                     weights["feedforward_intermediate_dense/bias"]])),
        (outer, Arrays(outer.name, [weights["feedforward_output_dense/kernel"],
                                     weights["feedforward_output_dense/bias"]])),
        (ffn_norm, Arrays(ffn_norm.name, [weights["feedforward_layer_norm/gamma"],
                                           weights["feedforward_layer_norm/beta"]])),
    ])


def _sine_position_encoding(entry, layer3) -> Rebuilt:
    """keras_hub's SinePositionEncoding: its values depend on the input's shape alone, so it is a fixed (untrained)
    table of positions, computed by the keras_hub layer itself: a constant in the file."""
    name = entry["config"]["name"]
    if layer3 is None:
        raise OpUntranslatable("its layer object is not available (build the model before bridging it)")

    def call(args, kwargs):
        _check_positions("SinePositionEncoding", name, args, kwargs)
        steps, width = args[0].shape[-2], args[0].shape[-1]
        table = np.asarray(layer3(np.zeros((1, steps, width), np.float32)))[0]
        layer = PositionEmbedding(steps, name=name, trainable=False)
        output = layer(args[0])
        layer.set_weights([table])
        return output

    return Rebuilt(call, [])


def _keras_applications() -> dict[type, Callable]:
    import keras as keras3
    from keras.src.applications import convnext, inception_resnet_v2

    found: dict[type, Callable] = {convnext.LayerScale: _layer_scale,
                                   inception_resnet_v2.CustomScaleLayer: _custom_scale}
    if hasattr(keras3.layers, "ReversibleEmbedding"):
        found[keras3.layers.ReversibleEmbedding] = _reversible_embedding
    return found


def _keras_hub() -> dict[type, Callable]:
    if "keras_hub" not in sys.modules:  # a model holding keras_hub's layers has imported it
        return {}
    from keras_hub import layers as hub

    return {hub.PositionEmbedding: _position_embedding, hub.TokenAndPositionEmbedding: _token_and_position_embedding,
            hub.TransformerEncoder: _transformer_encoder, hub.TransformerDecoder: _transformer_decoder,
            hub.SinePositionEncoding: _sine_position_encoding, hub.ReversibleEmbedding: _reversible_embedding}


def register_keras3_layers() -> None:
    """Enters the layers above in the registry (again inside a `scoped()` block that dropped them)."""
    for cls, rebuild in {**_keras_applications(), **_keras_hub()}.items():
        if registered_class(cls) is not cls:
            register_layer(cls, LayerKind(keras3=Keras3(rebuild=rebuild), tflite_ops=()))
