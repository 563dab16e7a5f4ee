"""The table of registered layer kinds, and the lookups every stage uses.

A kind is looked up through the class's MRO: the entry of the nearest
registered ancestor applies, so `class MyConv(keras.layers.Conv2D)` is pruned,
followed and stripped like a Conv2D until it registers an entry of its own.
`scoped()` gives a test (or a notebook cell) registrations that end with it.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

from tfjoint import _tfmot, errors
from tfjoint._keras import is_keras3_layer_class, keras, weight_short_name
from tfjoint.registry.channel_rules import NEW
from tfjoint.registry.kind import LayerKind, Quantization

__all__ = ["LayerKind", "Quantization", "register_layer", "scoped", "kind_of", "unwrapped", "class_names",
           "kind_named", "registered_class", "registered_kinds", "pruned_weight_name", "pruned_weight_names",
           "weight_variable", "pruned_variable", "needs_static_batch", "needs_calibration", "prunable_layers",
           "output_channels", "is_input_layer", "prunable_kinds_sentence", "int8_kinds_sentence",
           "offset_weight_names", "offset_variables", "channel_axis"]

_KINDS: dict[type, LayerKind] = {}


def register_layer(layer_class: type, kind: LayerKind | None = None, **fields) -> LayerKind:
    """Tells tfjoint how to prune, follow, strip and quantize a kind of layer.

    Subclasses of `layer_class` inherit the entry unless they register their
    own. Registering a class again replaces its entry (inside `scoped()`,
    until the scope ends).

    Example:
      >>> import tfjoint
      >>> import tf_keras as keras
      >>> @keras.utils.register_keras_serializable(package="example")
      ... class Scale(keras.layers.Layer):
      ...     def call(self, x):
      ...         return 2.0 * x
      >>> with tfjoint.registry.scoped():
      ...     kind = tfjoint.register_layer(Scale, channels="follows", tflite_ops=("MUL",),
      ...         quantization=tfjoint.registry.Quantization.output_only())
      ...     tfjoint.registry.kind_of(Scale()).channels.rule.name
      'follows'

    Args:
      layer_class: a tf_keras layer class, or a Keras 3 one (`import keras`):
        the Keras 3 bridge then carries the layer into the tf_keras model.
        Register it for Keras serialization too (TF-MOT clones models
        through their configs).
      kind: a ready `LayerKind` (e.g. `tfjoint.registry.kind_of(Conv2D).replace(...)`).
      **fields: or the kind's fields: facets (`prune=`, `channels=`,
        `quantization=`, `keras3=`, `tflite_ops=`, `tags=`, `affine_map=`) or
        the flat keywords of `LayerKind.of` (`channels="follows"`,
        `pruned_weight="kernel"`, `channel_axes=...`).

    Returns:
      The registered `LayerKind`.

    Raises:
      errors.ConfigError: not a Keras layer class, both `kind` and fields,
        or a field out of range.
    """
    keras_layer = inspect.isclass(layer_class) and (issubclass(layer_class, keras.layers.Layer)
                                                    or is_keras3_layer_class(layer_class))
    if not keras_layer:
        received = layer_class.__name__ if inspect.isclass(layer_class) else repr(layer_class)
        raise errors.ConfigError(f"`layer_class` must be a tf_keras layer class (a subclass of "
                                 f"tf_keras.layers.Layer) or a Keras 3 one (keras.layers.Layer); received "
                                 f"{received}.")
    if kind is not None and fields:
        raise errors.ConfigError(f"give `register_layer` either a LayerKind or its fields, not both; received a "
                                 f"kind and {sorted(fields)}.")
    if kind is not None and not isinstance(kind, LayerKind):
        raise errors.ConfigError(f"`kind` must be a tfjoint.registry.LayerKind; received {type(kind).__name__}.")
    if kind is None:
        kind = LayerKind.of(**fields)
    if is_keras3_layer_class(layer_class) and (kind.prune.weight or kind.channels.axes):
        raise errors.ConfigError(
            f"`layer_class` {layer_class.__name__} is a Keras 3 layer: tfjoint runs it as it is inside the tf_keras "
            f"model, so it cannot prune or mask its weights (received pruned_weight={kind.prune.weight!r}, "
            f"channel_axes={dict(kind.channels.axes)}). Register it without them, or register a tf_keras twin of it "
            "(tf_keras.layers.Layer) that builds the weights tfjoint prunes.")
    _KINDS[layer_class] = kind
    return kind


@contextlib.contextmanager
def scoped() -> Iterator[None]:
    """Registrations made inside end with the block: the table is put back as it was.

    Example:
      with tfjoint.registry.scoped():
          tfjoint.register_layer(MyLayer, channels="follows")
          ...  # MyLayer is known here only
    """
    saved = dict(_KINDS)
    try:
        yield
    finally:
        _KINDS.clear()
        _KINDS.update(saved)


def unwrapped(layer):
    """The layer a TF-MOT QuantizeWrapper (or tfjoint's Keras 3 host) holds, or the layer itself."""
    layer = layer.layer if _tfmot.is_quantize_wrapper(layer) else layer
    return getattr(layer, "keras3_layer", None) or layer


def kind_of(layer_or_class) -> LayerKind | None:
    """The entry of a layer (wrapped or not) or class, from its nearest registered ancestor; None if unknown."""
    cls = registered_class(layer_or_class)
    return _KINDS[cls] if cls is not None else None


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


def registered_kinds() -> dict[type, LayerKind]:
    """Every registered class and its kind (a copy)."""
    return dict(_KINDS)


def class_names(*, tag: str | None = None, rewrite: type | None = None) -> str:
    """`"A|B"`: the serialized class names of registered kinds with `tag` and/or `rewrite`, for layout patterns."""
    names = []
    for cls, kind in _KINDS.items():
        if tag is not None and tag not in kind.tags:
            continue
        if rewrite is not None and kind.quantization.rewrite is not rewrite:
            continue
        names.append(keras.utils.get_registered_name(cls))
    return "|".join(sorted(names))


def pruned_weight_names(layer, prune_depthwise: bool = False) -> tuple[str, ...]:
    """Every weight tfjoint prunes in `layer` (the ranked one first), or () if none."""
    kind = kind_of(layer)
    return kind.prune.weights(prune_depthwise) if kind is not None else ()


def pruned_weight_name(layer, prune_depthwise: bool = False) -> str | None:
    """Name of the weight tfjoint ranks and prunes in `layer`, or None (depthwise kernels only on request)."""
    names = pruned_weight_names(layer, prune_depthwise)
    return names[0] if names else None


def weight_variable(layer, name: str):
    """The variable named `name` of a (wrapped) layer, from the object its kind says holds it (an RNN's cell)."""
    inner = unwrapped(layer)
    kind = kind_of(inner)
    holder = kind.prune.holder(inner) if kind is not None and kind.prune.holder else inner
    return getattr(holder, name)


def pruned_variable(layer, prune_depthwise: bool = False):
    """The variable of the weight tfjoint ranks and prunes in `layer`, or None."""
    name = pruned_weight_name(layer, prune_depthwise)
    return weight_variable(layer, name) if name is not None else None


def offset_weight_names(layer) -> tuple[str, ...]:
    """The weights of `layer` that shift each output channel by a constant (a bias, BatchNorm's beta)."""
    kind = kind_of(layer)
    return kind.offset_weights if kind is not None else ()


def offset_variables(layer) -> list:
    """The variables of `offset_weight_names(layer)` among the layer's (or its wrapper's) weights."""
    names = set(offset_weight_names(layer))
    return [variable for variable in layer.weights if weight_short_name(variable) in names]


def needs_static_batch(model) -> bool:
    """Whether any layer of `model` converts only with a fixed batch size (see `Quantization.static_batch`)."""
    for layer in model.layers:
        static = getattr(kind_of(layer), "quantization", Quantization()).static_batch
        if static(unwrapped(layer)) if callable(static) else static:
            return True
    return False


def needs_calibration(model) -> list:
    """The layers of `model` whose int8 ranges come from calibration in the conversion, not from QAT."""
    kinds = [(layer, kind_of(layer)) for layer in model.layers]
    return [layer for layer, kind in kinds if kind is not None and kind.quantization.calibrated]


def prunable_layers(model, prune_depthwise: bool = False) -> dict[str, int]:
    """Layers tfjoint can prune in `model`, with the size of the weight it prunes.

    Example:
      >>> import tfjoint
      >>> import tf_keras as keras
      >>> inputs = keras.Input((8,))
      >>> model = keras.Model(inputs, keras.layers.Dense(4, name="head")(inputs))
      >>> tfjoint.inspect.prunable_layers(model)
      {'head': 32}
    """
    sizes = {}
    for layer in model.layers:
        variable = pruned_variable(layer, prune_depthwise)
        if variable is not None:
            sizes[layer.name] = int(variable.shape.num_elements())
    return sizes


def channel_axis(layer, weight_name: str | None) -> int:
    """The axis of `layer`'s weight `weight_name` that holds its channels (its kind's `channels.axes`): the last by
    default; another for a kernel laid out otherwise (a depthwise kernel's input channels, attention's heads)."""
    kind = kind_of(layer)
    axis = kind.channels.axes.get(weight_name, -1) if kind is not None and weight_name is not None else -1
    return axis if isinstance(axis, int) else -1


def output_channels(layer) -> int | None:
    """Output channels of a built layer (filters, units, depthwise channels) if its kind says, else None."""
    kind = kind_of(layer)
    inner = unwrapped(layer)
    if kind is None or kind.channels.count is None or not inner.built:
        return None
    return kind.channels.count(inner)


def is_input_layer(layer) -> bool:
    """Whether `layer` is a model's InputLayer."""
    return isinstance(layer, keras.layers.InputLayer)


def _names(classes) -> list[str]:
    return sorted(dict.fromkeys(cls.__name__ for cls in classes))


def prunable_kinds_sentence() -> str:
    """Which registered kinds tfjoint prunes, from the table: "Conv1D, Conv2D, Dense, LSTM kernels; ..."."""
    always = [cls for cls, kind in _KINDS.items() if kind.prune.weight and not kind.prune.on_request]
    on_request = [cls for cls, kind in _KINDS.items() if kind.prune.weight and kind.prune.on_request]
    producers = [cls for cls, kind in _KINDS.items() if kind.channels.rule is NEW]
    sentence = f"tfjoint prunes the weights of {', '.join(_names(always))} layers"
    if on_request:
        sentence += f" ({', '.join(_names(on_request))} with prune_depthwise=True)"
    return sentence + f", and removes channels of {', '.join(_names(producers))} layers"


def int8_kinds_sentence(limit: int = 16) -> str:
    """The registered built-in kinds that become int8 operators, from the table (for refusals)."""
    names = _names(cls for cls, kind in _KINDS.items() if kind.quantization.refused is None and kind.tflite_ops
                   and cls.__module__.split(".")[0] == "tf_keras")
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
