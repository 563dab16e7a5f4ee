"""The Keras objects that let one training step both prune and fake-quantize.

Why this module exists: TF-MOT's pruning wrapper (`PruneLowMagnitude`) and its
quantize wrapper (`QuantizeWrapperV2`) do not nest in either order, and hiding
a layer from `quantize_apply` breaks its layout transforms (Conv+BatchNorm,
activation fusing). So tfjoint keeps TF-MOT's whole `quantize_apply` pipeline
and plugs in at its documented extension points only:

* `GatedQuantizer` wraps any TF-MOT `Quantizer`: it always updates the
  quantizer's range variables during training, but passes values through in
  float until `quant_start_step`. At inference it is the wrapped quantizer,
  unchanged, so the converter sees exactly TF-MOT's graph (no `tf.cond`).
* `PrunedKernelQuantizer` is a `GatedQuantizer` for a prunable kernel that also
  owns the pruning mask and threshold. Each training step it runs TF-MOT's own
  mask update (`pruning_impl.Pruning` with `PolynomialDecay`, ranking
  `kernel * mask` so pruned weights never return) and then fake-quantizes
  `kernel * mask`. Symmetric quantization maps 0 to 0, so the pruned zeros are
  exact in the int8 weights too; `tfjoint.strip` bakes the mask into the kernel.
* `JointQuantizeConfig` wraps the `QuantizeConfig` TF-MOT would have used for a
  layer and hands out the two quantizers above instead of the originals.

A quantizer whose behaviour depends on the step (every pruned kernel, and every
quantizer when `quant_start_step > 0`) keeps a step counter among the weights
it builds (never on `self`: TF-MOT shares one config object between layers).
The counter is a model weight, so the schedule survives `model.save`,
reloading and re-compiling, and does not depend on `optimizer.iterations`.
With the default `quant_start_step=0` the activation quantizers need no
counter and are TF-MOT's quantizers exactly, in training too.
"""

from typing import Any, Iterator, NamedTuple

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import quantize_config as quantize_config_lib
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl

from tfjoint._keras import keras, tf, weight_short_name

__all__ = [
    "GatedQuantizer",
    "PrunedKernelQuantizer",
    "JointQuantizeConfig",
    "PrunedKernel",
    "pruned_kernels",
    "training_step",
    "quant_start_step",
    "is_prepared",
    "serialize",
    "deserialize",
]

_STEP = "tfjoint_step"
_MASK = "tfjoint_mask"
_THRESHOLD = "tfjoint_threshold"
_OWN_KEYS = (_STEP, _MASK, _THRESHOLD)

_register = keras.utils.register_keras_serializable(package="tfjoint")


def serialize(obj) -> dict[str, Any]:
    """Serializes a TF-MOT (or tfjoint) quantizer or quantize config as {class_name, config}."""
    return {"class_name": keras.utils.get_registered_name(type(obj)), "config": obj.get_config()}


def deserialize(config: dict[str, Any]):
    """Inverse of `serialize`, resolving TF-MOT's classes through its quantize scope."""
    with tfmot.quantization.keras.quantize_scope():
        return keras.utils.deserialize_keras_object(config)


def _own_weights_removed(weights: dict | None) -> dict:
    return {k: v for k, v in (weights or {}).items() if k not in _OWN_KEYS}


@_register
class GatedQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """A TF-MOT quantizer that switches on at `quant_start_step` during training.

    Before the start step, training still runs the wrapped quantizer (so
    moving-average activation ranges are observed and warm when fake quant
    switches on) but returns the float values. After it, and always at
    inference, the output is exactly the wrapped quantizer's.
    """

    def __init__(self, quantizer, quant_start_step: int):
        if isinstance(quantizer, dict):
            quantizer = deserialize(quantizer)
        self.quantizer = quantizer
        self.quant_start_step = int(quant_start_step)

    @property
    def counts_steps(self) -> bool:
        """Whether this quantizer needs to know the training step."""
        return self.quant_start_step > 0

    def build(self, tensor_shape, name, layer):
        weights = dict(self.quantizer.build(tensor_shape, name, layer) or {})
        if not self.counts_steps:
            return weights
        weights[_STEP] = layer.add_weight(
            f"{name}_tfjoint_step",
            shape=(),
            dtype=tf.int64,
            initializer=keras.initializers.Zeros(),
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        return weights

    def _count_step(self, weights):
        """Counts this training step; returns the count including it (as TF-MOT does)."""
        return weights[_STEP].assign_add(1)

    def _gate(self, values, weights, steps_taken):
        """Fake-quantizes `values` once `quant_start_step` float steps have run."""
        quantized = self.quantizer(values, True, weights=_own_weights_removed(weights))
        if self.quant_start_step == 0:  # known statically: every training step is quantized
            return quantized
        # tf.cond over two ready tensors forwards one of them; a tf.where would
        # cost a full elementwise pass over every activation (+40% step time on
        # MobileNetV2). The quantizer runs either way, so ranges are observed
        # before QAT starts.
        return tf.cond(steps_taken > self.quant_start_step, lambda: quantized, lambda: tf.identity(values))

    def __call__(self, inputs, training, weights, **kwargs):
        if not training or not self.counts_steps:
            return self.quantizer(inputs, training, weights=_own_weights_removed(weights), **kwargs)
        return self._gate(inputs, weights, self._count_step(weights))

    def get_config(self):
        return {"quantizer": serialize(self.quantizer), "quant_start_step": self.quant_start_step}

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)


