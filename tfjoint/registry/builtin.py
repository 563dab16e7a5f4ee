"""The registry entries of tf_keras's built-in layers, TF-MOT's input QuantizeLayer and tfjoint's own layers.

Each entry is what tfjoint knows about that kind (see `LayerKind`). Kinds not
listed here are opaque to channel pruning and quantized only if TF-MOT's
default 8-bit registry knows them.
"""

import numpy as np

from tfjoint import _tfmot, errors
from tfjoint._keras import keras
from tfjoint.registry.activations import (
    LEAKY_RELU_OPERATORS,
    SIGMOID_GELU_OPERATORS,
    IntegerLeakyReLU,
    SigmoidGelu,
    gelu_for_tflm,
    leaky_relu_from_layer,
)
from tfjoint.registry.array_ops import ConstantOp, FilledLike, MatMul, Slice
from tfjoint.registry.channel_rules import (
    CONCATENATES,
    FLATTENS,
    FOLLOWS,
    HEADS,
    MERGES,
    NEW,
    OUTPUT,
    RESHAPES,
    Channels,
)
from tfjoint.registry.kind import Keras3, LayerKind, Pruning, Quantization, Residual
from tfjoint.registry.own_configs import OutputUnlessIntegerConfig
from tfjoint.registry.own_layers import Affine, DilatedConv2D, ExpandDims, HardSwish, RepeatSteps, Squeeze
from tfjoint.registry.points import PointsQuantizeConfig
from tfjoint.registry.recurrent import (
    GRU_OPERATORS,
    LSTM_OPERATORS,
    IntegerBidirectionalLSTM,
    IntegerGRU,
    IntegerLSTM,
    bidirectional_from_keras3,
    bidirectional_from_layer,
    bidirectional_refusal,
    gru_refusal,
    lstm_refusal,
)
from tfjoint.registry.rewrites import (
    AffineAsDepthwise,
    Conv1DAsConv2D,
    DenseAsConv2D,
    DepthwiseConv1DAsConv2D,
    GRUAsIntegerCells,
    LSTMAsIntegerCells,
    SeparableConv1DAsConv2D,
    on_last_axis,
)
from tfjoint.registry.table import register_layer
from tfjoint.registry.transformer import (
    ATTENTION_OPERATORS,
    DOT_ATTENTION_OPERATORS,
    LAYER_NORM_OPERATORS,
    Gelu,
    IntegerAttention,
    IntegerDotAttention,
    IntegerEinsumDense,
    IntegerLayerNorm,
    IntegerSum,
    PositionEmbedding,
    TakeStep,
    attention_from_config,
    attention_refusal,
    dot_attention_from_layer,
    dot_attention_refusal,
    einsum_dense_from_layer,
    einsum_dense_refusal,
    layer_norm_from_config,
    layer_norm_refusal,
)

__all__: list[str] = []

_layers = keras.layers


def _set(key: str):
    def resize(config: dict, channels: int) -> dict:
        return dict(config, **{key: int(channels)})

    return resize


def _last_axis_of(weight: str):
    def channels(layer) -> int:
        return int(getattr(layer, weight).shape[-1])

    return channels


def _grouped(layer, rank: int) -> str | None:
    return "is a grouped convolution" if getattr(layer, "groups", 1) != 1 else None


def _producer(ops: tuple[str, ...], resize_key: str, quantization: Quantization | None = None, blocker=None,
              tags=("fused_activation",)) -> LayerKind:
    return LayerKind(
        prune=Pruning(weight="kernel"),
        channels=Channels(NEW, blocker=blocker, axes={"kernel": -1, "bias": 0}, zeroed=("kernel", "bias"),
                          sliced={"kernel": {"in": -2, "out": -1}, "bias": {"out": 0}}, resize=_set(resize_key),
                          count=_last_axis_of("kernel")),
        quantization=quantization or Quantization(), tflite_ops=ops, tags=frozenset(tags), offset_weights=("bias",))


# --- Producers: Dense and convolutions ---------------------------------------------------------------------------

register_layer(_layers.Dense, _producer(("FULLY_CONNECTED",), "units", Quantization(rewrite=DenseAsConv2D)))
# Per-tensor weights when the rewrite declines (causal padding): the converter lowers Conv1D through EXPAND_DIMS
# and rejects per-channel scales there ("'tfl.transpose' op has mismatched quantized axes").
register_layer(_layers.Conv1D, _producer(("CONV_2D",), "filters", Quantization(
    config=lambda: _tfmot.Default8BitQuantizeConfig(["kernel"], ["activation"], False), rewrite=Conv1DAsConv2D)))
