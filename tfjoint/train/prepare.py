"""`tfjoint.prepare`: turn a float model into one that prunes and QATs in one fit.

The returned model is TF-MOT's `quantize_apply` output (its layout transforms,
QuantizeLayer and QuantizeWrapperV2, the latter two as the subclasses of
`tfjoint.quantize.wrappers` that also load from `.keras`) built with
`JointQuantizeScheme`, so its prunable kernels carry a pruning mask updated in
the graph on TF-MOT's PolynomialDecay schedule. No callback is needed for the
schedule to run.
"""

import contextlib
from typing import Any, Mapping

import numpy as np
import tensorflow_model_optimization as tfmot
from absl import logging

from tfjoint import _progress, errors
from tfjoint._keras import (
    LayerSelector,
    check_float_model,
    is_keras3_model,
    keras,
    nested_inputs_and_outputs,
)
from tfjoint.bridge.keras3 import from_keras3
from tfjoint.data import outputs_as_list, sample_inputs_of
from tfjoint.export.measure import sqnr_db
from tfjoint.prune.budget import CompressionPlan
from tfjoint.prune.channels import ChannelPlan, plan_channel_groups
from tfjoint.prune.schedule import JointSchedule
from tfjoint.prune.selection import LayerSelection
from tfjoint.quantize.clusters import initial_centroids
from tfjoint.quantize.quantizers import CENTROIDS
from tfjoint.quantize.scheme import JointQuantizeScheme
from tfjoint.quantize.substitution import substituted
from tfjoint.quantize.wrappers import adopt_joint_layers
from tfjoint.registry import (
    OUTPUT,
    kind_of,
    needs_calibration,
    offset_variables,
    prunable_kinds_sentence,
    prunable_layers,
    pruned_weight_name,
    pruned_weight_names,
)
from tfjoint.tflite import convert
from tfjoint.tflite.flatbuffer import float_op_problems, missing_in_tflm, read_flatbuffer
from tfjoint.tflite.run import run_reference
from tfjoint.train.prepared_model import PreparedModel
from tfjoint.train.readback import pruned_kernels

__all__ = ["prepare", "LayerSelector", "CHANNEL_CRITERIA"]

CHANNEL_CRITERIA = ("l1", "l2")



def _unprunable_hint(layer) -> str:
    kind = kind_of(layer)
    if kind is not None and kind.prune.on_request:
        return f"pass prune_depthwise=True to prune its '{kind.prune.weight}'"
    return (f"its kind has no pruned weight in tfjoint's registry ({prunable_kinds_sentence()}; register your own "
            "layer with tfjoint.register_layer)")


def _check_per_layer_targets(model, targets: Mapping[str, float], prune_depthwise: bool) -> None:
    layers = {layer.name: layer for layer in model.layers}
    unknown = sorted(set(targets) - set(layers))
    if unknown:
        raise errors.ConfigError(
            f"`target_sparsity` names layers that model '{model.name}' does not have: {unknown}. "
            f"Its prunable layers are: {sorted(prunable_layers(model, prune_depthwise))}."
        )
    for name in targets:
        if pruned_weight_name(layers[name], prune_depthwise) is None:
            raise errors.ConfigError(
                f"`target_sparsity` gives layer '{name}' ({type(layers[name]).__name__}) a sparsity, but it "
                f"cannot be pruned: {_unprunable_hint(layers[name])}. Remove it from the dict."
            )


def _pruned_weights(model, schedule: JointSchedule, selection: LayerSelection) -> dict[str, tuple[str, ...]]:
    prune_depthwise = selection.prune_depthwise
    only = selection.only_names(model)
    excluded = selection.excluded_names(model)
    if isinstance(schedule.target_sparsity, Mapping):
        _check_per_layer_targets(model, schedule.target_sparsity, prune_depthwise)
    pruned = {}
    for layer in model.layers:
        weights = pruned_weight_names(layer, prune_depthwise)
        weight = weights[0] if weights else None
        if only is not None and layer.name in only and weight is None:
            raise errors.UnsupportedLayerError(
                f"layer '{layer.name}' ({type(layer).__name__}) was asked to be pruned (`prune_only`) but cannot "
                f"be: {_unprunable_hint(layer)}; remove it from `prune_only`."
            )
        if weight is None or layer.name in excluded or (only is not None and layer.name not in only):
            continue
        if schedule.target_for(layer.name) is None:  # a per-layer plan that leaves it dense
            continue
        pruned[layer.name] = weights
    return pruned


