"""Layout rewrites that make common layers fully int8: Conv1D, Dense+BatchNorm and input preprocessing.

A registry entry names the rewrite that quantizes its kind by class
(`Quantization(rewrite=Conv1DAsConv2D)`); `rewrite_transforms` collects the
classes the registered kinds name, so a new rewrite is one `Rewrite` subclass
and the entries that refer to it. Run before TF-MOT's own list (`PHASE`
"before"; a lone BatchNorm's "after" TF-MOT's Conv+BN folds), they rewrite layers TF-MOT's 8-bit scheme (or
the converter after it) leaves in float into Conv2D-shaped equivalents whose
handling TF-MOT and the converter already get right. Weights are carried over
exactly and the rewritten layer keeps the user's layer name, so pruning,
reports and channel groups refer to the user's layer.

* `Conv1D [-> BatchNormalization [-> ReLU | Activation('relu')]]`. The
  converter lowers a Conv1D to EXPAND_DIMS -> CONV_2D -> SQUEEZE, so a
  BatchNormalization after it sits behind the SQUEEZE, cannot be folded, and
  stays in float (DEQUANTIZE, MUL, ADD). Rewritten as ExpandDims -> Conv2D
  ((k, 1) kernel) [-> BN [-> ReLU]] -> Squeeze: TF-MOT's Conv2D+BN(+ReLU)
  transforms then apply, the BN folds into CONV_2D and the weights are
  quantized per channel.
* `Dense -> BatchNormalization [-> ReLU]`: TF-MOT trains it, but the converter
  cannot fold the BN into fake-quantized FULLY_CONNECTED weights and leaves
  the layer in float. Rewritten as ExpandDims -> 1x1 Conv2D -> BN [-> ReLU] ->
  Squeeze.
* `Rescaling(scale, offset)` and `Normalization` (per-channel (x - mean) /
  std): affine maps whose float constants the converter cannot quantize in a
  QAT graph (float MUL/ADD at the input). Rewritten as a 1x1 DepthwiseConv2D
  (kernel = scale, bias = offset), which TF-MOT quantizes per channel: every
  channel's weight is its own range maximum, so it is exact in int8.
* A BatchNormalization that no Conv/Dense transform folded (after an Add, a
  pooling layer, at the input): the same, with its inference-time affine map
  (gamma / sqrt(var + eps), beta - mean * that). Its statistics are frozen
  during fine-tuning (the usual practice for QAT of a trained model); gamma
  and beta stay trainable as the depthwise kernel and bias.

* `Conv/Dense(activation="swish" | "relu6")`: TF-MOT's QuantizeAwareActivation
  refuses a fused relu6 (raw ValueError) and fake-quantizes a fused swish
  only after it, so the converter leaves the conv output, LOGISTIC and MUL in
  float. The same layer without its activation, then an `Activation` layer
  named `<layer>_activation`, is quantized by TF-MOT's registry like any
  Activation layer: relu6 fuses back into the CONV_2D, swish runs as int8
  LOGISTIC and MUL.

* `Dense` on a sequence (rank-3 input): the converter's Tensordot leaves it in
  float; rewritten as ExpandDims -> 1x1 Conv2D -> Squeeze.
* `DepthwiseConv1D [-> BN [-> ReLU]]` (not in TF-MOT's registry): the same, as a
  (k, 1) DepthwiseConv2D.
* `SeparableConv1D [-> BN [-> ReLU]]`: the same, as a (k, 1) DepthwiseConv2D
  and a 1x1 Conv2D (TF-MOT's own transform uses Lambda layers, which
  tf_keras's safe mode refuses).

Causal or channels_first Conv1D, and BatchNorm/Normalization over another
axis than the last, are left as they are.
"""

import collections
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot

from tfjoint._keras import keras
from tfjoint._names import SQUEEZE_SUFFIX
from tfjoint.registry.kind import Rewrite
from tfjoint.registry.own_layers import CausalPadding, DilatedConv2D, ExpandDims, Squeeze
from tfjoint.registry.recurrent import IntegerGRU, IntegerLSTM, recurrent_settings
from tfjoint.registry.table import class_names, kind_named, registered_kinds