def _dilated(layer):
    """A dilated Conv2D as `DilatedConv2D` (one dilated CONV_2D in the file; Keras's lowering stayed float)."""
    if type(layer) is not _layers.Conv2D or max(layer.dilation_rate) == 1 or layer.padding not in ("valid", "same"):
        return None
    return DilatedConv2D.from_config(layer.get_config())


register_layer(_layers.Conv2D, _producer(("CONV_2D",), "filters", Quantization(substitute=_dilated),
                                         blocker=_grouped))


def _depthwise_channels(layer) -> int:
    shape = layer.depthwise_kernel.shape
    return int(shape[2] * shape[3])


def _depth_multiplied(layer, rank: int) -> str | None:
    return "has depth_multiplier > 1" if layer.depth_multiplier != 1 else None


_DEPTHWISE = LayerKind(
    prune=Pruning(weight="depthwise_kernel", on_request=True),
    channels=Channels(FOLLOWS, blocker=_depth_multiplied, axes={"depthwise_kernel": 2, "bias": 0},
                      sliced={"depthwise_kernel": {"in": 2}, "bias": {"in": 0}}, range_channels="in",
                      count=_depthwise_channels),
    tflite_ops=("DEPTHWISE_CONV_2D",), tags=frozenset({"fused_activation"}), offset_weights=("bias",))
register_layer(_layers.DepthwiseConv2D, _DEPTHWISE)
# Rewritten as a (k, 1) DepthwiseConv2D: TF-MOT's registry has no DepthwiseConv1D. Its channels are not followed.
register_layer(_layers.DepthwiseConv1D, LayerKind(
    quantization=Quantization(rewrite=DepthwiseConv1DAsConv2D), tflite_ops=("DEPTHWISE_CONV_2D",),
    tags=frozenset({"fused_activation"}), offset_weights=("bias",)))
# Split by TF-MOT's transform (2D) or tfjoint's rewrite (1D) into depthwise + pointwise; quantized, not pruned.
register_layer(_layers.SeparableConv2D, LayerKind(
    tflite_ops=("DEPTHWISE_CONV_2D", "CONV_2D"), tags=frozenset({"fused_activation"}), offset_weights=("bias",)))
register_layer(_layers.SeparableConv1D, LayerKind(
    quantization=Quantization(rewrite=SeparableConv1DAsConv2D), tflite_ops=("DEPTHWISE_CONV_2D", "CONV_2D"),
    tags=frozenset({"fused_activation"}), offset_weights=("bias",)))
# A Conv2D subclass whose kernel is (h, w, out, in): neither pruned nor followed, quantized by TF-MOT.
register_layer(_layers.Conv2DTranspose, LayerKind(tflite_ops=("TRANSPOSE_CONV",), offset_weights=("bias",)))
register_layer(_layers.Conv1DTranspose, LayerKind(quantization=Quantization(
    refused="TF-MOT's 8-bit scheme has no Conv1DTranspose: use a Conv2DTranspose with a (k, 1) kernel on a "
            "Reshape'd input (batch, steps, 1, channels)")))


# --- Normalization and affine maps ---------------------------------------------------------------------------------

def _batch_norm_blocker(layer, rank: int) -> str | None:
    if not on_last_axis(layer.axis, rank):
        return "normalizes another axis than the channels"
    if not layer.scale and layer.center:  # (x - mean) / std is not 0 for a zero channel without gamma
        return "has center=True but scale=False"
    return None


def _batch_norm_affine(config: dict, weights: dict, channels: int, rank: int):
    """Inference-time BatchNorm: gamma / sqrt(var + eps) and beta - mean * that."""
    if not on_last_axis(config.get("axis"), rank):
        return None
    gamma = np.asarray(weights.get("gamma", np.ones(channels)), np.float32)
    beta = np.asarray(weights.get("beta", np.zeros(channels)), np.float32)
    scale = gamma / np.sqrt(np.asarray(weights["moving_variance"], np.float32) + config["epsilon"])
    return scale.astype(np.float32), (beta - np.asarray(weights["moving_mean"], np.float32) * scale).astype(np.float32)


