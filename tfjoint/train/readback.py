"""Reading a prepared model back: its pruned kernels, step, schedule and channel groups.

Everything here is read from the model's own layers and variables, so it
works the same on a model fresh from `tfjoint.prepare` and on one reloaded
with `tfjoint.load_model`.
"""

from typing import Iterator, NamedTuple

import numpy as np
import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot, errors
from tfjoint._keras import tf, weight_short_name
from tfjoint._names import float_layer_name
from tfjoint.prune.schedule import JointSchedule
from tfjoint.quantize.config import JointQuantizeConfig
from tfjoint.quantize.quantizers import (
    CHANNEL_MASK,
    MASK,
    STEP,
    ChannelMaskedOutputQuantizer,
    ChannelMaskQuantizer,
    GatedQuantizer,
    PrunedKernelQuantizer,
    mask_shape,
)
from tfjoint.registry import output_channels

__all__ = [
    "PrunedKernel",
    "ChannelMember",
    "pruned_kernels",
    "channel_members",
    "training_step",
    "is_prepared",
    "layer_sparsity",
    "overall_sparsity",
    "weight_sparsity",
    "channels_removed",
    "prepared_model",
    "schedule_of",
    "quantized_steps",
    "pruning_plan",
    "original_channels",
    "float_layer_name",
]


class PrunedKernel(NamedTuple):
    """One pruned weight of a prepared model and the variables that prune it."""

    layer_name: str  # the Keras layer's own name (without TF-MOT's "quant_" prefix)
    weight_name: str  # e.g. "kernel"
    kernel: tf.Variable
    mask: tf.Variable
    step: tf.Variable
    quantizer: PrunedKernelQuantizer
    quantizer_weights: dict

    def masked_kernel(self, shared: bool = True) -> np.ndarray:
        """The kernel as the forward pass sees it: weight mask and channel mask applied, and snapped to its
        centroids where it is clustered (unless `shared=False`)."""
        values = self.kernel.numpy() * self.mask.numpy()
        if CHANNEL_MASK in self.quantizer_weights and self.quantizer.channel_axis is not None:
            shape = mask_shape(values.ndim, self.quantizer.channel_axis)
            values = values * self.quantizer_weights[CHANNEL_MASK].numpy().reshape(shape)
        if shared and self.quantizer.clusters is not None:
            values = self.quantizer.shared(tf.constant(values), self.quantizer_weights).numpy()
        return values


class ChannelMember(NamedTuple):
    """One channel mask of a prepared model: on a weight (kernel, bias) or on a layer's output (weight None)."""

    segments: tuple[tuple[str | None, int], ...]  # the groups its channels belong to, in order
    layer_name: str
    weight_name: str
    weight: tf.Variable | None
    channel_mask: tf.Variable
    axis: int
    producer: bool  # a kernel whose filters are scored for the group
    weight_mask: tf.Variable | None  # the weight's pruning mask, if it is also weight-pruned
    step: tf.Variable | None
    channel_schedule: dict
    criterion: str
    scores: tuple[float, ...] | None = None  # measured importances that rank a producer's channels instead

    @property
    def group(self) -> str | None:
        """The group of a producer (its single segment)."""
        return self.segments[0][0] if len(self.segments) == 1 else None


def _wrappers(model) -> Iterator:
    for layer in model.layers:
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            yield layer


def pruned_kernels(model) -> list[PrunedKernel]:
    """Every kernel that a prepared model prunes, in layer order."""
    found = []
    for wrapper in _wrappers(model):
        for weight, quantizer, weights in _tfmot.weight_vars(wrapper):
            if isinstance(quantizer, PrunedKernelQuantizer):
                found.append(
                    PrunedKernel(
                        layer_name=wrapper.layer.name,
                        weight_name=weight_short_name(weight),
                        kernel=weight,
                        mask=weights[MASK],
                        step=weights[STEP],
                        quantizer=quantizer,
                        quantizer_weights=weights,
                    )
                )
    return found


