"""`tfjoint.prepare`: turn a float model into one that prunes and QATs in one fit.

The returned model is TF-MOT's `quantize_apply` output (its layout transforms,
QuantizeLayer and QuantizeWrapperV2, the latter two as the subclasses of
`tfjoint.quantize.wrappers` that also load from `.keras`) built with
`JointQuantizeScheme`, so its prunable kernels carry a pruning mask updated in
the graph on TF-MOT's PolynomialDecay schedule. No callback is needed for the
schedule to run.

`prepare` reads as its stages: the model in (a Keras 3 one through the
bridge) -> the schedule (`schedule_argument`) -> the layers checked -> tfjoint's
integer layers substituted -> a transformer's residual width narrowed
(`prune.residual`, when asked) -> the pruned weights (`prune.selection`) ->
the channel specs (`prune.channel_specs`) -> TF-MOT's `quantize_apply` with
tfjoint's scheme -> the centroids (`centroids`) -> the conversion check
(`conversion_check`).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import tensorflow_model_optimization as tfmot

from tfjoint import _progress, errors
from tfjoint._keras import check_float_model, flattened, is_keras3_model, keras, nested_inputs_and_outputs
from tfjoint.bridge.keras3 import from_keras3
from tfjoint.prune.channel_specs import channel_specs
from tfjoint.prune.residual import narrow_residual
from tfjoint.prune.selection import LayerSelection, pruned_weights
from tfjoint.quantize.scheme import JointQuantizeScheme
from tfjoint.quantize.substitution import substituted
from tfjoint.quantize.wrappers import adopt_joint_layers
from tfjoint.registry import kind_of
from tfjoint.tflite.runtimes import check_runtimes
from tfjoint.train import conversion_check
from tfjoint.train.centroids import place_centroids
from tfjoint.train.prepared_model import PreparedModel
from tfjoint.train.schedule_argument import CHECK_KEYWORDS, SCHEDULE_KEYWORDS, SELECTION_KEYWORDS, joint_schedule

__all__ = ["prepare", "DEPRECATED_KEYWORDS"]

# prepare's keywords of tfjoint 0.3 (each still works for one release, with a DeprecationWarning).
DEPRECATED_KEYWORDS = SCHEDULE_KEYWORDS + SELECTION_KEYWORDS + CHECK_KEYWORDS + ("plan",)


_ACTIVITY_REGULARIZER = (
    "it adds an activity regularization loss each time it is called (its activity_regularizer), which TF-MOT's "
    "quantize wrapper cannot carry out of its call (TensorFlow fails the fit with 'out of scope'); it changes "
    "nothing at inference: remove it (activity_regularizer=None, or the layer that only adds the loss), and put the "
    "penalty in your loss if the fine-tuning needs it")


def _check_quantizable(model) -> None:
    """Layers whose kind is quantized but which, as configured, cannot be: refused now, each with its reason."""
    refusals = []
    for layer in model.layers:
        kind = kind_of(layer)
        reason = kind.quantization.check(layer) if kind is not None and kind.quantization.check else None
        reason = reason or (kind.quantization.refused if kind is not None else None)  # before TF-MOT calls it
        if not reason and getattr(layer, "activity_regularizer", None) is not None:
            reason = _ACTIVITY_REGULARIZER
        if reason:
            refusals.append(f"'{layer.name}' ({type(layer).__name__}): {reason}")
    if refusals:
        raise errors.UnsupportedLayerError(f"model '{model.name}' has layers tfjoint cannot make int8 as they are: "
                                           + "; ".join(refusals) + ".")


def _check_custom_layers_serializable(model) -> None:
    """A custom layer TF-MOT must clone has to be registered for Keras serialization; say so before TF-MOT fails."""
    unregistered = []
    for layer in model.layers:
        cls = type(layer)
        if cls.__module__.split(".")[0] in ("tf_keras", "keras", "tfjoint", "tensorflow_model_optimization"):
            continue
        if keras.utils.get_registered_object(keras.utils.get_registered_name(cls)) is not cls:
            unregistered.append(f"'{layer.name}' ({cls.__name__})")
    if unregistered:
        raise errors.UnsupportedLayerError(
            f"model '{model.name}' has custom layers that are not registered for Keras serialization: "
            f"{', '.join(unregistered)}. TF-MOT rebuilds the model from its config, so decorate each class with "
            "@keras.utils.register_keras_serializable(package=...), and tell tfjoint how to prune and quantize it "
            "with tfjoint.register_layer(YourLayer, ...).")


def _input_shapes(model) -> dict[str, tuple]:
    """Each single-input, unshared layer's input shape, for the layout rewrites that need it."""
    shapes = {}
    for layer in model.layers:
        if len(layer.inbound_nodes) == 1 and not isinstance(layer.input_shape, list):
            shapes[layer.name] = tuple(layer.input_shape)
    return shapes


