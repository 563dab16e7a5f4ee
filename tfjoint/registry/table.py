"""`LayerKind`, the table of registered kinds, and the lookups every stage uses.

A kind is looked up through the class's MRO: the entry of the nearest
registered ancestor applies, so `class MyConv(keras.layers.Conv2D)` is pruned,
followed and stripped like a Conv2D until it registers an entry of its own.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any, Callable, Mapping

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot, errors
from tfjoint._keras import keras

__all__ = ["LayerKind", "Quantization", "CHANNEL_RULES", "NEW", "FOLLOWS", "CONCATENATES", "MERGES", "FLATTENS",
           "RESHAPES", "OPAQUE", "OUTPUT", "register_layer", "kind_of", "unwrapped", "class_names",
           "pruned_weight_name", "output_channels", "is_input_layer", "kind_named", "registered_class",
           "prunable_layers", "pruned_weight_names", "pruned_variable", "weight_variable", "needs_static_batch",
           "needs_calibration"]

# How a layer's output channels relate to its input channels (channels last).
NEW = "new"                    # it makes new channels from all of its input (Conv, Dense): a producer
FOLLOWS = "follows"            # output channel c is computed from input channel c only (BN, pooling, depthwise)
CONCATENATES = "concatenates"  # its inputs' channels side by side
MERGES = "merges"              # elementwise over inputs with the same channels (Add, Multiply)
FLATTENS = "flattens"          # every channel spread over the spatial positions (Flatten)
RESHAPES = "reshapes"          # keeps the channel axis if the last dimension is unchanged (Reshape)
OPAQUE = "opaque"              # cannot be followed: the channels of its inputs are kept whole
CHANNEL_RULES = (NEW, FOLLOWS, CONCATENATES, MERGES, FLATTENS, RESHAPES, OPAQUE)
OUTPUT = "__output__"  # in `channel_axes`: mask the layer's output instead of a weight


def _output_only_config():
    return _tfmot.Default8BitQuantizeConfig([], [], True)


def _nothing_config():
    return _tfmot.Default8BitQuantizeConfig([], [], False)


def _frozen(mapping) -> Mapping:
    return types.MappingProxyType(dict(mapping or {}))


@dataclasses.dataclass(frozen=True)
class Quantization:
    """How a layer kind becomes int8.

    Attributes:
      config: a factory of the TF-MOT `QuantizeConfig` to use; None lets
        TF-MOT's default 8-bit registry decide (for a subclass of a kind TF-MOT
        knows, its parent's config).
      rewrite: the tfjoint layout rewrite that replaces the layer (before
        TF-MOT's transforms) by layers that are int8, e.g. "conv1d_as_conv2d".
        The rewrite may decline a layer (a causal Conv1D); `config` then applies.
      refused: why it cannot be int8 and what to do instead; `prepare` refuses
        the model with this text, naming the layer.
      calibrated: its int8 ranges come from calibration on representative data
        in the conversion (not from QAT); `export_tflite` then needs
        `representative_data`.
    """

    config: Callable[[], Any] | None = None
    rewrite: str | None = None
    refused: str | None = None
    calibrated: bool = False

    @classmethod
    def output_only(cls) -> Quantization:
        """Fake-quantize the layer's output only (a merge, an upsampling, a custom elementwise layer)."""
        return cls(config=_output_only_config)

    @classmethod
    def values_unchanged(cls) -> Quantization:
        """Nothing to quantize: the layer only moves or selects int8 values (pooling by max, reshapes)."""
        return cls(config=_nothing_config)

    @classmethod
    def weights(cls, weights: tuple[str, ...] = ("kernel",), activations: tuple[str, ...] = ("activation",),
                quantize_output: bool = False) -> Quantization:
        """TF-MOT's per-tensor 8-bit config for the named weights and activations of the layer."""
        return cls(config=lambda: _tfmot.Default8BitQuantizeConfig(list(weights), list(activations),
                                                                   quantize_output))

    def __post_init__(self):
        if self.config is not None and not callable(self.config):
            raise errors.ConfigError(f"`Quantization.config` must be a factory (a callable returning a TF-MOT "
                                     f"QuantizeConfig); received {self.config!r}.")
        if self.refused is not None and (self.config is not None or self.rewrite is not None):
            raise errors.ConfigError("`Quantization.refused` excludes `config` and `rewrite`: a kind is either "
                                     "quantized or refused.")


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """Everything tfjoint knows about one kind of Keras layer.

    Attributes:
      channels: how its output channels relate to its input channels, one of
        `CHANNEL_RULES` ("new", "follows", "concatenates", "merges",
        "flattens", "reshapes", "opaque"). Defaults to "opaque": channel
        pruning keeps the channels around it whole.
      channel_blocker: `(layer, output rank) -> reason or None`: why this
        particular layer cannot be followed (a grouped convolution, a
        BatchNorm over another axis). The reason is shown to the user.
      pruned_weight: the weight magnitude pruning zeroes (e.g. "kernel"), or None.
      pruned_on_request: prune `pruned_weight` only with
        `prepare(prune_depthwise=True)` (TF-MOT leaves depthwise kernels dense).
      also_pruned: further weights pruned to the same target (an LSTM's
        recurrent kernel).
      weights_holder: `layer -> object` holding the weights by those names
        (an RNN layer's cell); the layer itself by default.
      static_batch: the converter lowers this kind only with a fixed batch
        size (an LSTM becomes UNIDIRECTIONAL_SEQUENCE_LSTM), so the file is
        converted for batch 1.
      channel_axes: weights that carry a channel mask, with the axis the mask
        broadcasts along (`OUTPUT` masks the layer's output).
      sliced_weights: when channels go, weight name -> {"in": axis, "out":
        axis}: which axes lose the removed input / output channels.
      range_channels: whether per-channel quantizer ranges follow the "out"
        channels (a Conv's filters) or the "in" ones (a depthwise conv's).
      resize: `(config, output channels) -> config` of the smaller layer.
      output_channels: `layer -> channels` it outputs, for the report.
      quantization: how it becomes int8 (`Quantization`).
      affine_map: for a per-channel affine layer (`y = scale * x + offset` per
        channel), `(config, weights by name, channels, rank) -> (scale,
        offset)` as float32 arrays, or None where it cannot say (another
        axis); the "affine_as_depthwise" rewrite runs it as a DepthwiseConv2D.
      tflite_ops: the TFLite operators it becomes, in order (a
        SeparableConv2D is DEPTHWISE_CONV_2D then CONV_2D).
      tags: roles other stages ask about: the layout rewrites match on
        "batch_norm", "relu", "activation", "fused_activation"; the loss on
        "probabilities" (a layer whose output sums to 1).
      keras3_renamed_arguments: Keras 3 argument name -> tf_keras name.
      keras3_kwargs_defaults: Keras 3 arguments read from **kwargs, with the
        value that means what tf_keras does.
    """

    channels: str = OPAQUE
    channel_blocker: Callable[[Any, int], str | None] | None = None
    pruned_weight: str | None = None
    pruned_on_request: bool = False
    also_pruned: tuple[str, ...] = ()
    weights_holder: Callable[[Any], Any] | None = None
    static_batch: bool = False
    channel_axes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    sliced_weights: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    range_channels: str = "out"
    resize: Callable[[dict, int], dict] | None = None
    output_channels: Callable[[Any], int | None] | None = None
    quantization: Quantization = dataclasses.field(default_factory=Quantization)
    affine_map: Callable[[dict, dict, int, int], Any] | None = None
    tflite_ops: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    keras3_renamed_arguments: Mapping[str, str] = dataclasses.field(default_factory=dict)
    keras3_kwargs_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.channels not in CHANNEL_RULES:
            raise errors.ConfigError(f"`channels` must be one of {list(CHANNEL_RULES)}; received {self.channels!r}.")
        if self.range_channels not in ("in", "out"):
            raise errors.ConfigError(f"`range_channels` must be 'in' or 'out'; received {self.range_channels!r}.")
        if not isinstance(self.quantization, Quantization):
            raise errors.ConfigError(f"`quantization` must be a tfjoint.Quantization; received "
                                     f"{type(self.quantization).__name__}.")
        if self.channels == NEW and self.pruned_weight is None:
            raise errors.ConfigError("a kind with channels='new' (a producer) needs `pruned_weight`: its filters are "
                                     "ranked by that weight's magnitude.")
        for name in ("channel_blocker", "resize", "output_channels", "affine_map", "weights_holder"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise errors.ConfigError(f"`{name}` must be a function or None; received {value!r}.")
        for name in ("channel_axes", "sliced_weights", "keras3_renamed_arguments", "keras3_kwargs_defaults"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "sliced_weights", _frozen({k: _frozen(v) for k, v in self.sliced_weights.items()}))
        object.__setattr__(self, "tflite_ops", tuple(self.tflite_ops))
        object.__setattr__(self, "also_pruned", tuple(self.also_pruned))
        object.__setattr__(self, "tags", frozenset(self.tags))

    def replace(self, **changes) -> LayerKind:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


_KINDS: dict[type, LayerKind] = {}


def register_layer(layer_class: type, kind: LayerKind | None = None, **fields) -> LayerKind:
    """Tells tfjoint how to prune, follow, strip and quantize a kind of layer.

    Subclasses of `layer_class` inherit the entry unless they register their
    own. Registering a class again replaces its entry.

    Example:
      >>> import tfjoint
      >>> from tfjoint import keras
      >>> @keras.utils.register_keras_serializable(package="example")
      ... class Scale(keras.layers.Layer):
      ...     def call(self, x):
      ...         return 2.0 * x
      >>> kind = tfjoint.register_layer(Scale, channels="follows", tflite_ops=("MUL",),
      ...     quantization=tfjoint.Quantization.output_only())
      >>> tfjoint.kind_of(Scale()).channels
      'follows'

    Args:
      layer_class: a tf_keras layer class (register it for Keras
        serialization too: TF-MOT clones models through their configs).
      kind: a ready `LayerKind` (e.g. `tfjoint.kind_of(Conv2D).replace(...)`).
      **fields: or the `LayerKind` fields directly.

    Returns:
      The registered `LayerKind`.

    Raises:
      errors.ConfigError: not a tf_keras layer class, both `kind` and fields,
        or a field out of range.
    """
    if not inspect.isclass(layer_class) or not issubclass(layer_class, keras.layers.Layer):
        received = layer_class.__name__ if inspect.isclass(layer_class) else repr(layer_class)
        hint = (" It is a Keras 3 layer: register the tf_keras (`tfjoint.keras`) class; Keras 3 models are rebuilt "
                "from tf_keras layers.") if inspect.isclass(layer_class) and layer_class.__module__.startswith(
                    "keras") else ""
        raise errors.ConfigError(f"`layer_class` must be a tf_keras layer class (a subclass of "
                                 f"tfjoint.keras.layers.Layer); received {received}.{hint}")
    if kind is not None and fields:
        raise errors.ConfigError(f"give `register_layer` either a LayerKind or its fields, not both; received a "
                                 f"kind and {sorted(fields)}.")
    if kind is not None and not isinstance(kind, LayerKind):
        raise errors.ConfigError(f"`kind` must be a tfjoint.LayerKind; received {type(kind).__name__}.")
    if kind is None:
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(LayerKind)})
        if unknown:
            raise errors.ConfigError(f"unknown LayerKind fields {unknown}; known: "
                                     f"{sorted(f.name for f in dataclasses.fields(LayerKind))}.")
        kind = LayerKind(**fields)
    _KINDS[layer_class] = kind
    return kind