def _check_clustered_layers(model, schedule: JointSchedule, pruned: Mapping[str, tuple[str, ...]]) -> None:
    """A `clusters` dict may only name layers whose kernels `prepare` prunes (those are the ones clustered)."""
    if not isinstance(schedule.clusters, Mapping):
        return
    unknown = sorted(set(schedule.clusters) - set(pruned))
    if unknown:
        raise errors.ConfigError(
            f"`clusters` names layers whose kernels model '{model.name}' does not prune: {unknown}. Clusters apply to "
            f"the pruned kernels ({sorted(pruned)}); a layer left dense by the selection or a per-layer plan is not "
            "clustered. Remove those names, or prune those layers.")


def place_centroids(prepared) -> None:
    """Sets every clustered kernel's centroids from its current weights (k-means per table, before training)."""
    for pk in pruned_kernels(prepared):
        if pk.quantizer.clusters is not None:
            centroids = initial_centroids(pk.masked_kernel(shared=False), pk.quantizer.clusters,
                                          pk.quantizer.cluster_axis, pk.quantizer.final_sparsity or 0.0)
            pk.quantizer_weights[CENTROIDS].assign(centroids)


def _channel_specs(model, plan: ChannelPlan, schedule: JointSchedule, criterion: str) -> dict[str, dict]:
    """The channel spec (see `JointQuantizeConfig`) of every layer whose weights carry a channel mask."""
    prunable = {name: group for name, group in plan.prunable_groups.items() if schedule.channel_target_for(name) > 0}
    specs = {}
    for layer in model.layers:
        kind = kind_of(layer)
        axes = kind.channels.axes if kind is not None else {}
        if not axes or layer.name not in plan.layers:
            continue
        segments: list[tuple[str | None, int]] = [(group if group in prunable else None, size)
                                                  for group, size in plan.layer_segments(layer.name)]
        groups = [group for group, _ in segments if group is not None]
        if not groups:
            continue
        present = {name: axis for name, axis in axes.items()
                   if name == OUTPUT or getattr(layer, name, None) is not None}
        own = next((g for g in groups if layer.name in prunable[g].producers), None)
        # A producer's schedule ramps its own group; every other member follows the masks its groups' producers set.
        decay = schedule.decay_arguments(schedule.channel_target_for(own or groups[0]))
        specs[layer.name] = {"segments": segments, "axes": present, "schedule": decay, "criterion": criterion,
                             "producer": own is not None}
    return specs


def _per_group_targets(plan: ChannelPlan, targets: Mapping[str, float], model) -> dict[str, float]:
    """A per-group channel plan keyed by this model's group names (a key may name any producer of its group)."""
    owner = {producer: name for name, group in plan.groups.items() for producer in group.producers}
    resolved, unknown = {}, []
    for key, fraction in targets.items():
        group = key if key in plan.groups else owner.get(key)
        if group is None:
            unknown.append(key)
        elif group in plan.prunable_groups:
            resolved[group] = float(fraction)
    if unknown:
        raise errors.ConfigError(
            f"the channel plan names groups that model '{model.name}' does not have: {sorted(unknown)}. Its channel "
            f"groups are {sorted(plan.prunable_groups)}: plan for this model (tfjoint.plan_for_budget(model, ...)).")
    return resolved


def _plan_channels(model, schedule, pruned, criterion) -> tuple[JointSchedule, dict[str, dict]]:
    """Channel specs for the scheme (the pruned Conv/Dense layers produce channel groups), and the schedule
    with a per-group plan keyed by this model's group names."""
    if criterion not in CHANNEL_CRITERIA:
        raise errors.ConfigError(
            f"`channel_criterion` must be one of {list(CHANNEL_CRITERIA)}; received {criterion!r}.")
    per_group = isinstance(schedule.channel_sparsity, Mapping)
    if not per_group and not schedule.prunes_channels:
        return schedule, {}
    producers = {name for name in pruned if getattr(kind_of(model.get_layer(name)), "is_producer", False)}
    plan = plan_channel_groups(model, producers)
    for note in plan.frozen_notes(include_outputs=False):
        logging.warning("tfjoint channel pruning: %s.", note)
    if per_group:
        schedule = schedule.replace(channel_sparsity=_per_group_targets(plan, schedule.channel_sparsity, model))
    elif not plan.prunable_groups:
        reasons = "; ".join(plan.frozen_notes()) or "it has no layer whose channels tfjoint removes"
        raise errors.ConfigError(
            f"`channel_sparsity`={schedule.channel_sparsity} but no channels of model '{model.name}' can be removed: "
            f"{reasons} ({prunable_kinds_sentence()}). Use channel_sparsity=0 (weight sparsity still applies), or "
            "prune a model with hidden layers of those kinds."
        )
    return schedule, _channel_specs(model, plan, schedule, criterion)