def _runtimes_to_check(check, deprecated: dict) -> tuple[str, ...]:
    """Where the conversion check checks the file: () for no check, ("litert",) by default."""
    if "check_conversion" in deprecated or "runtimes" in deprecated:
        warnings.warn("prepare(check_conversion=..., runtimes=...) is deprecated and will be removed in tfjoint 0.5: "
                      "pass check=False, or check=<the runtimes the file will run in> (e.g. check='tflm').",
                      DeprecationWarning, stacklevel=3)
        if deprecated.get("check_conversion") is False:
            return ()
        runtimes = deprecated.get("runtimes")
        return check_runtimes(runtimes, "runtimes") if runtimes else ("litert",)
    if check is True:
        return ("litert",)
    if check is False or check is None:
        return ()
    if isinstance(check, (str, list, tuple)):
        runtimes = [name for name in ((check,) if isinstance(check, str) else check) if name != STREAMING]
        return check_runtimes(runtimes or ("litert",), "check")
    raise errors.ConfigError(f"`check` must be True, False, or the runtimes the file will run in (\"litert\", "
                             f"\"tflm\", a list of them, with \"streaming\" for a streaming file); received "
                             f"{check!r}.")


STREAMING = "streaming"  # in `check`: the file will be a streaming one (ExportOptions(streaming=True))


def _checks_streaming(check) -> bool:
    return isinstance(check, (str, list, tuple)) and STREAMING in ((check,) if isinstance(check, str) else check)


def _layer_selection(layers, deprecated: dict) -> LayerSelection:
    given = {name: deprecated[name] for name in SELECTION_KEYWORDS if deprecated.get(name) is not None}
    for name in given:
        warnings.warn(f"prepare({name}=...) is deprecated and will be removed in tfjoint 0.5: pass "
                      f"layers=tfjoint.LayerSelection({name}=...).", DeprecationWarning, stacklevel=3)
    return LayerSelection.of(layers, **given)


def _schedule(schedule, deprecated: dict):
    plan = deprecated.get("plan")
    if plan is not None:
        warnings.warn("prepare(plan=...) is deprecated and will be removed in tfjoint 0.5: pass the plan as the "
                      "schedule, prepare(model, plan).", DeprecationWarning, stacklevel=3)
        if schedule is not None:
            raise errors.ConfigError("pass either `plan` or `schedule`, not both (prepare(model, plan) says the same).")
        schedule = plan
    return joint_schedule(schedule, {name: deprecated.get(name) for name in SCHEDULE_KEYWORDS})