__all__ = ["Rewrite", "Conv1DAsConv2D", "DenseAsConv2D", "AffineAsDepthwise", "ActivationAsLayer",
           "rewrite_transforms", "batchnorm_transforms", "EXPAND_SUFFIX", "SQUEEZE_SUFFIX", "ACTIVATION_SUFFIX",
           "DEPTHWISE_SUFFIX", "SeparableConv1DAsConv2D", "SequenceDenseAsConv2D", "DepthwiseConv1DAsConv2D",
           "on_last_axis", "identity_layer", "LSTMAsIntegerCells", "GRUAsIntegerCells", "user_class_name"]

_transforms = tfmot.quantization.keras.graph_transformations.transforms
# TF-MOT's graph-transformation classes, typed as Any: TF-MOT ships no type information for them.
LayerPattern: Any = _transforms.LayerPattern
LayerNode: Any = _transforms.LayerNode
_Transform: Any = _transforms.Transform

EXPAND_SUFFIX = "_as_2d"
ACTIVATION_SUFFIX = "_activation"
DEPTHWISE_SUFFIX = "_depthwise"
# The layers a rewritten Conv/Dense may absorb, by their registry tags. Longest patterns first, as in TF-MOT's list.
_CONV1D_FOLLOWERS: tuple[tuple[str, ...], ...] = (("batch_norm", "relu"), ("batch_norm", "activation"),
                                                  ("batch_norm",), ())
_DENSE_FOLLOWERS: tuple[tuple[str, ...], ...] = (("batch_norm", "relu"), ("batch_norm", "activation"), ("batch_norm",))


def _axes_of(axis) -> list[int]:
    if axis is None:
        return []
    return [int(a) for a in axis] if isinstance(axis, (list, tuple)) or hasattr(axis, "__iter__") else [int(axis)]


def on_last_axis(axis, rank: int) -> bool:
    """Whether `axis` (an int or a list of one) is the last axis of a rank-`rank` tensor."""
    axes = _axes_of(axis)
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


def identity_layer(name: str):
    """A layer that passes its input through and converts to no operator (what the input quantizer stands for)."""
    return keras.layers.Activation("linear", name=name)


def user_class_name(layer, model) -> str:
    """The class of the user's layer `layer` stands for: a Conv1D for the Conv2D a 1-D rewrite made of it (its
    input comes through `<name>_as_2d`), an LSTM for tfjoint's integer one, else the layer's own."""
    from tfjoint._names import float_layer_name
    from tfjoint.registry.table import unwrapped

    inner = unwrapped(layer)
    expanded = f"{float_layer_name(layer.name)}{EXPAND_SUFFIX}"
    if not any(float_layer_name(other.name) == expanded for other in model.layers):
        return getattr(inner, "STANDS_FOR", type(inner).__name__)  # tfjoint's LSTM says LSTM
    kernel = inner.get_config().get("kernel_size")
    if isinstance(kernel, (list, tuple)) and tuple(kernel) == (1, 1) and type(inner).__name__ == "Conv2D":
        return "Dense"
    return type(inner).__name__.replace("2D", "1D")


def _is_batch_norm(class_name: str) -> bool:
    return class_name in class_names(tag="batch_norm").split("|")


def _serialized(layer) -> dict:
    return {"class_name": keras.utils.get_registered_name(type(layer)), "config": layer.get_config(),
            "name": layer.name}