@_register
class PrunedKernelQuantizer(GatedQuantizer):
    """Prunes a kernel on TF-MOT's PolynomialDecay schedule, then gates its fake quant.

    `schedule` holds PolynomialDecay's arguments (`initial_sparsity`,
    `final_sparsity`, `begin_step`, `end_step`, `power`, `frequency`).
    """

    def __init__(self, quantizer, quant_start_step: int, schedule: dict[str, Any]):
        super().__init__(quantizer, quant_start_step)
        self.schedule = dict(schedule)

    @property
    def counts_steps(self) -> bool:
        return True  # the pruning schedule reads the step

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights[_MASK] = layer.add_weight(
            f"{name}_tfjoint_mask",
            shape=tensor_shape,
            initializer=keras.initializers.Ones(),
            trainable=False,
            aggregation=tf.VariableAggregation.MEAN,
        )
        weights[_THRESHOLD] = layer.add_weight(
            f"{name}_tfjoint_threshold",
            shape=(),
            initializer=keras.initializers.Zeros(),
            trainable=False,
            aggregation=tf.VariableAggregation.MEAN,
        )
        return weights

    def __call__(self, inputs, training, weights, **kwargs):
        mask = weights[_MASK]
        if not training:
            masked = tf.math.multiply(inputs, mask)
            return self.quantizer(masked, False, weights=_own_weights_removed(weights), **kwargs)
        steps_taken = self._count_step(weights)
        step = weights[_STEP]
        # Magnitudes are ranked on kernel * mask, so weights pruned earlier rank
        # as exact zeros and never come back, even if the optimizer's momentum
        # has moved them since; this replaces TF-MOT's per-step `kernel *= mask`
        # write (the forward pass only ever sees kernel * mask anyway).
        with tf.control_dependencies([steps_taken]):
            ranked = tf.math.multiply(inputs, mask)
        pruning = pruning_impl.Pruning(
            training_step_fn=lambda: step.read_value(),
            pruning_vars=[(ranked, mask, weights[_THRESHOLD])],
            pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(**self.schedule),
            block_size=(1, 1),
            block_pooling_type="AVG",
        )
        # As TF-MOT's PruneLowMagnitude, the step is counted first, so the mask
        # update of the n-th training step sees step n. The forward pass then
        # uses kernel * (new) mask, which also masks the gradient.
        with tf.control_dependencies([pruning.conditional_mask_update()]):
            masked = tf.math.multiply(inputs, mask)
        return self._gate(masked, weights, steps_taken)

    def get_config(self):
        config = super().get_config()
        config["schedule"] = dict(self.schedule)
        return config