def unwrapped(layer):
    """The layer a TF-MOT QuantizeWrapper wraps, or the layer itself."""
    return layer.layer if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) else layer


def kind_of(layer_or_class) -> LayerKind | None:
    """The entry of a layer (wrapped or not) or class, from its nearest registered ancestor; None if unknown."""
    cls = layer_or_class if inspect.isclass(layer_or_class) else type(unwrapped(layer_or_class))
    for ancestor in cls.__mro__:
        kind = _KINDS.get(ancestor)
        if kind is not None:
            return kind
    return None


def kind_named(class_name: str) -> LayerKind | None:
    """The entry of the registered class whose serialized name is `class_name` ("Conv2D", "pkg>MyLayer")."""
    for cls, kind in _KINDS.items():
        if keras.utils.get_registered_name(cls) == class_name:
            return kind
    return None


def registered_class(layer_or_class) -> type | None:
    """The nearest ancestor (or the class itself) that has an entry."""
    cls = layer_or_class if inspect.isclass(layer_or_class) else type(unwrapped(layer_or_class))
    return next((ancestor for ancestor in cls.__mro__ if ancestor in _KINDS), None)


def class_names(*, tag: str | None = None, rewrite: str | None = None) -> str:
    """`"A|B"`: the serialized class names of registered kinds with `tag` and/or `rewrite`, for layout patterns."""
    names = []
    for cls, kind in _KINDS.items():
        if tag is not None and tag not in kind.tags:
            continue
        if rewrite is not None and kind.quantization.rewrite != rewrite:
            continue
        names.append(keras.utils.get_registered_name(cls))
    return "|".join(sorted(names))