def _single(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _weights_of(node) -> collections.OrderedDict:
    if node.weights:
        return collections.OrderedDict(node.weights)
    return collections.OrderedDict((name.split("/")[-1], value) for name, value in node.names_and_weights)


def _unit_axes(rank: int) -> list[int]:
    """The axes to insert so a rank-`rank` tensor (batch first, channels last) becomes rank 4."""
    return [2] if rank == 3 else [1, 2]


def _wrap_in_2d(name: str, rank: int, core: LayerNode, last_name: str) -> LayerNode:
    """ExpandDims -> `core` chain -> Squeeze, the ends named after the layers they stand for (`core` alone for a
    rank-4 input, which a Conv2D takes as it is)."""
    if rank == 4:
        return core
    axes = _unit_axes(rank)
    expand = ExpandDims(axes, name=f"{name}{EXPAND_SUFFIX}")
    squeeze = Squeeze(axes, name=f"{last_name}{SQUEEZE_SUFFIX}")
    leaf = core
    while leaf.input_layers:
        leaf = leaf.input_layers[0]
    leaf.input_layers = [LayerNode(_serialized(expand), metadata={"quantize_config": None})]
    return LayerNode(_serialized(squeeze), input_layers=[core], metadata={"quantize_config": None})


class Conv1DAsConv2D(Rewrite):
    """Rewrites one Conv1D chain (see the module docstring) as its Conv2D equivalent.

    Args:
      followers: the registry tags of the layers after the Conv1D that the
        pattern includes, e.g. ("batch_norm", "relu").
      input_ranks: layer name -> rank of its input, for layers whose rank the
        rewrite needs (Dense).
    """

    ORDER = 20
    FOLLOWERS = _CONV1D_FOLLOWERS
    PADS_CAUSAL = True  # `_core` writes causal padding as ZeroPadding2D (the depthwise forms do not)

    def __init__(self, followers: tuple[str, ...] = (), input_ranks: dict[str, int] | None = None):
        self._followers = tuple(followers)
        self._input_ranks = dict(input_ranks or {})

    @classmethod
    def instances(cls, input_shapes: dict[str, tuple]) -> list:
        ranks = {name: len(shape) for name, shape in input_shapes.items()}
        return [cls(followers, ranks) for followers in cls.FOLLOWERS]

    def pattern(self):
        pattern = LayerPattern(class_names(rewrite=self.matched()),
                               config={"activation": "linear"} if self._followers else {})
        for follower in self._followers:
            config = {"activation": "relu"} if follower == "activation" else {}
            pattern = LayerPattern(class_names(tag=follower), config=config, inputs=[pattern])
        return pattern

    def _chain(self, match_layer) -> list:
        """[matched layer node, follower nodes...] in data-flow order."""
        chain, node = [], match_layer
        for _ in range(len(self._followers) + 1):
            chain.append(node)
            node = node.input_layers[0] if node.input_layers else None
        return chain[::-1]

    def _rank(self, name: str) -> int | None:
        return 3

    def convertible(self, config) -> bool:
        # Causal padding only when dilated: a dilated causal Conv1D's own lowering stays float under QAT, and is
        # left zero padding then a valid DilatedConv2D here (an undilated one keeps Conv1D, which streams).
        causal = self.PADS_CAUSAL and config["padding"] == "causal" and _single(config["dilation_rate"]) > 1
        return (config["padding"] in ("valid", "same") or causal) and config.get("data_format") in (None,
                                                                                                 "channels_last")

    def _conv2d(self, config, kernel):
        """The Conv2D config and kernel equivalent to the matched layer's."""
        config = dict(config)
        config.update(kernel_size=(_single(config["kernel_size"]), 1), strides=(_single(config["strides"]), 1),
                      dilation_rate=(_single(config["dilation_rate"]), 1), data_format="channels_last")
        config.pop("batch_input_shape", None)
        return config, np.expand_dims(kernel, 1)

    def _core(self, config, weights) -> LayerNode:
        """The Conv2D node standing for the matched layer."""
        conv_config, kernel = self._conv2d(config, weights["kernel:0"])
        conv2d_weights = collections.OrderedDict([("kernel:0", kernel)])
        if "bias:0" in weights:
            conv2d_weights["bias:0"] = weights["bias:0"]
        dilated = max(conv_config.get("dilation_rate", (1, 1))) > 1  # one dilated CONV_2D (Keras's stays float)
        causal = conv_config.get("padding") == "causal"
        if causal:
            conv_config["padding"] = "valid"
        conv = (DilatedConv2D if dilated else keras.layers.Conv2D).from_config(conv_config)
        inputs = []
        if causal:  # the (kernel - 1) * dilation frames before each sequence, as Keras's causal padding adds
            before = (conv_config["kernel_size"][0] - 1) * conv_config["dilation_rate"][0]
            padding = CausalPadding(((before, 0), (0, 0)), name=f"{config['name']}_causal_padding")
            inputs = [LayerNode(_serialized(padding), metadata={"quantize_config": None})]
        return LayerNode(_serialized(conv), weights=conv2d_weights, input_layers=inputs,
                         metadata={"quantize_config": None})

    def replacement(self, match_layer):
        chain = self._chain(match_layer)
        config = chain[0].layer["config"]
        name, rank = config["name"], self._rank(config["name"])
        if rank is None or not self.convertible(config):
            return match_layer
        for node in chain[1:]:
            if _is_batch_norm(node.layer["class_name"]) and not on_last_axis(
                    node.layer["config"]["axis"], rank):
                return match_layer
        node = self._core(config, _weights_of(chain[0]))
        for follower in chain[1:]:
            layer = dict(follower.layer, config=dict(follower.layer["config"]))
            if _is_batch_norm(layer["class_name"]):
                layer["config"]["axis"] = -1
            node = LayerNode(layer, weights=_weights_of(follower), input_layers=[node],
                             metadata={"quantize_config": None})
        return _wrap_in_2d(name, rank, node, chain[-1].layer["config"]["name"])

    def custom_objects(self):
        return {"tfjoint>ExpandDims": ExpandDims, "tfjoint>Squeeze": Squeeze, "tfjoint>DilatedConv2D": DilatedConv2D,
                "tfjoint>CausalPadding": CausalPadding}


class SeparableConv1DAsConv2D(Conv1DAsConv2D):
    """A SeparableConv1D chain as ExpandDims -> DepthwiseConv2D -> 1x1 Conv2D [-> BN [-> ReLU]] -> Squeeze.

    TF-MOT's own SeparableConv1D transform wraps it in Python `Lambda` layers,
    which tf_keras's safe mode refuses to rebuild, so `quantize_apply` fails.
    The depthwise part is named `<layer>_depthwise`; the pointwise Conv2D keeps
    the layer's name (as TF-MOT's SeparableConv2D split does in tfjoint).
    """

    ORDER = 21
    PADS_CAUSAL = False

    def _core(self, config, weights) -> LayerNode:
        k, stride, dilation = (_single(config[key]) for key in ("kernel_size", "strides", "dilation_rate"))
        depthwise = keras.layers.DepthwiseConv2D(
            (k, 1), strides=(stride, 1), padding=config["padding"], depth_multiplier=config["depth_multiplier"],
            dilation_rate=(dilation, 1), use_bias=False, name=f"{config['name']}{DEPTHWISE_SUFFIX}",
            trainable=config.get("trainable", True))
        pointwise = keras.layers.Conv2D(
            config["filters"], 1, activation=config["activation"], use_bias=config["use_bias"],
            kernel_regularizer=config.get("pointwise_regularizer"), bias_regularizer=config.get("bias_regularizer"),
            activity_regularizer=config.get("activity_regularizer"), name=config["name"],
            trainable=config.get("trainable", True))
        depthwise_node = LayerNode(
            _serialized(depthwise), metadata={"quantize_config": None},
            weights=collections.OrderedDict([("depthwise_kernel:0", np.expand_dims(weights["depthwise_kernel:0"], 1))]))
        pointwise_weights = collections.OrderedDict([("kernel:0", np.expand_dims(weights["pointwise_kernel:0"], 0))])
        if "bias:0" in weights:
            pointwise_weights["bias:0"] = weights["bias:0"]
        return LayerNode(_serialized(pointwise), weights=pointwise_weights, input_layers=[depthwise_node],
                         metadata={"quantize_config": None})


class DepthwiseConv1DAsConv2D(Conv1DAsConv2D):
    """A DepthwiseConv1D chain as ExpandDims -> (k, 1) DepthwiseConv2D [-> BN [-> ReLU]] -> Squeeze.

    TF-MOT's 8-bit registry has no DepthwiseConv1D; as a DepthwiseConv2D it is
    quantized per channel and its BatchNorm folds.
    """

    ORDER = 22
    PADS_CAUSAL = False

    def _core(self, config, weights) -> LayerNode:
        k, stride, dilation = (_single(config[key]) for key in ("kernel_size", "strides", "dilation_rate"))
        depthwise = keras.layers.DepthwiseConv2D(
            (k, 1), strides=(stride, 1), padding=config["padding"], depth_multiplier=config["depth_multiplier"],
            dilation_rate=(dilation, 1), activation=config["activation"], use_bias=config["use_bias"],
            depthwise_regularizer=config.get("depthwise_regularizer"), bias_regularizer=config.get("bias_regularizer"),
            activity_regularizer=config.get("activity_regularizer"), name=config["name"],
            trainable=config.get("trainable", True))
        depthwise_weights = collections.OrderedDict(
            [("depthwise_kernel:0", np.expand_dims(weights["depthwise_kernel:0"], 1))])
        if "bias:0" in weights:
            depthwise_weights["bias:0"] = weights["bias:0"]
        return LayerNode(_serialized(depthwise), weights=depthwise_weights, metadata={"quantize_config": None})


class DenseAsConv2D(Conv1DAsConv2D):
    """Rewrites Dense -> BatchNormalization [-> ReLU] as a 1x1 Conv2D chain (rank-2, 3 or 4 inputs)."""

    ORDER = 23
    FOLLOWERS = _DENSE_FOLLOWERS

    @classmethod
    def instances(cls, input_shapes: dict[str, tuple]) -> list:
        ranks = {name: len(shape) for name, shape in input_shapes.items()}
        return super().instances(input_shapes) + [SequenceDenseAsConv2D((), ranks)]

    def _rank(self, name: str) -> int | None:
        rank = self._input_ranks.get(name)
        return rank if rank in (2, 3, 4) else None

    def convertible(self, config) -> bool:
        return True

    def _conv2d(self, config, kernel):
        conv = {key: config[key] for key in ("name", "trainable", "dtype", "activation", "use_bias",
                                             "kernel_initializer", "bias_initializer", "kernel_regularizer",
                                             "bias_regularizer", "activity_regularizer", "kernel_constraint",
                                             "bias_constraint") if key in config}
        conv.update(filters=config["units"], kernel_size=(1, 1))
        return conv, kernel[np.newaxis, np.newaxis]


class SequenceDenseAsConv2D(DenseAsConv2D):
    """A Dense on a sequence ((batch, steps, features) input) as ExpandDims -> 1x1 Conv2D -> Squeeze, on an image
    ((batch, height, width, channels): ConvNeXt's pointwise layers) as a 1x1 Conv2D.

    The converter lowers it to a Tensordot whose reshapes it leaves in float
    (DEQUANTIZE, float FULLY_CONNECTED); as a 1x1 Conv2D it is int8, with
    per-channel weights.
    """

    def _rank(self, name: str) -> int | None:
        rank = self._input_ranks.get(name)
        return rank if rank in (3, 4) else None


class AffineAsDepthwise(Rewrite):
    """Rewrites a per-channel affine layer (Rescaling, Normalization, a lone BatchNorm) as a 1x1 DepthwiseConv2D.

    Which layers it matches, and their per-channel `(scale, offset)`, come from
    their registry entries (`LayerKind.affine_map`).

    Args:
      batch_norms: match the kinds tagged "batch_norm" (after TF-MOT's Conv+BN
        folds) instead of the others (before TF-MOT's transforms).
      input_shapes: layer name -> its input shape (batch first), for the
        channel count and rank.
    """

    ORDER = 10

    def __init__(self, batch_norms: bool = False, input_shapes: dict[str, tuple] | None = None):
        self._batch_norms = batch_norms
        self._input_shapes = dict(input_shapes or {})

    @classmethod
    def instances(cls, input_shapes: dict[str, tuple]) -> list:
        return [cls(input_shapes=input_shapes)]

    def pattern(self):
        names = class_names(rewrite=self.matched()).split("|")
        batch_norms = set(class_names(tag="batch_norm").split("|"))
        return LayerPattern("|".join(n for n in names if (n in batch_norms) == self._batch_norms))

    def _scale_and_offset(self, node, channels: int, rank: int):
        if node.metadata.get("quantize_config") is not None:
            return None  # already quantized by a Conv/Dense transform (a folded BatchNorm)
        kind = kind_named(node.layer["class_name"])
        if kind is None or kind.affine_map is None:
            return None
        return kind.affine_map(node.layer["config"], {k.split(":")[0]: v for k, v in _weights_of(node).items()},
                               channels, rank)

    def replacement(self, match_layer):
        name = match_layer.layer["config"]["name"]
        shape = self._input_shapes.get(name)
        if shape is None or len(shape) not in (2, 3, 4) or shape[-1] is None:
            return match_layer
        rank, channels = len(shape), int(shape[-1])
        affine = self._scale_and_offset(match_layer, channels, rank)
        if affine is None:
            return match_layer
        scale, offset = affine
        depthwise = keras.layers.DepthwiseConv2D(1, use_bias=True, name=name)
        weights = collections.OrderedDict([
            ("depthwise_kernel:0", scale.reshape(1, 1, channels, 1).copy()), ("bias:0", offset.copy())])
        node = LayerNode(_serialized(depthwise), weights=weights, metadata={"quantize_config": None})
        if rank == 4:
            return node
        return _wrap_in_2d(name, rank, node, name)

    def custom_objects(self):
        return {"tfjoint>ExpandDims": ExpandDims, "tfjoint>Squeeze": Squeeze}


class ActivationAsLayer(_Transform):
    """A Conv/Dense layer with a fused swish or relu6, as the linear layer then an `Activation` layer."""

    _ACTIVATIONS = "swish|silu|relu6"

    def pattern(self):
        return LayerPattern(class_names(tag="fused_activation"), config={"activation": self._ACTIVATIONS})

    def replacement(self, match_layer):
        config = match_layer.layer["config"]
        linear = dict(match_layer.layer, config=dict(config, activation="linear"))
        node = LayerNode(linear, weights=_weights_of(match_layer), metadata={"quantize_config": None})
        activation = keras.layers.Activation(config["activation"], name=f"{config['name']}{ACTIVATION_SUFFIX}")
        return LayerNode(_serialized(activation), input_layers=[node], metadata={"quantize_config": None})


class LSTMAsIntegerCells(Rewrite):
    """A Keras LSTM as an `IntegerLSTM` (`tfjoint.registry.recurrent`) of the same name, weights and training
    settings (dropout, regularizers, constraints).

    The LSTM's registry entry refuses, before this runs, an LSTM the integer
    cell cannot stand for (`lstm_refusal`).
    """

    ORDER = 30
    CELL: Any = IntegerLSTM

    def pattern(self):
        return LayerPattern(class_names(rewrite=self.matched()))

    def _cell(self, config: dict):
        return self.CELL(config["units"], return_sequences=config.get("return_sequences", False),
                         go_backwards=config.get("go_backwards", False), use_bias=config.get("use_bias", True),
                         name=config["name"], trainable=config.get("trainable", True), **recurrent_settings(config))

    def replacement(self, match_layer):
        config = match_layer.layer["config"]
        weights = _weights_of(match_layer)
        layer = self._cell(config)
        names = ("kernel:0", "recurrent_kernel:0") + (("bias:0",) if layer.use_bias else ())
        ordered = collections.OrderedDict((name, weights[name]) for name in names)
        return LayerNode(_serialized(layer), weights=ordered, metadata={"quantize_config": None})

    def custom_objects(self):
        return {f"tfjoint>{self.CELL.__name__}": self.CELL}


class GRUAsIntegerCells(LSTMAsIntegerCells):
    """A Keras GRU as an `IntegerGRU` of the same name, weights and training settings (`reset_after` kept)."""

    CELL = IntegerGRU

    def _cell(self, config: dict):
        return IntegerGRU(config["units"], reset_after=config.get("reset_after", True),
                          return_sequences=config.get("return_sequences", False),
                          go_backwards=config.get("go_backwards", False), use_bias=config.get("use_bias", True),
                          name=config["name"], trainable=config.get("trainable", True), **recurrent_settings(config))


class _LoneBatchNormAsDepthwise(AffineAsDepthwise):
    """The affine rewrite for the BatchNorms TF-MOT's Conv+BN transforms did not fold (it runs after them)."""

    PHASE = "after"
    MATCHES = AffineAsDepthwise

    @classmethod
    def instances(cls, input_shapes: dict[str, tuple]) -> list:
        return [cls(batch_norms=True, input_shapes=input_shapes)]


SequenceDenseAsConv2D.MATCHES = DenseAsConv2D


def _registered_rewrites(phase: str) -> list[type[Rewrite]]:
    """The rewrite classes registered kinds name (and their variants of `phase`), in `ORDER`."""
    named: set[type[Rewrite]] = {kind.quantization.rewrite for kind in registered_kinds().values()
                                 if kind.quantization.rewrite is not None}
    variants: set[type[Rewrite]] = {_LoneBatchNormAsDepthwise} if AffineAsDepthwise in named else set()
    chosen = [cls for cls in named | variants if cls.PHASE == phase]
    return sorted(chosen, key=lambda cls: (cls.ORDER, cls.__name__))


def batchnorm_transforms(input_shapes: dict[str, tuple] | None = None) -> list:
    """The rewrites that must run after TF-MOT's transforms (the lone-BatchNorm one)."""
    return [t for cls in _registered_rewrites("after") for t in cls.instances(dict(input_shapes or {}))]


def rewrite_transforms(input_shapes: dict[str, tuple] | None = None) -> list:
    """The rewrites that must run before TF-MOT's transforms, in order: fused activations split off first."""
    shapes = dict(input_shapes or {})
    return [ActivationAsLayer()] + [t for cls in _registered_rewrites("before") for t in cls.instances(shapes)]