def channel_members(model) -> list[ChannelMember]:
    """Every channel-masked weight of a prepared model, in layer order."""
    found = []
    for wrapper in _wrappers(model):
        config = wrapper.quantize_config
        if not isinstance(config, JointQuantizeConfig) or not config.channels:
            continue
        for weight, quantizer, weights in _tfmot.weight_vars(wrapper):
            if CHANNEL_MASK not in (weights or {}):
                continue
            name = weight_short_name(weight)
            producer = config.channels["producer"] and isinstance(quantizer, PrunedKernelQuantizer)
            found.append(
                ChannelMember(
                    segments=tuple((group, size) for group, size in config.channels["segments"]),
                    layer_name=wrapper.layer.name,
                    weight_name=name,
                    weight=weight,
                    channel_mask=weights[CHANNEL_MASK],
                    axis=quantizer.channel_axis,
                    producer=producer,
                    weight_mask=weights.get(MASK),
                    step=weights.get(STEP),
                    channel_schedule=config.channels["schedule"],
                    criterion=config.channels["criterion"],
                    scores=tuple(config.channels["scores"]) if producer and "scores" in config.channels else None,
                )
            )
        for quantizer in _tfmot.output_quantizers(wrapper):
            if isinstance(quantizer, ChannelMaskedOutputQuantizer):
                found.append(ChannelMember(
                    segments=tuple((group, size) for group, size in config.channels["segments"]),
                    layer_name=wrapper.layer.name, weight_name="output", weight=None,
                    channel_mask=_tfmot.output_quantizer_vars(wrapper)[CHANNEL_MASK], axis=-1, producer=False,
                    weight_mask=None, step=None, channel_schedule=config.channels["schedule"],
                    criterion=config.channels["criterion"]))
    return found


def _gated_quantizers(model) -> Iterator[tuple[GatedQuantizer, dict]]:
    for layer in model.layers:
        if isinstance(getattr(layer, "quantizer", None), GatedQuantizer):
            yield layer.quantizer, layer.quantizer_vars
    for wrapper in _wrappers(model):
        for quantizer in _tfmot.output_quantizers(wrapper):
            if isinstance(quantizer, GatedQuantizer):
                yield quantizer, _tfmot.output_quantizer_vars(wrapper)
        for _, quantizer, weights in _tfmot.weight_vars(wrapper):
            if isinstance(quantizer, (GatedQuantizer, ChannelMaskQuantizer)):
                yield quantizer, weights


def is_prepared(model) -> bool:
    """True if `model` holds tfjoint quantizers (i.e. came from `tfjoint.prepare`)."""
    return any(isinstance(getattr(layer, "quantizer", None), GatedQuantizer) for layer in model.layers) or any(
        isinstance(getattr(w, "quantize_config", None), JointQuantizeConfig) for w in _wrappers(model)
    )


def _require_prepared(model) -> None:
    if not is_prepared(model):
        raise errors.ModelStructureError(
            f"model '{model.name}' was not prepared with tfjoint.prepare: it has no tfjoint quantizer. Pass the "
            "model tfjoint.prepare returned (or tfjoint.load_model loaded).")


def training_step(model) -> int | None:
    """Training steps the prepared model has taken (its largest step counter).

    None if nothing in the model depends on the step (no pruned kernel and
    `quant_start_step=0`), so nothing counts it.

    Raises:
      errors.ModelStructureError: `model` was not prepared with tfjoint.
    """
    _require_prepared(model)
    steps = [int(w[STEP].numpy()) for _, w in _gated_quantizers(model) if STEP in w]
    return max(steps) if steps else None


def layer_sparsity(model) -> dict[str, float]:
    """Fraction of zeros each pruned kernel has in the forward pass (weight and channel masks)."""
    return {pk.layer_name: float(np.mean(pk.masked_kernel() == 0)) for pk in pruned_kernels(model)}


def overall_sparsity(model) -> float:
    """Fraction of zeros over all pruned kernels together (each weighted by its size), removed channels included."""
    kernels = [pk.masked_kernel() for pk in pruned_kernels(model)]
    total = sum(k.size for k in kernels)
    return float(sum(np.count_nonzero(k == 0) for k in kernels) / total) if total else 0.0


