"""The Keras quantizers that let one training step both prune and fake-quantize.

Why this module exists: TF-MOT's pruning wrapper (`PruneLowMagnitude`) and its
quantize wrapper (`QuantizeWrapperV2`) do not nest in either order, and hiding
a layer from `quantize_apply` breaks its layout transforms (Conv+BatchNorm,
activation fusing). So tfjoint keeps TF-MOT's whole `quantize_apply` pipeline
and plugs in at its documented extension point, the `Quantizer`:

* `GatedQuantizer` wraps any TF-MOT `Quantizer`: during training it passes
  values through in float, without running the quantizer, until
  `quant_start_step`; the float steps cost what pruning alone costs. An
  activation quantizer with a moving-average range (TF-MOT's
  `MovingAverageQuantizer`) averages the ranges of the batches it has seen
  instead of starting from TF-MOT's [-6, 6] (see `GatedQuantizer`). At inference it is the wrapped quantizer,
  so the converter sees TF-MOT's graph (no `tf.cond`).
* `PrunedKernelQuantizer` is a `GatedQuantizer` for a prunable kernel that also
  owns the pruning mask and threshold. Each training step it runs TF-MOT's own
  mask update (`pruning_impl.Pruning` with `JointPolynomialDecay`, ranking
  `kernel * mask` so pruned weights never return) and then fake-quantizes
  `kernel * mask`. Symmetric quantization maps 0 to 0, so the pruned zeros are
  exact in the int8 weights too; `tfjoint.strip` bakes the mask into the kernel.
* `ChannelMaskQuantizer` only multiplies a weight that TF-MOT does not quantize
  (a bias, BatchNormalization's gamma and beta) by a channel mask, so that a
  removed channel is exactly zero everywhere before `tfjoint.strip` deletes it.

Either quantizer can hold a channel mask (`channel_axis`): one copy per
weight, all copies of a channel group assigned together by
`tfjoint.train.prepared_model.update_channel_masks`.

A quantizer whose behaviour depends on the step keeps a step counter among
the weights it builds (never on `self`: TF-MOT shares one config object between
layers). The counter is a model weight, so the schedule survives `model.save`,
reloading and re-compiling, and does not depend on `optimizer.iterations`.
Every training-mode forward pass of the model is one step; a layer called
twice in one traced step (a shared layer) counts once.
"""

import contextlib
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot
from tfjoint._keras import keras, serializable, tf, weight_short_name
from tfjoint._tfmot import EqualByConfig
from tfjoint.quantize.clusters import level_count, snap, snap_shared
from tfjoint.registry import OUTPUT  # in a channel spec's axes: mask the layer's output instead of a weight

__all__ = [
    "GatedQuantizer",
    "PrunedKernelQuantizer",
    "ChannelMaskQuantizer",
    "ChannelMaskedOutputQuantizer",
    "OUTPUT",
    "serialize",
    "deserialize",
    "STEP",
    "MASK",
    "THRESHOLD",
    "CHANNEL_MASK",
    "CENTROIDS",
    "mask_shape",
    "EqualByConfig",
    "training_phase",
    "weight_schedule_from",
]

STEP = "tfjoint_step"
MASK = "tfjoint_mask"
THRESHOLD = "tfjoint_threshold"
CHANNEL_MASK = "tfjoint_channel_mask"
CENTROIDS = "tfjoint_centroids"
_OWN_KEYS = (STEP, MASK, THRESHOLD, CHANNEL_MASK, CENTROIDS)
# Range given to a per-channel weight range that collapsed to [0, 0] (a fully
# pruned channel). Its values are all zero, which any positive range maps to
# exactly 0; the collapsed range itself makes XLA's fake quant return NaN.
_DEGENERATE_RANGE = 1e-6
# TF-MOT quantizers whose range is a moving average from [-6, 6] (averaged from the first quantized batch on).
_RANGE_TRACKING_QUANTIZERS = (tfmot.quantization.keras.quantizers.MovingAverageQuantizer,)
# Quantizers build plain graph code (tf.cond, tf.where; no Python `if` on tensors). Left to AutoGraph, every
# call inside a training step is transpiled, TF-MOT's pruning code with it: most of a small model's trace time.
_NOT_AUTOGRAPHED = tf.autograph.experimental.do_not_convert
_TFMOT_EMA_DECAY = 0.999  # MovingAverageQuantizer's (tests/test_prepare.py checks training matches TF-MOT's)