@contextlib.contextmanager
def ranges_initialized(prepared, samples):
    """The prepared model after one training-mode step on `samples`, and exactly as before afterwards.

    A freshly prepared model's quantizer ranges are their initial values, and
    an untrained model's biases are exactly zero, which the converter treats
    unlike trained values (a TRANSPOSE_CONV with an all-zero bias stays float,
    and identical zero biases are stored once, so the file is smaller than the
    trained one will be); one step gives the ranges real values, and all-zero
    biases (and BatchNorm shifts, which fold into biases) small values,
    distinct per channel.
    Every variable (ranges, biases, BatchNorm statistics, masks, step
    counters) is put back after.
    """
    saved = [variable.numpy() for variable in prepared.variables]
    distinct = np.random.default_rng(0)
    try:
        for variable in (v for layer in prepared.layers for v in offset_variables(layer)):
            value = variable.numpy()
            if not np.any(value):
                variable.assign(distinct.uniform(1e-2, 2e-2, value.shape).astype(value.dtype))
        prepared(samples if len(samples) > 1 else samples[0], training=True)
        yield
    finally:
        for variable, value in zip(prepared.variables, saved):
            variable.assign(value)


def refuse_what_export_would(prepared, runtimes=()) -> None:
    """Converts the prepared model once, as `export_tflite` will, and refuses now what it would refuse after training.

    The int8 file's structure does not depend on trained values: a layer the
    converter rejects, or leaves in float, is rejected now, naming the user's
    layer instead of an MLIR location; with "tflm" among `runtimes`, so is an
    operator TensorFlow Lite Micro has no kernel for.

    Raises:
      errors.UnsupportedLayerError: the converter fails, the file would not
        be fully int8, would compute something else than the model, or would
        not run where asked; the message names the layers.
    """
    samples = sample_inputs_of(prepared)
    representative = samples if needs_calibration(prepared) else None  # the export calibrates those layers
    try:
        with ranges_initialized(prepared, samples):
            content = convert.to_int8(prepared, representative)
            summary = read_flatbuffer(content)
            fidelity = _fidelity_db(prepared, content, samples) if summary.fully_int8 else None
    except errors.ExportError as error:
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not export to int8 (found before training, by converting the prepared "
            f"model once): {error}"
        ) from error
    if not summary.fully_int8:
        problems = float_op_problems(summary, [layer.name for layer in prepared.layers])
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not export fully int8 (found before training, by converting the prepared "
            f"model once): {'; '.join(problems)}. Replace or exclude those layers with ones TFLite runs in int8.")
    missing = missing_in_tflm(summary, [layer.name for layer in prepared.layers]) if "tflm" in runtimes else []
    if missing:
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not run in TensorFlow Lite Micro: its int8 file needs "
            f"{'; '.join(missing)}, which TFLM has no kernel for (found before training, by converting the prepared "
            "model once). Use an activation TFLM runs (relu, or swish/sigmoid for a GELU) and fine-tune the float "
            "model with it, or deploy on LiteRT (a phone).")
    if fidelity is not None and fidelity < MIN_CHECK_SQNR_DB:
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not keep its accuracy in int8: converted once before training, its int8 "
            f"file computes {fidelity:.1f} dB (SQNR) from the quantization-aware model on sample inputs (below "
            f"{MIN_CHECK_SQNR_DB:g} dB: the file runs operators the quantization-aware model does not simulate). "
            "Replace the layer TFLite runs differently (a registry entry of your own can say how it is quantized: "
            "tfjoint.register_layer), or report the model.")
    if fidelity is not None:
        logging.info("tfjoint: conversion check: the int8 file is %.1f dB (SQNR) from the quantization-aware model "
                     "on sample inputs", fidelity)