def pruned_weight_name(layer, prune_depthwise: bool = False) -> str | None:
    """Name of the weight tfjoint prunes in `layer`, or None (depthwise kernels only with `prune_depthwise`)."""
    kind = kind_of(layer)
    if kind is None or kind.pruned_weight is None or (kind.pruned_on_request and not prune_depthwise):
        return None
    return kind.pruned_weight


def pruned_weight_names(layer, prune_depthwise: bool = False) -> tuple[str, ...]:
    """Every weight tfjoint prunes in `layer` (the ranked one first), or () if none."""
    main = pruned_weight_name(layer, prune_depthwise)
    kind = kind_of(layer)
    return (main,) + kind.also_pruned if main is not None and kind is not None else ()


def weight_variable(layer, name: str):
    """The variable named `name` of a (wrapped) layer, from the object its kind says holds it (an RNN's cell)."""
    inner = unwrapped(layer)
    kind = kind_of(inner)
    holder = kind.weights_holder(inner) if kind is not None and kind.weights_holder else inner
    return getattr(holder, name)


def pruned_variable(layer, prune_depthwise: bool = False):
    """The variable of the weight tfjoint ranks and prunes in `layer`, or None."""
    name = pruned_weight_name(layer, prune_depthwise)
    return weight_variable(layer, name) if name is not None else None