def _rescaling_affine(config: dict, weights: dict, channels: int, rank: int):
    scale = np.broadcast_to(np.asarray(config["scale"], np.float32), (channels,))
    offset = np.broadcast_to(np.asarray(config["offset"], np.float32), (channels,))
    return scale.copy(), offset.copy()


def _normalization_affine(config: dict, weights: dict, channels: int, rank: int):
    """(x - mean) / std per channel; mean and variance are weights once adapted, config values when given."""
    if config.get("invert") or not on_last_axis(config.get("axis"), rank):
        return None
    if "mean" in weights and "variance" in weights:
        mean, variance = weights["mean"], weights["variance"]
    elif config.get("mean") is not None and config.get("variance") is not None:
        mean, variance = config["mean"], config["variance"]
    else:
        return None
    mean = np.reshape(np.asarray(mean, np.float32), (-1,))
    std = np.sqrt(np.maximum(np.reshape(np.asarray(variance, np.float32), (-1,)), 1e-7)).astype(np.float32)
    if mean.size == 1:
        mean = np.full(channels, mean[0], np.float32)
    if std.size == 1:
        std = np.full(channels, std[0], np.float32)
    return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)


_BATCH_NORM = LayerKind(
    channels=Channels(FOLLOWS, blocker=_batch_norm_blocker,
                      axes={OUTPUT: -1},  # its output, not gamma: setattr of gamma breaks SavedModel tracking
                      sliced={name: {"in": 0} for name in ("gamma", "beta", "moving_mean", "moving_variance")},
                      zeroed=("gamma", "beta", "moving_mean"), range_channels="in"),
    quantization=Quantization(rewrite=AffineAsDepthwise), affine_map=_batch_norm_affine,
    tflite_ops=("DEPTHWISE_CONV_2D",), tags=frozenset({"batch_norm"}), offset_weights=("beta",))
register_layer(_layers.BatchNormalization, _BATCH_NORM)
register_layer(_layers.experimental.SyncBatchNormalization, _BATCH_NORM)
register_layer(_layers.Rescaling, LayerKind(quantization=Quantization(rewrite=AffineAsDepthwise),
                                            affine_map=_rescaling_affine, tflite_ops=("DEPTHWISE_CONV_2D",)))
register_layer(_layers.Normalization, LayerKind(quantization=Quantization(rewrite=AffineAsDepthwise),
                                                affine_map=_normalization_affine, tflite_ops=("DEPTHWISE_CONV_2D",)))
# A LayerNormalization runs as `IntegerLayerNorm` (`tfjoint.registry.transformer`): integer MEAN, SUB, MUL, RSQRT,
# each fake-quantized (TF-MOT has no config for it; TensorFlow's own quantization leaves part of it in float).
_NORMALIZES_CHANNELS = Channels(blocker=lambda layer, rank: "normalizes over its channels")
_CARRIES_THE_STREAM = Residual(carries=True, carried={"gamma": 0, "beta": 0})  # narrowed, it normalizes fewer
register_layer(_layers.LayerNormalization, LayerKind(
    channels=_NORMALIZES_CHANNELS, keras3=Keras3(kwargs_defaults={"rms_scaling": False}),
    residual=_CARRIES_THE_STREAM,
    quantization=Quantization(substitute=lambda layer: layer_norm_from_config(layer.get_config()),
                              check=layer_norm_refusal),
    tflite_ops=LAYER_NORM_OPERATORS))
register_layer(IntegerLayerNorm, LayerKind(
    channels=_NORMALIZES_CHANNELS, residual=_CARRIES_THE_STREAM,
    quantization=Quantization(config=lambda: PointsQuantizeConfig(["gamma", "beta"])),
    tflite_ops=LAYER_NORM_OPERATORS, offset_weights=("beta",)))


# --- Activations -------------------------------------------------------------------------------------------------

def _relu_blocker(layer, rank: int) -> str | None:
    return "maps 0 to a non-zero value" if layer.negative_slope and layer.threshold > 0 else None


register_layer(_layers.ReLU, LayerKind(channels=Channels(FOLLOWS, blocker=_relu_blocker), tflite_ops=("RELU",),
                                       tags=frozenset({"relu"})))