def prepare(model: keras.Model, schedule: Any = None, *, layers: LayerSelection | None = None,
            sample_inputs=None, check: bool | str | Sequence[str] = True, **deprecated) -> PreparedModel:
    """Wraps a float model for joint magnitude pruning and QAT in one fit.

    Sparsity follows `tfmot.sparsity.keras.PolynomialDecay`, counted in the
    prepared model's own training steps, and reaches the target exactly at
    the schedule's `end_step`. Fake quantization (TF-MOT's default 8-bit
    scheme: per-channel symmetric conv weights, per-tensor activations,
    Conv+BN and activation handling by its layout transforms) switches on at
    `quant_start_step`. Once a weight is pruned it stays exactly zero, in the
    float kernel and in the (int8) weights.

    Every training-mode forward pass of the prepared model is one schedule
    step: `fit` makes one per batch. `predict`, `evaluate` and `model(x)` do
    not. A layer shared within the model counts once per step.

    Example:
      >>> import tf_keras as keras
      >>> import tfjoint
      >>> inputs = keras.Input((8,))
      >>> model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
      >>> joint = tfjoint.prepare(model, 0.5, check=False)   # 50% of every kernel, by the middle of the fit
      >>> [type(layer).__name__ for layer in joint.layers]
      ['InputLayer', 'JointQuantizeLayer', 'JointQuantizeWrapper']
      >>> joint.schedule.target_sparsity, joint.schedule.end_step   # the first fit sets end_step
      (0.5, None)

    Args:
      model: a built Sequential or Functional float model, usually
        pre-trained: tf_keras, or Keras 3 (rebuilt in tf_keras and checked, see
        `tfjoint.from_keras3`). It is not modified; its weights are copied.
      schedule: what to remove and when: a target sparsity (a float, or a
        dict `{layer name: sparsity}` from `tfjoint.allocate_sparsity`, which
        prunes exactly the layers it names); a `tfjoint.JointSchedule` (every
        setting: `end_step`, `channel_sparsity`, `clusters`,
        `quant_start_step`, ...); a `tfjoint.CompressionPlan` (from
        `tfjoint.plan_for_budget`); or a TF-MOT `PruningSchedule` the weight
        masks follow. Without an `end_step`, the first `fit` reaches the target
        half way through its steps.
      layers: a `tfjoint.LayerSelection`: which layers are pruned (default:
        every layer tfjoint can prune).
      sample_inputs: for a Keras 3 model, inputs to check its tf_keras rebuild
        on (default: seeded random values; see `tfjoint.from_keras3`); they
        also fix a sequence length the model leaves open. With a schedule's
        `residual_sparsity`, they rank the residual channels (by what the
        stream's LayerNorms output on them; without them, by weight norms).
      check: convert the prepared model once, as the export will, so that a
        layer the int8 export would refuse is refused now, before any
        training. True (default) checks for LiteRT; the runtimes the file
        will run in ("tflm", or a list) also check there: with "tflm" the
        file is allocated in TensorFlow Lite Micro. With "streaming" among
        them (e.g. `check=("tflm", "streaming")`), the streaming file
        (`ExportOptions(streaming=True)`) is built and converted instead: a
        layer that cannot stream is refused now. False skips it.
      **deprecated: the keywords of tfjoint 0.3 (`target_sparsity=`,
        `end_step=`, `channel_sparsity=`, `clusters=`, `prune_only=`, ...),
        each a field of `JointSchedule` or `LayerSelection` now; they still
        work, with a DeprecationWarning.

    Returns:
      A new `tfjoint.inspect.PreparedModel` (a tf_keras Functional model that stores
      its `JointSchedule`) to compile and fit, also for a Keras 3 input.

    Raises:
      errors.ModelTypeError: not a Keras model, or a subclassed one (checked
        first, so the first error names the real problem).
      errors.ModelStructureError: unbuilt, nested, or already pruned/quantized.
      errors.ConfigError: an argument is out of range.
      errors.UnsupportedLayerError: a layer cannot be quantized, would not
        convert to int8 (or run where `check` says), or cannot be pruned
        although the selection asks for it.
    """
    unknown = sorted(set(deprecated) - set(DEPRECATED_KEYWORDS))
    if unknown:
        raise TypeError(f"prepare() got unexpected keyword argument(s) {unknown}: prepare(model, schedule, *, layers, "
                        "sample_inputs, check) takes the rest in the schedule (tfjoint.JointSchedule(...)).")
    runtimes = _runtimes_to_check(check, deprecated)
    if is_keras3_model(model):
        model = from_keras3(model, sample_inputs)
    model = flattened(model)  # a nested base model (transfer learning) becomes its layers
    check_float_model(model)
    joint = _schedule(schedule, deprecated)
    selection = _layer_selection(layers, deprecated)
    _check_custom_layers_serializable(model)
    _check_quantizable(model)
    model = substituted(model, runtimes)  # attention, LayerNorm, LeakyReLU (and GELU for TFLM): tfjoint's layers
    if joint.residual_sparsity > 0:
        model, _ = narrow_residual(model, joint.residual_sparsity, sample_inputs)  # before the fit
    pruned = pruned_weights(model, joint, selection)
    joint, specs = channel_specs(model, joint, pruned)
    scheme = JointQuantizeScheme(joint, pruned, specs, input_shapes=_input_shapes(model))
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    with tfmot.quantization.keras.quantize_scope():
        prepared = adopt_joint_layers(tfmot.quantization.keras.quantize_apply(annotated, scheme))
    inputs, outputs = nested_inputs_and_outputs(prepared)  # a dict of named outputs stays a dict
    prepared = PreparedModel(inputs=inputs, outputs=outputs, name=prepared.name, schedule=joint)
    place_centroids(prepared)
    if runtimes:
        with _progress.Phases("tfjoint prepare").run("conversion check", "the export's converter, once"):
            conversion_check.refuse_what_export_would(prepared, runtimes, streaming=_checks_streaming(check))
    return prepared
