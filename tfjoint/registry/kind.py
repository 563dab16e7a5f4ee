"""`LayerKind`: everything tfjoint knows about one kind of Keras layer, as a composition of facets.

* `Pruning`: which weight magnitude pruning zeroes (and where it lives);
* `Channels` (`tfjoint.registry.channel_rules`): how channel pruning follows it;
* `Quantization`: how it becomes int8 (TF-MOT's config, a config of
  tfjoint's, a layout rewrite, or refused with the reason);
* `Keras3`: what the Keras 3 bridge must translate in its config.

Each stage asks the facet it needs; no stage branches on a string a kind
holds.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import warnings
from typing import Any, Callable, Mapping

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot, errors
from tfjoint.registry.channel_rules import NEW, Channels, rule_named

__all__ = ["Pruning", "Quantization", "Keras3", "Residual", "LayerKind", "Rewrite", "FLAT_FIELDS"]

# TF-MOT's graph-transformation base class, typed as Any: TF-MOT ships no type information for it.
_Transform: Any = tfmot.quantization.keras.graph_transformations.transforms.Transform


class Rewrite(_Transform):
    """A layout rewrite that registry entries refer to (`Quantization(rewrite=ThisClass)`).

    A TF-MOT graph `Transform` whose pattern matches the registered kinds that
    name it (`tfjoint.registry.rewrites` holds tfjoint's own). `PHASE` says
    whether it runs "before" TF-MOT's own transforms or "after" them; `ORDER`
    orders the rewrites of one phase; `instances(input_shapes)` gives the
    transforms it runs (one per pattern variant).
    """

    PHASE = "before"
    ORDER = 50
    MATCHES: type | None = None  # the rewrite entries name, when a variant runs for another's kinds

    @classmethod
    def matched(cls) -> type:
        return cls.MATCHES or cls

    @classmethod
    def instances(cls, input_shapes: dict[str, tuple]) -> list:
        return [cls()]


def _frozen(mapping) -> Mapping:
    return types.MappingProxyType(dict(mapping or {}))


@dataclasses.dataclass(frozen=True)
class Pruning:
    """Which weights magnitude pruning zeroes in a layer kind.

    Attributes:
      weight: the weight ranked and pruned (e.g. "kernel"), or None.
      on_request: prune it only with `prepare(prune_depthwise=True)` (TF-MOT
        leaves depthwise kernels dense).
      also: further weights pruned to the same target (an LSTM's recurrent
        kernel).
      holder: `layer -> object` holding the weights by those names (an RNN
        layer's cell); the layer itself by default.
    """

    weight: str | None = None
    on_request: bool = False
    also: tuple[str, ...] = ()
    holder: Callable[[Any], Any] | None = None

    def __post_init__(self):
        object.__setattr__(self, "also", tuple(self.also))
        if self.holder is not None and not callable(self.holder):
            raise errors.ConfigError(f"`weights_holder` must be a function or None; received {self.holder!r}.")

    def weights(self, prune_depthwise: bool = False) -> tuple[str, ...]:
        """The weights pruned (the ranked one first), or () if none (or only on request, not requested)."""
        if self.weight is None or (self.on_request and not prune_depthwise):
            return ()
        return (self.weight,) + self.also


def _output_only_config():
    return _tfmot.Default8BitQuantizeConfig([], [], True)


def _nothing_config():
    return _tfmot.Default8BitQuantizeConfig([], [], False)


@dataclasses.dataclass(frozen=True)
class Quantization:
    """How a layer kind becomes int8.

    Attributes:
      config: a factory of the TF-MOT `QuantizeConfig` to use (called with
        no argument, or with the layer if it takes one); None lets TF-MOT's
        default 8-bit registry decide (for a subclass of a kind TF-MOT
        knows, its parent's config).
      rewrite: the layout rewrite (a `tfjoint.registry.rewrites.Rewrite`
        subclass) that replaces the layer, before TF-MOT's transforms, by
        layers that are int8. The rewrite may decline a layer (a causal
        Conv1D); `config` then applies.
      refused: why it cannot be int8 and what to do instead; `prepare`
        refuses the model with this text, naming the layer.
      calibrated: its int8 ranges come from calibration on representative
        data in the conversion (not from QAT); `export_tflite` then needs
        `representative_data`.
      static_batch: the converter lowers it only with a fixed batch size,
        so the file is converted for batch 1; or `layer -> bool`, for the
        layers of a kind that need it (a Reshape with a -1: at an unknown
        batch the file computes its shape at run time, which TFLM cannot).
      check: `layer -> reason or None`: why this particular layer cannot be
        quantized (and what to do), although its kind can; `prepare` refuses
        the model with it before training.
      substitute: `layer -> layer or None`: a layer of tfjoint's that
        computes the same from the same weights (in the same order) and is
        made of operators TFLite runs in int8 (None: keep this one);
        `prepare` puts it in the layer's place before anything else (a
        MultiHeadAttention, a LayerNormalization, an Add of three inputs).
      micro_substitute: `layer -> layer or None`: the stand-in where the file
        will run in TensorFlow Lite Micro, which lacks the layer's operator
        (a GELU); `prepare(check="tflm")` uses it, and says so.
    """

    config: Callable[..., Any] | None = None
    rewrite: type[Rewrite] | None = None
    refused: str | None = None
    calibrated: bool = False
    static_batch: bool | Callable[[Any], bool] = False
    check: Callable[[Any], str | None] | None = None
    substitute: Callable[[Any], Any] | None = None
    micro_substitute: Callable[[Any], Any] | None = None

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
        if self.rewrite is not None and not (inspect.isclass(self.rewrite) and issubclass(self.rewrite, Rewrite)):
            raise errors.ConfigError(f"`Quantization.rewrite` must be a tfjoint.registry.Rewrite subclass (a layout "
                                     f"rewrite class, not its name); received {self.rewrite!r}.")
        for name in ("check", "substitute", "micro_substitute"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise errors.ConfigError(f"`Quantization.{name}` must be a function or None; received {value!r}.")
        if self.refused is not None and (self.config is not None or self.rewrite is not None):
            raise errors.ConfigError("`Quantization.refused` excludes `config` and `rewrite`: a kind is either "
                                     "quantized or refused.")

    def config_for(self, layer):
        """The TF-MOT QuantizeConfig for `layer` from `config` (None if the kind leaves it to TF-MOT)."""
        if self.config is None:
            return None
        try:
            takes_layer = len(inspect.signature(self.config).parameters) > 0
        except (TypeError, ValueError):
            takes_layer = False
        return self.config(layer) if takes_layer else self.config()


@dataclasses.dataclass(frozen=True)
class Keras3:
    """What the Keras 3 bridge translates for this kind.

    Attributes:
      renamed_arguments: Keras 3 argument name -> tf_keras name.
      kwargs_defaults: Keras 3 arguments read from **kwargs, with the value
        that means what tf_keras does.
      translate: `(Keras 3 config, Keras 3 layer) -> tf_keras layer`, for a
        kind whose Keras 3 config tf_keras cannot read (a MultiHeadAttention):
        the layer the bridge builds instead; the Keras 3 layer's weights are
        copied to it in their order.
      rebuild: for a Keras 3 class with no tf_keras twin (keras_hub's
        layers; `tfjoint.registry.keras3_layers`): `(config entry, Keras 3
        layer) -> Rebuilt`, the layers that replay one call of it and where
        their weights come from. It applies to that class only, not to
        subclasses, which may call differently.
    """

    renamed_arguments: Mapping[str, str] = dataclasses.field(default_factory=dict)
    kwargs_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    translate: Callable[[dict, Any], Any] | None = None
    rebuild: Callable[[dict, Any], Any] | None = None

    def __post_init__(self):
        for name in ("translate", "rebuild"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise errors.ConfigError(f"`Keras3.{name}` must be a function or None; received {value!r}.")
        object.__setattr__(self, "renamed_arguments", _frozen(self.renamed_arguments))
        object.__setattr__(self, "kwargs_defaults", _frozen(self.kwargs_defaults))


@dataclasses.dataclass(frozen=True)
class Residual:
    """How this kind meets a transformer's residual stream, for `residual_sparsity` (`tfjoint.prune.residual`),
    beyond what its `Channels` say (a "follows" kind carries the stream, a "merges" kind joins it, a "new" kind
    writes it through its sliced "out" axes and reads it through its "in" axes).

    Attributes:
      carries: its output is the stream when its input is, though it is no "follows" kind (a LayerNorm: its
        statistics change with the width, which the fit after narrowing absorbs).
      shape_only: it reads only its input's shape (a position table as wide as its input).
      carried: weight -> axis of the stream's channels, in a carrying layer (a LayerNorm's gamma and beta).
      writes: weight -> axis of its output channels, where its output joins the stream.
      reads: call argument -> {weight: axis of that input's channels}, for each argument that may be the stream
        (attention's "query", "value", "key").
      same_as: a call argument left out -> the one it defaults to (attention's value is its query).
      resize: `(config, channels) -> config` of the layer writing `channels` (an Embedding's output_dim);
        None: its width follows its input.
    """

    carries: bool = False
    shape_only: bool = False
    carried: Mapping[str, int] = dataclasses.field(default_factory=dict)
    writes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    reads: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    same_as: Mapping[str, str] = dataclasses.field(default_factory=dict)
    resize: Callable[[dict, int], dict] | None = None

    def __post_init__(self):
        if self.resize is not None and not callable(self.resize):
            raise errors.ConfigError(f"`Residual.resize` must be a function or None; received {self.resize!r}.")
        for name in ("carried", "writes", "same_as"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "reads", _frozen({k: _frozen(v) for k, v in dict(self.reads).items()}))


# `register_layer`'s flat keywords (tfjoint 0.3, deprecated), each the facet field it sets.
FLAT_FIELDS = {
    "channels": ("channels", "rule"), "channel_blocker": ("channels", "blocker"),
    "channel_axes": ("channels", "axes"), "sliced_weights": ("channels", "sliced"),
    "zeroed_weights": ("channels", "zeroed"), "range_channels": ("channels", "range_channels"),
    "resize": ("channels", "resize"), "output_channels": ("channels", "count"),
    "pruned_weight": ("prune", "weight"), "pruned_on_request": ("prune", "on_request"),
    "also_pruned": ("prune", "also"), "weights_holder": ("prune", "holder"),
    "static_batch": ("quantization", "static_batch"),
    "keras3_renamed_arguments": ("keras3", "renamed_arguments"),
    "keras3_kwargs_defaults": ("keras3", "kwargs_defaults"),
}
_FACETS = {"prune": Pruning, "channels": Channels, "quantization": Quantization, "keras3": Keras3,
           "residual": Residual}


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """Everything tfjoint knows about one kind of Keras layer: its facets, operators and tags.

    Attributes:
      prune: `Pruning`: the weights magnitude pruning zeroes.
      channels: `Channels` (or a rule name such as "follows"): how channel
        pruning follows it.
      quantization: `Quantization`: how it becomes int8.
      keras3: `Keras3`: what the Keras 3 bridge translates.
      residual: `Residual`: how it meets a transformer's residual stream.
      tflite_ops: the TFLite operators it becomes, in order (a
        SeparableConv2D is DEPTHWISE_CONV_2D then CONV_2D).
      tags: roles other stages ask about: the layout rewrites match on
        "batch_norm", "relu", "activation", "fused_activation"; the loss on
        "probabilities" (a layer whose output sums to 1).
      offset_weights: the weights that shift each output channel by a
        constant (a bias, BatchNorm's beta): an untrained model's zeros there
        are given small distinct values before the conversion check.
      affine_map: for a per-channel affine layer (`y = scale * x + offset`
        per channel), `(config, weights by name, channels, rank) -> (scale,
        offset)` as float32 arrays, or None where it cannot say (another
        axis); the affine rewrite runs it as a DepthwiseConv2D.

    `LayerKind.of(**fields)` builds one from `register_layer`'s flat keywords.
    """

    prune: Pruning = dataclasses.field(default_factory=Pruning)
    channels: Channels = dataclasses.field(default_factory=Channels)
    quantization: Quantization = dataclasses.field(default_factory=Quantization)
    keras3: Keras3 = dataclasses.field(default_factory=Keras3)
    residual: Residual = dataclasses.field(default_factory=Residual)
    tflite_ops: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    offset_weights: tuple[str, ...] = ()
    affine_map: Callable[[dict, dict, int, int], Any] | None = None

    def __post_init__(self):
        if not isinstance(self.channels, Channels):
            object.__setattr__(self, "channels", Channels(rule=rule_named(self.channels)))
        for name, facet in _FACETS.items():
            if not isinstance(getattr(self, name), facet):
                raise errors.ConfigError(f"`{name}` must be a tfjoint {facet.__name__}; received "
                                         f"{type(getattr(self, name)).__name__}.")
        if self.channels.rule is NEW and self.prune.weight is None:
            raise errors.ConfigError("a kind with channels='new' (a producer) needs `pruned_weight` "
                                     "(Pruning(weight=...)): its filters are ranked by that weight's magnitude.")
        if self.affine_map is not None and not callable(self.affine_map):
            raise errors.ConfigError(f"`affine_map` must be a function or None; received {self.affine_map!r}.")
        object.__setattr__(self, "tflite_ops", tuple(self.tflite_ops))
        object.__setattr__(self, "tags", frozenset(self.tags))
        object.__setattr__(self, "offset_weights", tuple(self.offset_weights))

    @classmethod
    def of(cls, **fields) -> LayerKind:
        """A kind from flat keywords (`channels="follows"`, `pruned_weight="kernel"`, ...) and/or facets."""
        known = set(FLAT_FIELDS) | {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise errors.ConfigError(f"unknown LayerKind fields {unknown}; known: {sorted(known)}.")
        facets: dict[str, dict] = {name: {} for name in _FACETS}
        direct = {}
        for name, value in fields.items():
            if name in FLAT_FIELDS and not (name == "channels" and isinstance(value, Channels)):
                facet, attribute = FLAT_FIELDS[name]
                facets[facet][attribute] = value
                if name != "channels":  # a rule name is a shorthand of Channels(rule=...), not a flat field
                    warnings.warn(f"register_layer({name}=...) is deprecated and will be removed in tfjoint 0.5: "
                                  f"give the facet, {_FACETS[facet].__name__}({attribute}=...), as `{facet}=`.",
                                  DeprecationWarning, stacklevel=3)
            else:
                direct[name] = value
        for facet, values in facets.items():
            if not values:
                continue
            base: Any = direct.get(facet)
            base = base if isinstance(base, _FACETS[facet]) else _FACETS[facet]()
            direct[facet] = dataclasses.replace(base, **values)
        return cls(**direct)

    def replace(self, **changes) -> LayerKind:
        """A copy with some fields changed (facets or flat keywords), checked again."""
        flat = {name: value for name, value in changes.items() if name in FLAT_FIELDS
                and not (name == "channels" and isinstance(value, Channels))}
        kind = dataclasses.replace(self, **{k: v for k, v in changes.items() if k not in flat})
        for name, value in flat.items():
            facet, attribute = FLAT_FIELDS[name]
            kind = dataclasses.replace(kind, **{facet: dataclasses.replace(getattr(kind, facet), **{attribute: value})})
        return kind

    # Shorthands the stages read.
    @property
    def pruned_weight(self) -> str | None:
        return self.prune.weight

    @property
    def is_producer(self) -> bool:
        return self.channels.rule.producer