# Below this, the int8 file of a freshly prepared model computes something else than its quantization-aware model
# (TFLite's fused int8 LSTM measured 1.7 dB; files whose operators QAT simulates measure 25-45 dB).
MIN_CHECK_SQNR_DB = 10.0


def _fidelity_db(prepared, content: bytes, samples) -> float:
    """The lowest SQNR, over the outputs, of the int8 file against the quantization-aware model on `samples`."""
    input_names, output_names = convert.keras_names(prepared)
    expected = outputs_as_list(prepared.predict(samples if len(samples) > 1 else samples[0], verbose=0))
    actual = run_reference(content, input_names, output_names, samples)
    return min(sqnr_db(e, a) for e, a in zip(expected, actual))


def _check_quantizable(model) -> None:
    """Layers whose kind is quantized but which, as configured, cannot be: refused now, each with its reason."""
    refusals = []
    for layer in model.layers:
        kind = kind_of(layer)
        reason = kind.quantization.check(layer) if kind is not None and kind.quantization.check else None
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


_TIMING = ("begin_step", "initial_sparsity", "power", "frequency", "quant_start_step", "channel_sparsity", "clusters")


def _schedule_from_plan(plan: CompressionPlan, target_sparsity, end_step, timing: dict) -> JointSchedule:
    """The schedule that trains a `CompressionPlan`: its channels per group, its weight sparsity per layer."""
    given = [name for name, value in (("target_sparsity", target_sparsity),
                                      ("channel_sparsity", timing.get("channel_sparsity"))) if value is not None]
    if given:
        raise errors.ConfigError(f"pass either a CompressionPlan or {', '.join(f'`{n}`' for n in given)}, not both: "
                                 "the plan says which channels and weights go.")
    if end_step is None:
        raise errors.ConfigError("prepare(schedule=plan) needs `end_step` (the step at which the plan is reached).")
    if plan.clusters and timing.get("clusters") is not None:
        raise errors.ConfigError(f"pass either a CompressionPlan with clusters or `clusters`, not both: the plan "
                                 f"says how many values each layer shares ({dict(plan.clusters)}).")
    if plan.clusters:
        timing = dict(timing, clusters=dict(plan.clusters))
    weight_targets = dict(plan.weight_sparsity) if plan.weight_sparsity else 0.0
    return JointSchedule(target_sparsity=weight_targets, end_step=end_step,
                         **dict(timing, channel_sparsity=dict(plan.channel_fractions)))


def joint_schedule(schedule, target_sparsity, end_step, timing: dict) -> JointSchedule:
    """The one `JointSchedule` from `prepare`'s schedule-or-plan argument and the keywords actually given.

    `schedule` is a `JointSchedule` (nothing else may be given), a
    `CompressionPlan` (with `end_step` and timing keywords), a TF-MOT
    `PruningSchedule` (the weight masks follow it), or None (then
    `target_sparsity` and `end_step` are required).
    """
    timing = {name: value for name, value in timing.items() if value is not None}
    if isinstance(schedule, JointSchedule):
        given = [name for name, value in (("target_sparsity", target_sparsity), ("end_step", end_step))
                 if value is not None] + sorted(timing)
        if given:
            raise errors.ConfigError(
                f"pass either `schedule` or {', '.join(f'`{n}`' for n in given)}, not both: the schedule already "
                f"holds them ({schedule.to_dict()}).")
        return schedule
    if isinstance(schedule, CompressionPlan):
        return _schedule_from_plan(schedule, target_sparsity, end_step, timing)
    if isinstance(schedule, tfmot.sparsity.keras.PruningSchedule):
        if target_sparsity is not None:
            raise errors.ConfigError(f"pass either a PruningSchedule or `target_sparsity`, not both: "
                                     f"{type(schedule).__name__} says how sparse every pruned kernel gets.")
        return JointSchedule.following(schedule, end_step, **timing)
    if schedule is not None:
        raise errors.ConfigError(
            f"`schedule` must be a tfjoint.JointSchedule, a tfjoint.CompressionPlan (from plan_for_budget) or a "
            f"TF-MOT PruningSchedule; received {type(schedule).__name__}. Build one with tfjoint.JointSchedule(...) "
            "or tfjoint.plan_schedule(...).")
    if target_sparsity is None or end_step is None:
        missing = [n for n, v in (("target_sparsity", target_sparsity), ("end_step", end_step)) if v is None]
        raise errors.ConfigError(
            f"prepare needs {' and '.join(f'`{n}`' for n in missing)} (or a `schedule=tfjoint.JointSchedule(...)`).")
    return JointSchedule(target_sparsity=target_sparsity, end_step=end_step, **timing)