@_register
class JointQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Wraps the QuantizeConfig TF-MOT chose for a layer with tfjoint's quantizers.

    Args:
      config: the TF-MOT `QuantizeConfig` (object or serialized dict).
      quant_start_step: when fake quant switches on during training.
      pruned_weights: names of the layer's weights to prune (e.g. ["kernel"]).
      schedule: PolynomialDecay arguments, required when `pruned_weights` is set.
    """

    def __init__(self, config, quant_start_step: int, pruned_weights=(), schedule=None):
        if isinstance(config, dict):
            config = deserialize(config)
        self.config = config
        self.quant_start_step = int(quant_start_step)
        self.pruned_weights = tuple(pruned_weights)
        self.schedule = dict(schedule) if schedule else None
        if self.pruned_weights and not self.schedule:
            raise ValueError("JointQuantizeConfig: `schedule` is required when `pruned_weights` is set.")

    def _weight_quantizer(self, weight, quantizer):
        if weight_short_name(weight) in self.pruned_weights:
            return PrunedKernelQuantizer(quantizer, self.quant_start_step, self.schedule)
        return GatedQuantizer(quantizer, self.quant_start_step)

    def get_weights_and_quantizers(self, layer):
        return [(w, self._weight_quantizer(w, q)) for w, q in self.config.get_weights_and_quantizers(layer)]

    def get_activations_and_quantizers(self, layer):
        return [
            (a, GatedQuantizer(q, self.quant_start_step))
            for a, q in self.config.get_activations_and_quantizers(layer)
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        self.config.set_quantize_weights(layer, quantize_weights)

    def set_quantize_activations(self, layer, quantize_activations):
        self.config.set_quantize_activations(layer, quantize_activations)

    def get_output_quantizers(self, layer):
        return [GatedQuantizer(q, self.quant_start_step) for q in self.config.get_output_quantizers(layer)]

    def get_config(self):
        return {
            "config": serialize(self.config),
            "quant_start_step": self.quant_start_step,
            "pruned_weights": list(self.pruned_weights),
            "schedule": self.schedule,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)


# --- Reading a prepared model back -------------------------------------------


class PrunedKernel(NamedTuple):
    """One pruned weight of a prepared model and the variables that prune it."""

    layer_name: str  # the Keras layer's own name (without TF-MOT's "quant_" prefix)
    weight_name: str  # e.g. "kernel"
    kernel: tf.Variable
    mask: tf.Variable
    step: tf.Variable
    quantizer: PrunedKernelQuantizer
    quantizer_weights: dict


def _wrappers(model) -> Iterator:
    for layer in model.layers:
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            yield layer


def pruned_kernels(model) -> list[PrunedKernel]:
    """Every kernel that a prepared model prunes, in layer order."""
    found = []
    for wrapper in _wrappers(model):
        for weight, quantizer, weights in getattr(wrapper, "_weight_vars", []):
            if isinstance(quantizer, PrunedKernelQuantizer):
                found.append(
                    PrunedKernel(
                        layer_name=wrapper.layer.name,
                        weight_name=weight_short_name(weight),
                        kernel=weight,
                        mask=weights[_MASK],
                        step=weights[_STEP],
                        quantizer=quantizer,
                        quantizer_weights=weights,
                    )
                )
    return found


def _gated_quantizers(model) -> Iterator[tuple[GatedQuantizer, dict]]:
    for layer in model.layers:
        if isinstance(getattr(layer, "quantizer", None), GatedQuantizer):
            yield layer.quantizer, layer.quantizer_vars
    for wrapper in _wrappers(model):
        for _, quantizer, weights in getattr(wrapper, "_weight_vars", []):
            if isinstance(quantizer, GatedQuantizer):
                yield quantizer, weights


def is_prepared(model) -> bool:
    """True if `model` holds tfjoint quantizers (i.e. came from `tfjoint.prepare`)."""
    return any(True for _ in _gated_quantizers(model))


def training_step(model) -> int | None:
    """Training steps the prepared model has taken (its largest step counter).

    None if nothing in the model depends on the step (no pruned kernel and
    `quant_start_step=0`), so nothing counts it.
    """
    if not is_prepared(model):
        raise ValueError(f"model '{model.name}' was not prepared with tfjoint.prepare: it has no tfjoint quantizer.")
    steps = [int(w[_STEP].numpy()) for _, w in _gated_quantizers(model) if _STEP in w]
    return max(steps) if steps else None


def quant_start_step(model) -> int:
    """The step at which the prepared model's fake quantization switches on."""
    for quantizer, _ in _gated_quantizers(model):
        return quantizer.quant_start_step
    raise ValueError(f"model '{model.name}' was not prepared with tfjoint.prepare.")


def unwrap_config(config):
    """The TF-MOT QuantizeConfig beneath tfjoint's wrapper (also inside OutputOnlyConfig)."""
    if isinstance(config, JointQuantizeConfig):
        return config.config
    if isinstance(config, quantize_config_lib.OutputOnlyConfig):
        return quantize_config_lib.OutputOnlyConfig(unwrap_config(config.quantize_config))
    return config
