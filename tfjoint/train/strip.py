"""`tfjoint.strip`: remove the pruning machinery (and pruned channels), keep TF-MOT's QAT model.

The result is what `tfmot.quantization.keras.quantize_apply` with the default
8-bit scheme would have built for the (smaller) model: TF-MOT's quantize
configs and quantizers in its QuantizeWrapperV2 and QuantizeLayer (as
tfjoint's subclasses that load from `.keras`, `tfjoint.quantize.wrappers`),
trained ranges kept, every pruned kernel multiplied by its mask so the zeros
are in the weights themselves, and no mask, threshold or step counter left.
It is a `StrippedModel`, which records how it was trained, and converts to
int8.

When channels were pruned, they are removed for real: producers get fewer
filters (or units), BatchNorm and depthwise parameters and per-channel
quantizer ranges are sliced, consumers lose the matching input channels (the
matching rows after a Flatten), and a Reshape that carries the channels is
resized. The removed channels were exactly zero, so the smaller model
computes what the masked one did.
"""

import numpy as np
import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot, errors
from tfjoint._keras import check_tf_keras_model, keras, nested_inputs_and_outputs, weight_short_name
from tfjoint.prune.channel_groups import Layout, channel_layouts
from tfjoint.prune.schedule import JointSchedule
from tfjoint.quantize.config import JointQuantizeConfig, unwrap_config
from tfjoint.quantize.quantizers import CHANNEL_MASK, ChannelMaskQuantizer, GatedQuantizer, mask_shape
from tfjoint.quantize.wrappers import JointQuantizeLayer, JointQuantizeWrapper
from tfjoint.registry import identity_layer, kind_of, unwrapped
from tfjoint.train.prepared_model import group_masks
from tfjoint.train.readback import (
    channel_members,
    is_prepared,
    original_channels,
    prepared_model,
    pruned_kernels,
    pruning_plan,
    training_step,
)
from tfjoint.train.stripped_model import StrippedModel, TrainingRecord

__all__ = ["strip", "strips_cleanly", "kept_channels_per_layer", "float_twin"]

_QuantizeLayer = _tfmot.QuantizeLayer


def _kept_indices(layout: Layout, masks: dict[str, np.ndarray]) -> np.ndarray:
    indices, offset = [], 0
    for group, size in layout.segments:
        kept = np.flatnonzero(masks[group]) if group in masks else np.arange(size)
        indices.append(offset + kept)
        offset += size
    kept = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    if layout.positions:
        kept = np.concatenate([position * layout.channels + kept for position in range(layout.positions)])
    return kept


def kept_channels_per_layer(model) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """For a prepared model that prunes channels: each layer's kept input and output channel indices."""
    masks = group_masks(model)
    producer_of = {}
    for layer in model.layers:
        channels = getattr(getattr(layer, "quantize_config", None), "channels", None)
        if channels and channels["producer"]:
            producer_of[layer.name] = channels["segments"][0][0]

    def producer_group(layer):
        return producer_of.get(layer.name)

    layouts = channel_layouts(model, producer_group, freeze=lambda groups, reason: None,
                              merge=lambda groups: groups[0], check_activations=False)
    return {name: (_kept_indices(entry.inputs[0], masks) if len(entry.inputs) == 1 else None,
                   _kept_indices(entry.own, masks)) for name, entry in layouts.items()}


def _smaller_config(inner, keep_out: np.ndarray | None) -> dict:
    """The layer's config with `keep_out` output channels, as its registry entry resizes it."""
    config = inner.get_config()
    kind = kind_of(inner)
    if keep_out is None or kind is None or kind.channels.resize is None:
        return config
    return kind.channels.resize(config, int(keep_out.size))


def _strip_layer(layer, kept):
    keep_out = kept.get(layer.name, (None, None))[1]
    if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
        inner = layer.layer.__class__.from_config(_smaller_config(layer.layer, keep_out))
        return JointQuantizeWrapper(inner, unwrap_config(layer.quantize_config), name=layer.name)
    if isinstance(layer, _QuantizeLayer):
        quantizer = layer.quantizer.quantizer if isinstance(layer.quantizer, GatedQuantizer) else layer.quantizer
        return JointQuantizeLayer(quantizer=quantizer, name=layer.name)
    return layer.__class__.from_config(_smaller_config(layer, keep_out))


def _take(value: np.ndarray, indices, axis: int) -> np.ndarray:
    if indices is None or value.ndim == 0 or value.shape[axis] == len(indices):
        return value
    return np.take(value, indices, axis=axis)


def _sliced(kind, name: str, value: np.ndarray, keep_in, keep_out) -> np.ndarray:
    """`value` of weight `name` of a layer of registry kind `kind`, with the removed channels cut out."""
    if kind is None:
        return value
    kept = {"in": keep_in, "out": keep_out}
    axes = kind.channels.sliced.get(name)
    if axes is not None:
        for side, axis in axes.items():
            value = _take(value, kept[side], axis % value.ndim)
        return value
    if value.ndim == 1 and name.endswith(("_min", "_max")):  # a per-channel quantizer range
        channels = kept[kind.channels.range_channels]
        if channels is not None and value.shape[0] > len(channels):
            return _take(value, channels, 0)
    return value