def prepare(
    model: keras.Model,
    target_sparsity: float | Mapping[str, float] | None = None,
    end_step: int | None = None,
    *,
    schedule: JointSchedule | CompressionPlan | Any = None,
    layers: LayerSelection | None = None,
    channel_criterion: str = "l1",
    sample_inputs=None,
    check_conversion: bool = True,
    runtimes=(),
    begin_step: int | None = None,
    initial_sparsity: float | None = None,
    power: float | None = None,
    frequency: int | None = None,
    quant_start_step: int | None = None,
    channel_sparsity: float | None = None,
    clusters: int | Mapping[str, int] | None = None,
    plan: CompressionPlan | None = None,
    prune_depthwise: bool | None = None,
    prune_only: LayerSelector = None,
    exclude: LayerSelector = None,
) -> keras.Model:
    """Wraps a float model for joint magnitude pruning and QAT in one fit.

    Sparsity follows `tfmot.sparsity.keras.PolynomialDecay`, counted in the
    prepared model's own training steps, and reaches the target exactly at
    `end_step` (which need not be on the `frequency` grid). Fake quantization
    (TF-MOT's default 8-bit scheme: per-channel symmetric conv weights,
    per-tensor activations, Conv+BN and activation handling by its layout
    transforms) switches on at `quant_start_step`. Once a weight is pruned it
    stays exactly zero, in the float kernel and in the (int8) weights.

    Every training-mode forward pass of the prepared model is one schedule
    step: `fit` makes one per batch; calling `model(x, training=True)` yourself
    makes one too (as it moves BatchNormalization statistics). `predict`,
    `evaluate` and `model(x)` do not. A layer shared within the model counts
    once per step.

    Example:
      >>> from tfjoint import keras
      >>> import tfjoint
      >>> inputs = keras.Input((8,))
      >>> model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
      >>> joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=100)
      >>> [type(layer).__name__ for layer in joint.layers]
      ['InputLayer', 'JointQuantizeLayer', 'JointQuantizeWrapper']
      >>> joint.schedule.end_step
      100

    Args:
      model: a built Sequential or Functional float model, usually
        pre-trained: tf_keras, or Keras 3 (rebuilt in tf_keras and checked, see
        `tfjoint.from_keras3`). It is not modified; its weights are copied.
      target_sparsity: fraction of zeros in every pruned kernel at the end, or
        a dict `{layer name: sparsity}` (e.g. from `tfjoint.allocate_sparsity`)
        that prunes exactly the layers it names, each to its own target.
      end_step: step at which the target is reached (see `JointSchedule`).
      schedule: instead of `target_sparsity` and the timing keywords, one of:
        a ready `tfjoint.JointSchedule`; a `tfjoint.CompressionPlan` (from
        `tfjoint.plan_for_budget`: the fraction of channels each channel
        group loses and the weight sparsity per layer; `end_step` and the
        timing keywords still apply); or a TF-MOT `PruningSchedule` (e.g.
        `tfmot.sparsity.keras.ConstantSparsity`, or your own subclass) that
        the weight masks follow.
      layers: a `tfjoint.LayerSelection` (which layers are pruned) instead of
        `prune_only`, `exclude` and `prune_depthwise`.
      channel_criterion: how filters are ranked for removal: "l1" (sum of
        absolute weights) or "l2" norm, summed over a group's producers.
      sample_inputs: for a Keras 3 model, inputs to check its tf_keras rebuild
        on (default: seeded random values; see `tfjoint.from_keras3`).
      check_conversion: convert the prepared model once, as the export will,
        so that a layer the int8 export would refuse is refused now, before
        any training (see the README for what it costs; off saves that time
        when the same architecture already exported).
      runtimes: where the int8 file will run (as `export_tflite`'s): with
        "tflm", an operator TensorFlow Lite Micro has no kernel for (GELU) is
        refused by the conversion check, before training.

    Timing keywords (each a field of `JointSchedule`; left at None they keep
    its default, and giving one beside a ready `JointSchedule` is an error):

      begin_step: step of the first mask update.
      initial_sparsity: sparsity at `begin_step`.
      power: PolynomialDecay exponent.
      frequency: mask update period in steps.
      quant_start_step: training steps run in float before fake quantization
        switches on. The default 0 trains under fake quant throughout: the
        network adapts to int8 rounding while it recovers from pruning.
      channel_sparsity: fraction of output channels (filters, units) removed
        from each pruned Conv1D, Conv2D and Dense layer, on the same ramp;
        `target_sparsity` then applies within the kept channels (0 is fine).
        Channels linked through the graph are removed together (residual
        Adds, Concatenate segments, BatchNorm, DepthwiseConv2D, Flatten ->
        Dense); channels that reach a model output are kept, and every layer
        keeps at least one channel. `tfjoint.strip` removes them from the
        model, so the int8 file is smaller and faster. The model returned is
        then updated by the `PreparedModel`'s `train_step`.
      clusters: weight sharing, in the same fit: every pruned kernel keeps at
        most this many distinct values (2 to 256, zero among them, so pruned
        weights stay zero) per table, one table per output channel where the
        kernel is quantized per channel. The values (centroids) are trained;
        weights move between them as they train. Or a dict `{layer name:
        clusters}`. On a microcontroller, `export_tflite(compression="lut")`
        turns it into flash: TFLM's LUT compression stores each weight as a
        `ceil(log2(clusters))`-bit index.

    Shorthands (`schedule=plan` and `layers=tfjoint.LayerSelection(...)` say
    the same; giving both forms is an error): `plan` (a CompressionPlan),
    `prune_depthwise` (also prune DepthwiseConv2D kernels), `prune_only`
    (layer names or a predicate: only these), `exclude` (never these).

    Returns:
      A new `tfjoint.PreparedModel` (a tf_keras Functional model that stores
      its `JointSchedule`) to compile and fit, also for a Keras 3 input: the
      models `prepare` and `strip` return, and `load_model` loads, are
      tf_keras models; the `.tflite` is the deliverable.

    Raises:
      errors.ModelTypeError: not a Keras model, or a subclassed one (checked
        first, so the first error names the real problem).
      errors.ModelStructureError: unbuilt, nested, or already pruned/quantized.
      errors.ConfigError: an argument is out of range.
      errors.UnsupportedLayerError: a layer cannot be quantized, would not
        convert to int8, or cannot be pruned although `prune_only` asks for it.
    """
    if is_keras3_model(model):
        model = from_keras3(model, sample_inputs)
    check_float_model(model)
    if plan is not None:
        if not isinstance(plan, CompressionPlan):
            raise errors.ConfigError(f"`plan` must be a tfjoint.CompressionPlan (from tfjoint.plan_for_budget); "
                                     f"received {type(plan).__name__}.")
        if schedule is not None:
            raise errors.ConfigError("pass either `plan` or `schedule`, not both (schedule=plan says the same).")
        schedule = plan
    timing = dict(begin_step=begin_step, initial_sparsity=initial_sparsity, power=power, frequency=frequency,
                  quant_start_step=quant_start_step, channel_sparsity=channel_sparsity, clusters=clusters)
    schedule = joint_schedule(schedule, target_sparsity, end_step, timing)
    selection = LayerSelection.of(layers, prune_depthwise=prune_depthwise, prune_only=prune_only, exclude=exclude)
    _check_custom_layers_serializable(model)
    _check_quantizable(model)
    model = substituted(model)  # attention, LayerNorm: as tfjoint's integer layers, weights and names kept
    pruned = _pruned_weights(model, schedule, selection)
    _check_clustered_layers(model, schedule, pruned)
    schedule, channel_specs = _plan_channels(model, schedule, pruned, channel_criterion)
    scheme = JointQuantizeScheme(schedule, pruned, channel_specs, input_shapes=_input_shapes(model))
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    with tfmot.quantization.keras.quantize_scope():
        prepared = adopt_joint_layers(tfmot.quantization.keras.quantize_apply(annotated, scheme))
    inputs, outputs = nested_inputs_and_outputs(prepared)  # a dict of named outputs stays a dict
    prepared = PreparedModel(inputs=inputs, outputs=outputs, name=prepared.name, schedule=schedule)
    place_centroids(prepared)
    if check_conversion:
        with _progress.Phases("tfjoint prepare").run("conversion check", "the export's converter, once"):
            refuse_what_export_would(prepared, tuple(runtimes))
    return prepared