def needs_static_batch(model) -> bool:
    """Whether any layer of `model` converts only with a fixed batch size (see `LayerKind.static_batch`)."""
    return any(getattr(kind_of(layer), "static_batch", False) for layer in model.layers)


def needs_calibration(model) -> list:
    """The layers of `model` whose int8 ranges come from calibration in the conversion, not from QAT."""
    kinds = [(layer, kind_of(layer)) for layer in model.layers]
    return [layer for layer, kind in kinds if kind is not None and kind.quantization.calibrated]


def prunable_layers(model, prune_depthwise: bool = False) -> dict[str, int]:
    """Layers tfjoint can prune in `model`, with the size of the weight it prunes.

    Example:
      >>> import tfjoint
      >>> from tfjoint import keras
      >>> inputs = keras.Input((8,))
      >>> model = keras.Model(inputs, keras.layers.Dense(4, name="head")(inputs))
      >>> tfjoint.prunable_layers(model)
      {'head': 32}
    """
    sizes = {}
    for layer in model.layers:
        variable = pruned_variable(layer, prune_depthwise)
        if variable is not None:
            sizes[layer.name] = int(variable.shape.num_elements())
    return sizes


def output_channels(layer) -> int | None:
    """Output channels of a built layer (filters, units, depthwise channels) if its kind says, else None."""
    kind = kind_of(layer)
    inner = unwrapped(layer)
    if kind is None or kind.output_channels is None or not inner.built:
        return None
    return kind.output_channels(inner)


def is_input_layer(layer) -> bool:
    """Whether `layer` is a model's InputLayer."""
    return isinstance(layer, keras.layers.InputLayer)