register_layer(_layers.Activation, LayerKind(channels=Channels(FOLLOWS), tags=frozenset({"activation"})))
# A LeakyReLU runs as MUL and MAXIMUM (`IntegerLeakyReLU`): TFLM's int8 LEAKY_RELU rounds negative values with a bias
# that QAT does not simulate.
register_layer(_layers.LeakyReLU, LayerKind(channels=Channels(FOLLOWS), tflite_ops=LEAKY_RELU_OPERATORS,
                                            quantization=Quantization(substitute=leaky_relu_from_layer),
                                            keras3=Keras3(renamed_arguments={"negative_slope": "alpha"})))
register_layer(IntegerLeakyReLU, LayerKind(channels=Channels(FOLLOWS), tflite_ops=LEAKY_RELU_OPERATORS,
                                           quantization=Quantization(config=lambda: PointsQuantizeConfig())))
register_layer(_layers.Softmax, LayerKind(channels=Channels(blocker=lambda layer, rank: "normalizes over the channels"),
                                          tflite_ops=("SOFTMAX",), tags=frozenset({"probabilities"})))
register_layer(_layers.ELU, LayerKind(channels=Channels(FOLLOWS), quantization=Quantization(
    refused="TF-MOT's 8-bit scheme cannot quantize an ELU layer: use a LeakyReLU layer (or ReLU) and fine-tune the "
            "float model with it before preparing")))
register_layer(_layers.PReLU, LayerKind(quantization=Quantization(
    refused="TF-MOT's 8-bit scheme cannot quantize PReLU: use LeakyReLU or ReLU and fine-tune the float model with "
            "it before preparing")))


# --- Layers whose channels pass through --------------------------------------------------------------------------

_PASS_THROUGH = LayerKind(channels=Channels(FOLLOWS))
for _name in ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "MaxPooling2D",
              "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
              "GlobalAveragePooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling2D"):
    register_layer(getattr(_layers, _name), _PASS_THROUGH)
# Noise and regularization while training, the identity at inference (TF-MOT's registry does not know them).
# (ActivityRegularization's loss is refused with every activity_regularizer, by `prepare`.)
for _name in ("GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization"):
    register_layer(getattr(_layers, _name), _PASS_THROUGH.replace(quantization=Quantization.values_unchanged(),
                                                                  tflite_ops=()))
register_layer(_layers.MaxPooling1D, _PASS_THROUGH.replace(quantization=Quantization.values_unchanged()))
# TFLite's int8 AVERAGE_POOL_2D needs one scale on its input and output (the converter refuses two: "quantization
# parameters violate the same scale constraint"); an average of int8 values stays in their range, so its output
# keeps its input's scale instead of a range of its own.
for _name, _op in (("AveragePooling1D", "AVERAGE_POOL_2D"), ("AveragePooling2D", "AVERAGE_POOL_2D")):
    register_layer(getattr(_layers, _name), _PASS_THROUGH.replace(quantization=Quantization.values_unchanged(),
                                                                  tflite_ops=(_op,)))
register_layer(_layers.UpSampling1D, _PASS_THROUGH.replace(quantization=Quantization.output_only()))
register_layer(_tfmot.QuantizeLayer, _PASS_THROUGH)  # TF-MOT's input quantizer (and tfjoint's subclass)
# Data augmentation inside the model (keras.io's image classifiers): it augments while the joint fit trains and is
# the identity at inference, so the converter leaves nothing of it in the file. Keras 3 writes the data format it
# resolved into the config; tf_keras's layers take channels-last images only.
for _name in ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness"):
    register_layer(getattr(_layers, _name), _PASS_THROUGH.replace(
        quantization=Quantization.values_unchanged(), tflite_ops=(),
        keras3=Keras3(kwargs_defaults={"data_format": "channels_last"})))


def _resizing_refusal(layer) -> str | None:
    if layer.interpolation in ("bilinear", "nearest"):
        return None
    return (f"its interpolation is {layer.interpolation!r}: TFLite resizes int8 images bilinearly or by nearest "
            "neighbour only; use interpolation='bilinear' or 'nearest'")


# A resize moves and averages int8 values within their range: its output keeps its input's scale (TFLite's int8
# RESIZE_BILINEAR needs one scale on both).
register_layer(_layers.Resizing, LayerKind(
    channels=Channels(FOLLOWS), quantization=Quantization(config=Quantization.values_unchanged().config,
                                                          check=_resizing_refusal),
    tflite_ops=("RESIZE_BILINEAR",), keras3=Keras3(kwargs_defaults={"data_format": "channels_last"})))