def _kept_channel_mask(pk: PrunedKernel) -> np.ndarray:
    """1 where the kernel's channel is kept (all ones without channel pruning), broadcast to the kernel's shape."""
    ones = np.ones(pk.kernel.shape, np.float32)
    if CHANNEL_MASK not in pk.quantizer_weights or pk.quantizer.channel_axis is None:
        return ones
    shape = mask_shape(ones.ndim, pk.quantizer.channel_axis)
    return ones * pk.quantizer_weights[CHANNEL_MASK].numpy().reshape(shape)


def weight_sparsity(model) -> float:
    """Zeros the weight masks set within the kept channels, over all pruned kernels: what `target_sparsity` asks."""
    zeros = kept = 0.0
    for pk in pruned_kernels(model):
        inside = _kept_channel_mask(pk) > 0
        zeros += float(np.count_nonzero((pk.mask.numpy() == 0) & inside))
        kept += float(np.count_nonzero(inside))
    return zeros / kept if kept else 0.0


def channels_removed(model) -> float | None:
    """Fraction of the channels of the pruned producers that channel masks removed (None without channel pruning)."""
    masks = [weights[CHANNEL_MASK].numpy() for pk in pruned_kernels(model) for weights in [pk.quantizer_weights]
             if CHANNEL_MASK in weights]
    total = sum(mask.size for mask in masks)
    return float(sum(np.count_nonzero(mask == 0) for mask in masks) / total) if total else None


def prepared_model(model):
    """The prepared model inside a wrapper that trains one (a `tfjoint.Distiller`'s student), or `model`."""
    student = getattr(model, "student", None)
    return student if student is not None and is_prepared(student) else model


def _record(model):
    """The `TrainingRecord` a stripped model carries, or None."""
    return getattr(model, "training", None) if hasattr(model, "_tfjoint_training") else None


def quantized_steps(model) -> int | None:
    """Training steps that ran with fake quantization (0: the int8 ranges never trained); None if unknown.

    Read from a prepared model's step counters, or from a stripped model's record.
    """
    model = prepared_model(model)
    if is_prepared(model):
        schedule = getattr(model, "schedule", None)
        steps = training_step(model)
        if steps is None or not isinstance(schedule, JointSchedule):
            return None
        return max(0, steps - schedule.quant_start_step)
    record = _record(model)
    return record.quantized_steps if record is not None else None


def original_channels(model) -> dict[str, int]:
    """Output channels of each channel-carrying layer before channel pruning, by the user's layer name.

    Read from a prepared model, or from a stripped model's record (empty if unknown).
    """
    model = prepared_model(model)
    if is_prepared(model):
        found = {float_layer_name(layer.name): output_channels(layer) for layer in model.layers}
        return {name: channels for name, channels in found.items() if channels is not None}
    record = _record(model)
    return dict(record.original_channels) if record is not None else {}


def pruning_plan(model) -> dict[str, float] | None:
    """The final sparsity of every kernel a model prunes, by the user's layer name (None if unknown).

    Read from a prepared model's quantizers, or from a stripped model's record.
    """
    model = prepared_model(model)
    if is_prepared(model):
        return {pk.layer_name: pk.quantizer.final_sparsity or 0.0 for pk in pruned_kernels(model)}
    record = _record(model)
    return dict(record.plan) if record is not None else None


def schedule_of(model) -> JointSchedule:
    """The `JointSchedule` a model was prepared with (a `tfjoint.Distiller`: its student's).

    The prepared model stores it (and `.keras`, `.h5` and SavedModel files of
    it keep it); a model returned by `tfjoint.strip` carries its source's.

    Raises:
      errors.ModelStructureError: the model was not prepared with tfjoint, or
        is a stripped model reloaded from a file (which keeps no schedule).
    """
    model = prepared_model(model)
    schedule = getattr(model, "schedule", None)
    if isinstance(schedule, JointSchedule):
        return schedule
    record = _record(model)
    if record is not None:
        return record.schedule
    if is_prepared(model):
        raise errors.ModelStructureError(
            f"model '{model.name}' holds tfjoint quantizers but no schedule (a model built before tfjoint 0.3 or "
            "rewrapped in a new keras.Model): fit and export the model tfjoint.prepare returned.")
    raise errors.ModelStructureError(
        f"model '{model.name}' carries no tfjoint schedule: it was not prepared with tfjoint.prepare, or it is a "
        "stripped model loaded from a file. Pass `schedule=` (the JointSchedule you trained with) where you need it.")