def serialize(obj) -> dict[str, Any]:
    """Serializes a TF-MOT (or tfjoint) quantizer or quantize config as {class_name, config}."""
    return {"class_name": keras.utils.get_registered_name(type(obj)), "config": obj.get_config()}


def deserialize(config: dict[str, Any]):
    """Inverse of `serialize`, resolving TF-MOT's classes through its quantize scope."""
    with tfmot.quantization.keras.quantize_scope():
        return keras.utils.deserialize_keras_object(config)


def own_weights_removed(weights: dict | None) -> dict:
    """The wrapped TF-MOT quantizer's weights, without tfjoint's."""
    return {k: v for k, v in (weights or {}).items() if k not in _OWN_KEYS}


def mask_shape(rank: int, axis: int) -> list[int]:
    """The shape a [channels] mask takes to broadcast along `axis` of a rank-`rank` tensor (numpy or TF)."""
    shape = [1] * rank
    shape[axis % rank] = -1
    return shape


def _broadcast(channel_mask, rank: int, axis: int):
    """Reshapes a [channels] mask to broadcast along `axis` of a rank-`rank` tensor."""
    return tf.reshape(channel_mask, mask_shape(rank, axis))


def weight_schedule_from(config: dict):
    """The TF-MOT `PruningSchedule` a pruned kernel's quantizer follows, from its serialized form.

    PolynomialDecay arguments give `JointPolynomialDecay` (TF-MOT's, reaching
    its target at `end_step` off the frequency grid too); `{"class_name",
    "config"}` gives that schedule (TF-MOT's own, or a registered class).
    """
    if "class_name" not in config:
        return _tfmot.JointPolynomialDecay(**config)
    with keras.utils.custom_object_scope({"ConstantSparsity": tfmot.sparsity.keras.ConstantSparsity,
                                          "PolynomialDecay": tfmot.sparsity.keras.PolynomialDecay}):
        return keras.utils.deserialize_keras_object(dict(config))


_STEP_COUNTS_ATTRIBUTE = "_tfjoint_step_counts"


def count_step_once(step_variable):
    """Adds 1 to `step_variable` once per traced function; returns the new count.

    A shared layer is called more than once in one training step; every call
    traces its quantizers again. Within one `tf.function` graph the first call
    counts the step and the others reuse its result, so the schedule advances
    once per step. (Eagerly, with `run_eagerly=True`, each call counts.)
    """
    if tf.executing_eagerly():
        return step_variable.assign_add(1)
    graph = tf.compat.v1.get_default_graph()
    counts = getattr(graph, _STEP_COUNTS_ATTRIBUTE, None)
    if counts is None:
        counts = {}
        setattr(graph, _STEP_COUNTS_ATTRIBUTE, counts)
    key = id(step_variable)
    if key not in counts:
        counts[key] = (step_variable, step_variable.assign_add(1))  # the variable keeps the id valid
    return counts[key][1]




# Set while a training function is traced for one phase (see `training_phase`); None: decided in the graph.
# Module-wide, not thread-local: MirroredStrategy traces each replica's step in a thread of its own.
_TRACED_PHASE: list[bool | None] = [None]


@contextlib.contextmanager
def training_phase(quantizing: bool):
    """Training-mode calls of gated quantizers made within fake-quantize (True) or pass values through (False).

    `tfjoint.train.phases` traces one training function per phase within
    this, so the gate is decided in Python, and no `tf.cond` per quantizer
    is traced (cond_v2 keeps every branch intermediate for the gradient).
    Outside it (a custom training loop calling the model), each quantizer
    decides in the graph from its step counter. Step counters count either
    way.
    """
    previous = _TRACED_PHASE[0]
    _TRACED_PHASE[0] = bool(quantizing)
    try:
        yield
    finally:
        _TRACED_PHASE[0] = previous