# A Lambda is Python code: TF-MOT rebuilds the model from its config (Keras refuses a lambda there, in safe mode),
# and no registry entry can say how arbitrary code quantizes.
register_layer(_layers.Lambda, LayerKind(quantization=Quantization(
    refused="it runs a Python function, which TF-MOT cannot rebuild from the model's config nor tfjoint quantize: "
            "write it with Keras layers (Rescaling for a scale and offset, Reshape, Permute, Add, Multiply, "
            "Activation), or as a custom layer registered with tfjoint.register_layer")))
# Strings are not tensors an int8 file takes: the vocabulary stays in the app.
for _name in ("TextVectorization", "StringLookup"):
    register_layer(getattr(_layers, _name), LayerKind(quantization=Quantization(
        refused="it maps strings to token ids, which no int8 file (and no microcontroller) takes: keep it in your app "
                "or input pipeline and give the model the token ids (keras.Input(shape, dtype='int32'))")))


# TimeDistributed(Dense) is a Dense on the last axis: the same weights, the same result, and an int8
# FULLY_CONNECTED. Other wrapped layers are refused.
_TIME_DISTRIBUTED_ADVICE = ("tfjoint takes TimeDistributed(Dense) (a Dense on the last axis computes the same) and no "
                            "other; reshape the steps into the batch around the layer, or use a layer that takes the "
                            "time axis (Conv1D, Conv2D, DepthwiseConv1D)")


def _time_distributed_refusal(layer) -> str | None:
    if isinstance(layer.layer, _layers.Dense):
        return None
    return f"it wraps a {type(layer.layer).__name__}: {_TIME_DISTRIBUTED_ADVICE}"


def _time_distributed_dense(layer):
    if not isinstance(layer.layer, _layers.Dense):
        return None
    return _layers.Dense.from_config(dict(layer.layer.get_config(), name=layer.name))


def _time_distributed_from_keras3(config: dict, layer3):
    inner = config["layer"]
    if inner.get("class_name") != "Dense":
        raise errors.UnsupportedLayerError(f"layer '{config['name']}' (TimeDistributed) wraps a "
                                           f"{inner.get('class_name')}: {_TIME_DISTRIBUTED_ADVICE}.")
    arguments = {key: inner["config"][key] for key in ("units", "activation", "use_bias") if key in inner["config"]}
    if not isinstance(arguments.get("activation", "linear"), str):
        raise errors.UnsupportedLayerError(f"layer '{config['name']}' (TimeDistributed): its Dense's activation "
                                           f"{arguments['activation']!r} is not a built-in one tfjoint can carry over.")
    return _layers.Dense(**arguments, name=config["name"])


register_layer(_layers.TimeDistributed, LayerKind(
    quantization=Quantization(substitute=_time_distributed_dense, check=_time_distributed_refusal),
    keras3=Keras3(translate=_time_distributed_from_keras3), tflite_ops=("FULLY_CONNECTED",)))
register_layer(_layers.RandomCrop, LayerKind(quantization=Quantization(
    refused="RandomCrop crops (and resizes) at inference too, not only while training: crop the images in your "
            "input pipeline instead, or augment with RandomTranslation or RandomZoom, which leave inference alone")))
register_layer(ExpandDims, _PASS_THROUGH.replace(quantization=Quantization.values_unchanged()))
# An LSTM autoencoder's RepeatVector (the encoding fed to the decoder at every step): TILE in the file, which TFLM
# has no kernel for; `RepeatSteps` computes it with EXPAND_DIMS and CONCATENATION. The values only move.
register_layer(RepeatSteps, _PASS_THROUGH.replace(quantization=Quantization.values_unchanged(),
                                                  tflite_ops=("EXPAND_DIMS", "CONCATENATION")))
register_layer(_layers.RepeatVector, _PASS_THROUGH.replace(
    quantization=Quantization(config=Quantization.values_unchanged().config,
                              substitute=lambda layer: RepeatSteps(layer.n, name=layer.name)),
    tflite_ops=("EXPAND_DIMS", "CONCATENATION")))
register_layer(Squeeze, _PASS_THROUGH.replace(quantization=Quantization.values_unchanged()))