def _masked_values(model) -> dict[tuple[str, str], np.ndarray]:
    """Every weight that a mask multiplies in the forward pass, with its masks applied."""
    values = {}
    for pk in pruned_kernels(model):
        kernel = values[(pk.layer_name, pk.weight_name)] = pk.masked_kernel()
        if pk.quantizer.shared_table:  # the range of the kernel it ships, so every channel keeps the one table
            for name, value in pk.quantizer.range_of(kernel, pk.quantizer_weights).items():
                values[(pk.layer_name, name)] = value
    for wrapper in model.layers:
        for weight, quantizer, weights in _tfmot.weight_vars(wrapper):
            axis = getattr(quantizer, "channel_axis", None)
            if axis is not None and (isinstance(quantizer, ChannelMaskQuantizer) or (
                    isinstance(quantizer, GatedQuantizer)
                    and (wrapper.layer.name, weight_short_name(weight)) not in values)):
                mask = weights[CHANNEL_MASK].numpy().reshape(mask_shape(weight.shape.rank, axis))
                values[(wrapper.layer.name, weight_short_name(weight))] = weight.numpy() * mask
    return values


def strip(model: keras.Model) -> keras.Model:
    """Returns a copy of a prepared model with pruning baked in and removed (and pruned channels deleted).

    Args:
      model: a model returned by `tfjoint.prepare` (trained or not), one
        loaded with `tfjoint.load_model`, or a `tfjoint.Distiller` (its
        student is stripped).

    Returns:
      A new, uncompiled `StrippedModel`: TF-MOT's QAT layers, whose pruned
      kernels hold exact zeros and whose pruned channels are gone, with the
      record of how it was trained (`model.training`: the schedule, each
      kernel's final sparsity, the channels before pruning, the steps), which
      its `.keras` file keeps and `export_tflite` reports.

    Raises:
      errors.ModelTypeError: `model` is not a tf_keras model.
      errors.ModelStructureError: `model` was not prepared with tfjoint.
    """
    check_tf_keras_model(model)
    model = prepared_model(model)
    if not is_prepared(model):
        raise errors.ModelStructureError(
            f"model '{model.name}' was not prepared with tfjoint.prepare, so there is nothing to "
            "strip. Pass the model tfjoint.prepare returned (or tfjoint.load_model loaded)."
        )
    kept = kept_channels_per_layer(model) if channel_members(model) else {}
    with tfmot.quantization.keras.quantize_scope():
        stripped = keras.models.clone_model(model, clone_function=lambda layer: _strip_layer(layer, kept))
    record = None
    if isinstance(getattr(model, "schedule", None), JointSchedule):
        # So that export_tflite(strip(joint)) reports the schedule, the plan and the channels before pruning.
        record = TrainingRecord(model.schedule, pruning_plan(model) or {}, original_channels(model),
                                training_step(model))
    inputs, outputs = nested_inputs_and_outputs(stripped)  # TF-MOT's layers, and the record of their training
    stripped = StrippedModel(inputs, outputs, name=stripped.name, training=record)

    masked = _masked_values(model)
    source_layers = {layer.name: layer for layer in model.layers}
    for layer in stripped.layers:
        source = source_layers[layer.name]
        kind = kind_of(source)
        keep_in, keep_out = kept.get(layer.name, (None, None))
        values = {weight_short_name(w): w.numpy() for w in source.weights}
        inner_name = unwrapped(layer).name
        new_values = []
        for weight in layer.weights:
            key = weight_short_name(weight)
            value = masked.get((inner_name, key), values[key])
            new_values.append(_sliced(kind, key, value, keep_in, keep_out))
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


def _float_layer(layer):
    """The float layer a TF-MOT layer stands for: a wrapper's inner layer, an identity for the input quantizer."""
    if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
        return layer.layer.__class__.from_config(layer.layer.get_config())
    if isinstance(layer, _QuantizeLayer):
        return identity_layer(layer.name)  # converts to no operator at all
    return layer.__class__.from_config(layer.get_config())


def float_twin(model: keras.Model) -> keras.Model:
    """The float model a TF-MOT quantization-aware model quantizes, with its (pruned) weights.

    Every QuantizeWrapper becomes the layer it wraps, named as the user named
    it, with the wrapper's values of that layer's weights (a stripped model's
    pruned zeros included); the input quantizer becomes an identity. Full-integer
    post-training quantization of this model is the alternative to converting
    the QAT model that `export_tflite(quantization="auto")` compares.

    Raises:
      errors.ModelStructureError: `model` is a prepared model (strip it first).
    """
    check_tf_keras_model(model)
    if is_prepared(model):
        raise errors.ModelStructureError(
            f"model '{model.name}' still holds tfjoint's pruning state; call tfjoint.strip(model) first.")
    with tfmot.quantization.keras.quantize_scope():
        twin = keras.models.clone_model(model, clone_function=_float_layer)
    inputs, outputs = nested_inputs_and_outputs(twin)
    twin = keras.Model(inputs, outputs, name=model.name)
    sources = {layer.name: layer for layer in model.layers}
    for layer in twin.layers:
        source = sources.get(layer.name)
        if source is None:
            source = next((s for s in model.layers if unwrapped(s).name == layer.name), None)
        if source is None or not layer.weights:
            continue
        values = {weight_short_name(w): w.numpy() for w in source.weights}
        layer.set_weights([values[weight_short_name(w)] for w in layer.weights])
    return twin