@serializable
class GatedQuantizer(EqualByConfig, tfmot.quantization.keras.quantizers.Quantizer):
    """A TF-MOT quantizer that switches on at `quant_start_step` during training.

    Before the start step, training passes values through in float and does
    not run the wrapped quantizer at all, so those steps cost no more than
    pruning alone. After it, and always at inference, the output is the
    wrapped quantizer's.

    Range warm start: TF-MOT's `MovingAverageQuantizer` (layer outputs)
    starts from the range [-6, 6] and forgets it at 0.1% per step, so after a
    fine-tune of 500 steps 60% of the range the converter uses is still the
    initial one: a ReLU output in [0, 2] keeps 1/5 of its int8 codes. Such a
    quantizer here runs TF-MOT's own `MovingAvgQuantize` with the decay
    bias-corrected: on its t-th quantized step min(0.999, 1 - 1/t), so the
    range is the mean of the batch ranges seen so far (with 0 included,
    symmetric where the quantizer is) until TF-MOT's 0.999 takes over.
    (`AllValuesQuantizer`, on model inputs, starts from [0, 0] and only
    widens: it needs no warm start.)

    Args:
      quantizer: the TF-MOT quantizer (object or serialized dict).
      quant_start_step: training steps before fake quant switches on.
      channel_axis: if set, the quantizer also owns a channel mask over this
        axis of its weight, applied before quantization (channel pruning).
    """

    def __init__(self, quantizer, quant_start_step: int, channel_axis: int | None = None):
        if isinstance(quantizer, dict):
            quantizer = deserialize(quantizer)
        self.quantizer = quantizer
        self.quant_start_step = int(quant_start_step)
        self.channel_axis = None if channel_axis is None else int(channel_axis)

    @property
    def warm_starts(self) -> bool:
        """Whether the wrapped quantizer keeps a moving-average range (then averaged from its first batch on)."""
        return isinstance(self.quantizer, _RANGE_TRACKING_QUANTIZERS)

    @property
    def counts_steps(self) -> bool:
        """Whether this quantizer needs to know the training step."""
        return self.quant_start_step > 0 or self.warm_starts

    def build(self, tensor_shape, name, layer):
        name = getattr(self.quantizer, "point", name)  # a quantization point names its own weights
        weights = dict(self.quantizer.build(tensor_shape, name, layer) or {})
        if self.counts_steps:
            weights[STEP] = layer.add_weight(
                f"{name}_{STEP}",
                shape=(),
                dtype=tf.int64,
                initializer=keras.initializers.Zeros(),
                trainable=False,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        if self.channel_axis is not None:
            weights[CHANNEL_MASK] = layer.add_weight(
                f"{name}_{CHANNEL_MASK}",
                shape=(tensor_shape[self.channel_axis],),
                initializer=keras.initializers.Ones(),
                trainable=False,
                aggregation=tf.VariableAggregation.MEAN,
            )
        return weights

    def _mask_channels(self, values, weights):
        if self.channel_axis is None:
            return values
        return tf.math.multiply(values, _broadcast(weights[CHANNEL_MASK], values.shape.rank, self.channel_axis))

    def _fake_quantize(self, values, training: bool, weights):
        """The wrapped quantizer on `values`, with a collapsed weight range widened.

        A weight channel that is entirely pruned has the range [0, 0]; TF's
        kernel maps it to zeros but XLA's returns NaN. Masking quantizers
        therefore let TF-MOT observe (assign) the range as usual, then
        fake-quantize with the stored range, a collapsed one widened to
        +-1e-6. Every other range is used unchanged.
        """
        inner = own_weights_removed(weights)
        if "min_var" not in inner or "max_var" not in inner:
            return self.quantizer(values, training, weights=inner)
        observed = [self.quantizer(values, True, weights=inner)] if training else []
        with tf.control_dependencies(observed):
            low = tf.convert_to_tensor(inner["min_var"].read_value())
            high = tf.convert_to_tensor(inner["max_var"].read_value())
        collapsed = high <= low
        low = tf.where(collapsed, tf.fill(tf.shape(low), -_DEGENERATE_RANGE), low)
        high = tf.where(collapsed, tf.fill(tf.shape(high), _DEGENERATE_RANGE), high)
        return self.quantizer(values, False, weights=dict(inner, min_var=low, max_var=high))

    @property
    def masks(self) -> bool:
        """Whether this quantizer zeroes part of its input (then ranges are guarded)."""
        return self.channel_axis is not None

    def _quantize(self, values, training: bool, weights):
        if self.masks:
            return self._fake_quantize(values, training, weights)
        return self.quantizer(values, training, weights=own_weights_removed(weights))

    def _moving_average_quantized(self, values, weights, steps_taken):
        """TF-MOT's MovingAverageQuantizer on `values`, its range a running mean over its first 1000 steps.

        On the t-th quantized step the EMA decay is min(0.999, 1 - 1/t): the
        range is the mean of the batch ranges seen so far (the first batch's
        on step 1), and TF-MOT's EMA once t passes its horizon. The decay is
        a scalar, not a `tf.cond`, so no branch is traced.
        """
        inner = own_weights_removed(weights)
        quantizer = self.quantizer
        quantized_step = tf.cast(steps_taken - self.quant_start_step, tf.float32)
        decay = tf.minimum(_TFMOT_EMA_DECAY, 1.0 - 1.0 / tf.maximum(quantized_step, 1.0))
        return _tfmot.MovingAvgQuantize(
            values, inner["min_var"], inner["max_var"], per_channel=quantizer.per_axis, ema_decay=decay,
            is_training=True, num_bits=quantizer.num_bits, symmetric=quantizer.symmetric,
            narrow_range=quantizer.narrow_range)

    def _gate(self, values, weights, steps_taken):
        """Fake-quantizes `values` once `quant_start_step` float steps have run."""

        def quantized():
            if self.warm_starts:
                return self._moving_average_quantized(values, weights, steps_taken)
            return self._quantize(values, True, weights)

        phase = _TRACED_PHASE[0]
        if self.quant_start_step == 0 or phase is True:  # known statically: this step is quantized
            return quantized()
        if phase is False:
            return values
        # The quantizer runs inside the branch, so float steps skip it. A
        # tf.where instead would run both and cost a full elementwise pass
        # over every activation (+40% step time on MobileNetV2).
        return tf.cond(steps_taken > self.quant_start_step, quantized, lambda: tf.identity(values))

    @_NOT_AUTOGRAPHED
    def __call__(self, inputs, training, weights, **kwargs):
        inputs = self._mask_channels(inputs, weights)
        if not training:
            return self._quantize(inputs, False, weights)
        if not self.counts_steps:
            return self._quantize(inputs, True, weights)
        return self._gate(inputs, weights, count_step_once(weights[STEP]))

    def get_config(self):
        config = {"quantizer": serialize(self.quantizer), "quant_start_step": self.quant_start_step}
        if self.channel_axis is not None:
            config["channel_axis"] = self.channel_axis
        return config



class _WithinKeptChannels:
    """A pruning schedule whose sparsity applies to the kept channels only.

    TF-MOT's mask update keeps `round(size * (1 - s))` weights of the whole
    kernel. With a fraction `f` of its channels kept, asking it for
    `1 - f * (1 - s)` keeps `round(size * f * (1 - s))`: sparsity `s` within
    the kept channels (whose weights are the only non-zero candidates).
    """

    def __init__(self, schedule, channel_mask):
        self._schedule = schedule
        self._kept_fraction = tf.math.reduce_mean(channel_mask)

    def __call__(self, step):
        should_prune, sparsity = self._schedule(step)
        return should_prune, 1.0 - self._kept_fraction * (1.0 - sparsity)


@serializable
class PrunedKernelQuantizer(GatedQuantizer):
    """Prunes a kernel on TF-MOT's PolynomialDecay schedule, then gates its fake quant.

    Args:
      quantizer: the TF-MOT weight quantizer.
      quant_start_step: training steps before fake quant switches on.
      schedule: `PolynomialDecay` arguments (`initial_sparsity`,
        `final_sparsity`, `begin_step`, `end_step`, `power`, `frequency`), or
        a serialized TF-MOT `PruningSchedule` (`{"class_name", "config"}`),
        from `JointSchedule.weight_schedule_config`.
      channel_axis: the kernel's output-channel axis, when channels are pruned.
      clusters: if set, weight sharing: the masked kernel is snapped to at
        most this many trained values per table, zero among them
        (`tfjoint.quantize.clusters`), before fake quantization.
      cluster_axis: the channel axis the kernel is quantized along (per-channel
        tables, or the channels of a shared table), or None: quantized per
        tensor, one table.
      shared_table: with `cluster_axis`, the channels share one table of
        levels relative to each channel's largest weight
        (`clusters.snap_shared`) instead of a table each.
    """

    def __init__(self, quantizer, quant_start_step: int, schedule: dict[str, Any], channel_axis: int | None = None,
                 clusters: int | None = None, cluster_axis: int | None = None, shared_table: bool = False):
        super().__init__(quantizer, quant_start_step, channel_axis)
        self.schedule = dict(schedule)
        self.clusters = None if clusters is None else int(clusters)
        self.cluster_axis = None if cluster_axis is None else int(cluster_axis)
        self.shared_table = bool(shared_table) and self.clusters is not None and self.cluster_axis is not None

    @property
    def counts_steps(self) -> bool:
        return True  # the pruning schedule reads the step

    @property
    def masks(self) -> bool:
        return True

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights[MASK] = layer.add_weight(
            f"{name}_{MASK}",
            shape=tensor_shape,
            initializer=keras.initializers.Ones(),
            trainable=False,
            aggregation=tf.VariableAggregation.MEAN,
        )
        weights[THRESHOLD] = layer.add_weight(
            f"{name}_{THRESHOLD}",
            shape=(),
            initializer=keras.initializers.Zeros(),
            trainable=False,
            aggregation=tf.VariableAggregation.MEAN,
        )
        if self.clusters is not None:  # placed by `tfjoint.prepare` from the kernel (clusters.initial_centroids)
            if self.shared_table:
                shape = (1, level_count(self.clusters))
            else:
                shape = (1 if self.cluster_axis is None else tensor_shape[self.cluster_axis], self.clusters - 1)
            weights[CENTROIDS] = layer.add_weight(
                f"{name}_{CENTROIDS}",
                shape=shape,
                initializer=keras.initializers.Zeros(),
                trainable=True,
            )
        return weights

    def _masked(self, inputs, weights):
        return self._mask_channels(tf.math.multiply(inputs, weights[MASK]), weights)

    def shared(self, masked, weights):
        """`masked` snapped to its centroids (weight sharing), or unchanged without clusters."""
        if self.clusters is None:
            return masked
        if self.shared_table:
            return snap_shared(masked, weights[CENTROIDS], self.cluster_axis)
        return snap(masked, weights[CENTROIDS], self.cluster_axis)

    @_NOT_AUTOGRAPHED
    def __call__(self, inputs, training, weights, **kwargs):
        if not training:
            return self._quantize(self.shared(self._masked(inputs, weights), weights), False, weights)
        steps_taken = count_step_once(weights[STEP])
        step = weights[STEP]
        # Magnitudes are ranked on kernel * mask, so weights pruned earlier rank
        # as exact zeros and never come back, even if the optimizer's momentum
        # has moved them since; this replaces TF-MOT's per-step `kernel *= mask`
        # write (the forward pass only ever sees kernel * mask anyway).
        with tf.control_dependencies([steps_taken]):
            ranked = self._masked(inputs, weights)
        schedule = weight_schedule_from(self.schedule)
        if self.channel_axis is not None:
            schedule = _WithinKeptChannels(schedule, weights[CHANNEL_MASK])
        pruning = _tfmot.Pruning(
            training_step_fn=lambda: step.read_value(),
            pruning_vars=[(ranked, weights[MASK], weights[THRESHOLD])],
            pruning_schedule=schedule,
            block_size=(1, 1),
            block_pooling_type="AVG",
        )
        # As TF-MOT's PruneLowMagnitude, the step is counted first, so the mask
        # update of the n-th training step sees step n. The forward pass then
        # uses kernel * (new) mask, which also masks the gradient.
        with tf.control_dependencies([pruning.conditional_mask_update()]):
            masked = self._masked(inputs, weights)
        return self._gate(self.shared(masked, weights), weights, steps_taken)

    def _own_range(self, values):
        """A shared table's kernel range: each channel's largest magnitude, as TF-MOT's symmetric per-axis
        LastValueQuantizer takes it on a training step (its range runs along the last axis)."""
        high = tf.reduce_max(tf.abs(values), axis=list(range(values.shape.rank - 1)))
        return tf.maximum(high, _DEGENERATE_RANGE)

    def _quantize(self, values, training: bool, weights):
        if training or not self.shared_table:
            return self._fake_quantize(values, training, weights)  # it masks: ranges are guarded
        # At inference a weight quantizer uses the range of the last training step's kernel, one optimizer update
        # old; a shared table needs the current kernel's, or channels leave the table (strip writes it too).
        high = self._own_range(values)
        return self.quantizer(values, False, weights=dict(own_weights_removed(weights), min_var=-high, max_var=high))

    def range_of(self, values: np.ndarray, weights) -> dict[str, np.ndarray]:
        """The range variables of a shared table's kernel, by weight name, for `values` (the kernel as the forward
        pass sees it): what `strip` writes, so that the file's channels keep the one table."""
        inner = own_weights_removed(weights)
        high = self._own_range(tf.constant(values)).numpy()
        return {weight_short_name(inner["min_var"]): -high, weight_short_name(inner["max_var"]): high}

    @property
    def final_sparsity(self) -> float | None:
        """The sparsity the kernel ends with (None for a schedule of the user's without an `end_step`)."""
        if "final_sparsity" in self.schedule:
            return float(self.schedule["final_sparsity"])
        end = self.schedule.get("config", {}).get("end_step")
        if end is None or end < 0:
            return None
        return float(weight_schedule_from(self.schedule)(tf.constant(int(end), tf.int64))[1].numpy())

    def get_config(self):
        config = super().get_config()
        config["schedule"] = dict(self.schedule)
        if self.clusters is not None:
            config.update(clusters=self.clusters, cluster_axis=self.cluster_axis)
        if self.shared_table:
            config["shared_table"] = True
        return config


@serializable
class ChannelMaskQuantizer(EqualByConfig, tfmot.quantization.keras.quantizers.Quantizer):
    """Multiplies a weight TF-MOT leaves unquantized (bias, gamma, beta) by a channel mask.

    No fake quantization: the converter quantizes biases itself and folds
    BatchNormalization. The mask makes a removed channel exactly zero at every
    layer of its group before `tfjoint.strip` deletes it.
    """

    def __init__(self, channel_axis: int = 0):
        self.channel_axis = int(channel_axis)

    def build(self, tensor_shape, name, layer):
        return {
            CHANNEL_MASK: layer.add_weight(
                f"{name}_{CHANNEL_MASK}",
                shape=(tensor_shape[self.channel_axis],),
                initializer=keras.initializers.Ones(),
                trainable=False,
                aggregation=tf.VariableAggregation.MEAN,
            )
        }

    @_NOT_AUTOGRAPHED
    def __call__(self, inputs, training, weights, **kwargs):
        return tf.math.multiply(inputs, _broadcast(weights[CHANNEL_MASK], inputs.shape.rank, self.channel_axis))

    def get_config(self):
        return {"channel_axis": self.channel_axis}



@serializable
class ChannelMaskedOutputQuantizer(EqualByConfig, tfmot.quantization.keras.quantizers.Quantizer):
    """Multiplies a layer's output by a channel mask (last axis), then applies its output quantizer, if any.

    Used for BatchNormalization: masking its output zeroes a removed channel
    exactly without replacing gamma and beta by tensors, which tf_keras
    cannot save to a SavedModel for a BatchNormalization layer.
    """

    def __init__(self, quantizer=None):
        if isinstance(quantizer, dict):
            quantizer = deserialize(quantizer)
        self.quantizer = quantizer

    def build(self, tensor_shape, name, layer):
        weights = dict(self.quantizer.build(tensor_shape, name, layer) or {}) if self.quantizer else {}
        weights[CHANNEL_MASK] = layer.add_weight(
            f"{name}_{CHANNEL_MASK}",
            shape=(tensor_shape[-1],),
            initializer=keras.initializers.Ones(),
            trainable=False,
            aggregation=tf.VariableAggregation.MEAN,
        )
        return weights

    @_NOT_AUTOGRAPHED
    def __call__(self, inputs, training, weights, **kwargs):
        masked = tf.math.multiply(inputs, weights[CHANNEL_MASK])
        if self.quantizer is None:
            return masked
        return self.quantizer(masked, training, weights={k: v for k, v in weights.items() if k != CHANNEL_MASK})

    def get_config(self):
        return {"quantizer": serialize(self.quantizer) if self.quantizer else None}