def _affine_of_config(config: dict, weights: dict, channels: int, rank: int):
    scale = np.broadcast_to(np.asarray(config["scale"], np.float32), (channels,)).copy()
    offset = np.broadcast_to(np.asarray(config["offset"], np.float32), (channels,)).copy()
    return scale, offset


def _adds_a_constant(layer, rank: int) -> str | None:
    return "adds a constant, so a removed channel would not stay zero" if np.any(np.asarray(layer.offset)) else None


register_layer(Affine, LayerKind(channels=Channels(FOLLOWS, blocker=_adds_a_constant),
                                 quantization=Quantization(rewrite=AffineAsDepthwise), affine_map=_affine_of_config,
                                 tflite_ops=("DEPTHWISE_CONV_2D",)))
register_layer(HardSwish, LayerKind(channels=Channels(FOLLOWS), quantization=Quantization.output_only(),
                                    tflite_ops=("HARD_SWISH",)))


# --- Merges, concatenation, reshapes -----------------------------------------------------------------------------

def _pairwise_sum(layer):
    """An Add of three or more inputs as `IntegerSum` (each partial sum quantized), else None (TF-MOT's Add)."""
    count = len(layer.input) if isinstance(layer.input, (list, tuple)) else 2
    return IntegerSum(count, name=layer.name) if count > 2 else None


register_layer(_layers.Add, LayerKind(channels=Channels(MERGES), quantization=Quantization(substitute=_pairwise_sum),
                                      tflite_ops=("ADD",)))
register_layer(IntegerSum, LayerKind(channels=Channels(MERGES), quantization=Quantization(
    config=lambda: PointsQuantizeConfig()), tflite_ops=("ADD", "MUL")))
register_layer(_layers.Average, LayerKind(channels=Channels(MERGES), quantization=Quantization(
    substitute=lambda layer: IntegerSum(len(layer.input), scale=1.0 / len(layer.input), name=layer.name)),
    tflite_ops=("ADD", "MUL")))  # TF-MOT quantizes its output only: the sum before the MUL was float
for _name, _op in (("Subtract", "SUB"), ("Multiply", "MUL"), ("Maximum", "MAXIMUM"), ("Minimum", "MINIMUM")):
    register_layer(getattr(_layers, _name), LayerKind(channels=Channels(MERGES),
                                                      quantization=Quantization.output_only(), tflite_ops=(_op,)))


def _concatenate_blocker(layer, rank: int) -> str | None:
    return None if on_last_axis(layer.axis, rank) else "concatenates along another axis than the channels"


register_layer(_layers.Concatenate, LayerKind(channels=Channels(CONCATENATES, blocker=_concatenate_blocker),
                                              tflite_ops=("CONCATENATION",)))
register_layer(_layers.Flatten, LayerKind(channels=Channels(FLATTENS), tflite_ops=("RESHAPE",)))


def _resize_reshape(config: dict, channels: int) -> dict:
    return dict(config, target_shape=tuple(config["target_shape"][:-1]) + (int(channels),))


register_layer(_layers.Reshape, LayerKind(
    channels=Channels(RESHAPES, resize=_resize_reshape), tflite_ops=("RESHAPE",),
    # A -1 at an unknown batch: SHAPE, STRIDED_SLICE and PACK compute the shape at run time, with a static output
    # shape TFLM then refuses; at batch 1 the converter folds them into a constant.
    quantization=Quantization(static_batch=lambda layer: -1 in tuple(layer.target_shape))))


# --- Refused, with what to do instead ----------------------------------------------------------------------------

_RECURRENT = ("TF-MOT's 8-bit scheme cannot quantize this recurrent layer. Use an LSTM or a GRU, which tfjoint runs "
              "as integer operators, quantization-aware; or a Conv1D block (Conv1D + BatchNorm + ReLU, dilated for a "
              "long context), which tfjoint prunes and exports fully int8")
for _name in ("SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D"):
    register_layer(getattr(_layers, _name), LayerKind(quantization=Quantization(refused=_RECURRENT)))
# A Bidirectional(LSTM) runs as both directions' integer cells, merged (`IntegerBidirectionalLSTM`).
register_layer(_layers.Bidirectional, LayerKind(
    quantization=Quantization(substitute=bidirectional_from_layer, check=bidirectional_refusal, static_batch=True),
    keras3=Keras3(translate=bidirectional_from_keras3), tflite_ops=LSTM_OPERATORS + ("CONCATENATION",)))
register_layer(IntegerBidirectionalLSTM, LayerKind(
    prune=Pruning(weight="forward_kernel",
                  also=("forward_recurrent_kernel", "backward_kernel", "backward_recurrent_kernel")),
    quantization=Quantization(config=lambda: PointsQuantizeConfig(
        ["forward_kernel", "forward_recurrent_kernel", "backward_kernel", "backward_recurrent_kernel"])),
    tflite_ops=LSTM_OPERATORS + ("CONCATENATION",), offset_weights=("forward_bias", "backward_bias")))
# An LSTM runs as the integer operators of its unrolled cell (`tfjoint.registry.recurrent`), fake-quantized at each:
# TFLite's fused int8 LSTM takes calibrated ranges that lose such models to chance level.
register_layer(_layers.LSTM, LayerKind(
    prune=Pruning(weight="kernel", also=("recurrent_kernel",), holder=lambda layer: layer.cell),
    # static_batch: a float LSTM (the float reference file) converts only at a fixed batch size.
    quantization=Quantization(rewrite=LSTMAsIntegerCells, check=lstm_refusal, static_batch=True),
    tflite_ops=LSTM_OPERATORS))
register_layer(IntegerLSTM, LayerKind(
    prune=Pruning(weight="kernel", also=("recurrent_kernel",)),
    quantization=Quantization(config=lambda: PointsQuantizeConfig(["kernel", "recurrent_kernel"])),
    tflite_ops=LSTM_OPERATORS, offset_weights=("bias",)))
# A GRU runs as the integer operators of its cell: TFLM has no GRU kernel.
register_layer(_layers.GRU, LayerKind(
    prune=Pruning(weight="kernel", also=("recurrent_kernel",), holder=lambda layer: layer.cell),
    quantization=Quantization(rewrite=GRUAsIntegerCells, check=gru_refusal, static_batch=True),
    tflite_ops=GRU_OPERATORS))
register_layer(IntegerGRU, LayerKind(
    prune=Pruning(weight="kernel", also=("recurrent_kernel",)),
    quantization=Quantization(config=lambda: PointsQuantizeConfig(["kernel", "recurrent_kernel"])),
    tflite_ops=GRU_OPERATORS, offset_weights=("bias",)))
# An Embedding is an int8 GATHER of its table (quantized per tensor; the looked-up rows keep the table's scale).
def _embedding_refusal(layer) -> str | None:
    if layer.get_config().get("mask_zero"):
        return ("it has mask_zero=True: the int8 file carries no Keras mask, so the layers after it would see the "
                "padding; use mask_zero=False (pass an explicit padding or attention mask to attention layers)")
    return None


register_layer(_layers.Embedding, LayerKind(
    prune=Pruning(weight="embeddings"), residual=Residual(writes={"embeddings": -1}, resize=_set("output_dim")),
    quantization=Quantization(config=lambda: _tfmot.Default8BitQuantizeConfig(["embeddings"], [], False),
                              check=_embedding_refusal),
    tflite_ops=("GATHER",), tags=frozenset({"takes_ids"})))

# Keras's MultiHeadAttention runs as `IntegerAttention` (`tfjoint.registry.transformer`): the projections as int8
# CONV_2D, the scores and context as int8 BATCH_MATMUL, SOFTMAX on its fixed grid, each output fake-quantized.
register_layer(_layers.MultiHeadAttention, LayerKind(
    quantization=Quantization(substitute=lambda layer: attention_from_config(layer.get_config()),
                              check=attention_refusal),
    keras3=Keras3(translate=lambda config, layer3: attention_from_config(config)), tflite_ops=ATTENTION_OPERATORS))
# Keras's dot-product Attention (Luong) runs as `IntegerDotAttention`: BATCH_MATMUL, SOFTMAX, BATCH_MATMUL.
register_layer(_layers.Attention, LayerKind(
    quantization=Quantization(substitute=dot_attention_from_layer, check=dot_attention_refusal),
    tflite_ops=DOT_ATTENTION_OPERATORS))
register_layer(IntegerDotAttention, LayerKind(quantization=Quantization(config=lambda: PointsQuantizeConfig()),
                                              tflite_ops=DOT_ATTENTION_OPERATORS))
register_layer(_layers.EinsumDense, LayerKind(
    quantization=Quantization(substitute=einsum_dense_from_layer, check=einsum_dense_refusal),
    tflite_ops=("FULLY_CONNECTED",)))
register_layer(IntegerEinsumDense, LayerKind(
    prune=Pruning(weight="kernel"),
    quantization=Quantization(config=lambda: PointsQuantizeConfig(["kernel"], weight_points=["kernel"])),
    tflite_ops=("FULLY_CONNECTED",), offset_weights=("bias",)))
register_layer(PositionEmbedding, LayerKind(
    residual=Residual(shape_only=True, writes={"position_embeddings": -1}),
    quantization=Quantization(config=lambda: _tfmot.Default8BitQuantizeConfig(["position_embeddings"], [], False)),
    tflite_ops=()))  # a constant in the file: the table's first rows
# GELU: TFLite's int8 GELU on a phone; on a microcontroller (TFLM has no GELU kernel) x * sigmoid(1.702 x).
register_layer(Gelu, LayerKind(channels=Channels(FOLLOWS), quantization=Quantization(
    config=Quantization.output_only().config, micro_substitute=gelu_for_tflm), tflite_ops=("GELU",)))
register_layer(SigmoidGelu, LayerKind(channels=Channels(FOLLOWS), tflite_ops=SIGMOID_GELU_OPERATORS,
                                      quantization=Quantization(config=lambda: PointsQuantizeConfig()),
                                      tags=frozenset({"micro_stand_in"})))
# keras.ops calls the Keras 3 bridge rebuilds (`tfjoint.registry.array_ops`).
register_layer(FilledLike, LayerKind(quantization=Quantization(config=OutputUnlessIntegerConfig),
                                     tflite_ops=("ZEROS_LIKE", "ADD")))
register_layer(ConstantOp, LayerKind(quantization=Quantization(config=OutputUnlessIntegerConfig),
                                     tflite_ops=("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM")))
register_layer(MatMul, LayerKind(quantization=Quantization.output_only(), tflite_ops=("BATCH_MATMUL",)))
register_layer(Slice, LayerKind(quantization=Quantization.values_unchanged(), tflite_ops=("STRIDED_SLICE",)))
register_layer(TakeStep, LayerKind(channels=Channels(FOLLOWS), quantization=Quantization.values_unchanged(),
                                   tflite_ops=("STRIDED_SLICE",)))
# Its heads are a channel group inside it: a head's query/key/value columns and output rows are masked together,
# scored by their summed norms (the planner: by a loss scan), and `strip` removes them (num_heads shrinks; the
# output keeps its width).
_HEAD_AXES = {"query_kernel": 1, "key_kernel": 1, "value_kernel": 1, "output_kernel": 0}
register_layer(IntegerAttention, LayerKind(
    prune=Pruning(weight="query_kernel", also=("key_kernel", "value_kernel", "output_kernel")),
    channels=Channels(HEADS, axes=_HEAD_AXES,
                      sliced=dict({name: {"out": axis} for name, axis in _HEAD_AXES.items()},
                                  query_bias={"out": 0}, key_bias={"out": 0}, value_bias={"out": 0}),
                      zeroed=tuple(_HEAD_AXES), resize=_set("num_heads"), count=lambda layer: int(layer.num_heads),
                      unit="heads",
                      unit_width=lambda layer: int(layer.key_dim)),
    quantization=Quantization(config=lambda: PointsQuantizeConfig(IntegerAttention.KERNELS,
                                                                  weight_points=IntegerAttention.KERNELS)),
    # On a transformer's residual stream: it reads it (its projections' rows) and writes it (its output columns).
    residual=Residual(writes={"output_kernel": -1, "output_bias": 0},
                      reads={"query": {"query_kernel": 0}, "value": {"value_kernel": 0}, "key": {"key_kernel": 0}},
                      same_as={"value": "query", "key": "value"},
                      resize=lambda config, channels: dict(config, output_dim=int(channels)) if config.get(
                          "output_dim") else config),
    tflite_ops=ATTENTION_OPERATORS, offset_weights=IntegerAttention.BIASES))
for _name in ("Conv3D", "Conv3DTranspose", "MaxPooling3D", "AveragePooling3D", "UpSampling3D", "ZeroPadding3D"):
    register_layer(getattr(_layers, _name), LayerKind(quantization=Quantization(
        refused="TFLite has no int8 kernel for 3-D convolutions and pooling here: fold the depth axis into the "
                "channels or the batch and use the 2-D layer")))
