"""`tfjoint.export_tflite`: a fully int8 flatbuffer, checked and validated where it will run, before it is written.

The stages, each a short function, in the order data flows through them:

    source     strip a prepared model (or take a QAT model, or a float one for post-training quantization)
    convert    one candidate file per quantization: QAT, and (with representative data) post-training
               quantization of the same pruned float weights
    read back  each file, once: operators, dtypes, int8 weights, I/O quantization (refuse one not fully int8)
    validate   each candidate in each runtime (LiteRT, its reference kernels, TFLM) against Keras, the float
               model and the labels; ship the better candidate
    measure    the shipped file: weights, flash, the arena (in TFLM), MACs, latency, per-layer error, budgets
    report     `ExportReport`, built once from what the stages returned
    write      atomically; or raise `ValidationError` and leave any existing file alone
"""

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot

from tfjoint import _progress, errors
from tfjoint._files import atomic_write_bytes, checked_output_path
from tfjoint._keras import check_tf_keras_model, distribution_strategy_of, keras, weight_short_name
from tfjoint._names import float_layer_name
from tfjoint.data import collect_inputs, outputs_as_list, split_validation
from tfjoint.export import explain, measure, memory, micro, tflm, validate
from tfjoint.export.report import ExportReport
from tfjoint.export.runtime import TFLiteModel, check_runtimes, runtime_model
from tfjoint.export.validate import Tolerances
from tfjoint.prune.budget import Budget
from tfjoint.prune.schedule import JointSchedule
from tfjoint.registry import kind_of, needs_calibration, output_channels, pruned_weight_name, unwrapped
from tfjoint.tflite import convert
from tfjoint.tflite.flatbuffer import FlatbufferSummary, float_op_problems, layer_of, read_flatbuffer
from tfjoint.train.readback import (
    is_prepared,
    original_channels,
    prepared_model,
    pruning_plan,
    quantized_steps,
    schedule_of,
)
from tfjoint.train.strip import float_twin, strip

__all__ = ["export_tflite", "Tolerances", "QUANTIZATIONS"]

QUANTIZATIONS = ("auto", "qat", "ptq")
_CALIBRATION_SAMPLES = 500
QAT, POST_TRAINING = "qat", "post_training"


# --- What is converted ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Source:
    """The Keras model(s) that are converted, and what the report says about how they were trained."""

    qat_model: Any | None  # a quantization-aware model, or None for a float model
    float_model: Any | None  # the float weights for post-training quantization (a stripped model's twin)
    schedule: JointSchedule | None
    plan: dict[str, float] | None  # the final sparsity of every pruned kernel, when known
    original_channels: dict[str, int]  # output channels before channel pruning, by layer (when known)
    notes: list[str]


def _trained_on_several_workers(model) -> bool:
    """Whether the model's variables live in a MultiWorkerMirroredStrategy across several workers."""
    resolver = getattr(distribution_strategy_of(model), "cluster_resolver", None)
    if resolver is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def _schedule_of(model, schedule):
    if schedule is not None:
        return schedule
    try:
        return schedule_of(model)
    except errors.ModelStructureError:
        return None


def _quantization_source(model, schedule, quantization: str, representative_given: bool) -> _Source:
    """Strips a prepared model (the one place this happens); a float model is post-training quantized."""
    if is_prepared(model) and _trained_on_several_workers(model):
        raise errors.ConfigError(
            f"model '{model.name}' was trained with MultiWorkerMirroredStrategy: reading its synchronized variables "
            "is a collective operation every worker must join. Call tfjoint.strip(model) on every worker, then "
            "export_tflite the stripped model on the chief only."
        )
    quantization_aware = is_prepared(model) or any(
        isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) for layer in model.layers)
    if not quantization_aware:
        if not representative_given:
            raise errors.ModelStructureError(
                f"model '{model.name}' is neither prepared with tfjoint nor quantization-aware, so it has no trained "
                "int8 ranges. Prepare and fit it with tfjoint first, or pass `representative_data` for full-integer "
                "post-training quantization.")
        if quantization == QAT:
            raise errors.ConfigError(
                f"`quantization`='qat' but model '{model.name}' is a float model: it has no trained int8 ranges. "
                "Prepare and fit it with tfjoint first, or use quantization='ptq' (or 'auto') with "
                "`representative_data`.")
        note = "model was not quantization-aware: used full-integer post-training quantization with representative_data"
        return _Source(None, model, _schedule_of(model, schedule), None, {}, [note])
    planned_schedule, plan = _schedule_of(model, schedule), pruning_plan(model)
    qat_model = strip(model) if is_prepared(model) else model
    twin = float_twin(qat_model) if representative_given and quantization != QAT else None
    notes = []
    steps = quantized_steps(model)
    if steps == 0 and planned_schedule is not None and planned_schedule.quant_start_step == 0:
        notes.append(f"model '{model.name}' was never trained: its int8 activation ranges are the initial ones")
    elif steps == 0 and planned_schedule is not None:
        # Trained, but fake quantization never ran: the ranges are the initial ones, not trained ones.
        never = (f"model '{model.name}' never trained with fake quantization: its training stopped before "
                 f"quant_start_step={planned_schedule.quant_start_step}, so its int8 ranges were never observed")
        if twin is None:
            raise errors.ConfigError(
                f"{never}. Train past step {planned_schedule.quant_start_step}, or pass `representative_data` "
                "(with quantization='auto' or 'ptq') to calibrate post-training.")
        notes.append(f"{never}: post-training quantization only")
        qat_model = None
    return _Source(qat_model, twin, planned_schedule, plan, original_channels(model), notes)


@dataclasses.dataclass
class _Candidate:
    """One converted file: its quantization, the Keras model it came from, its bytes read back."""

    quantization: str
    keras_model: Any
    content: bytes
    summary: FlatbufferSummary
    validations: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # runtime -> results
    budget_failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [failure for result in self.validations.values() for failure in result["failures"]] + \
            self.budget_failures


def _not_int8_error(summary: FlatbufferSummary, layer_names, quantization: str) -> errors.ExportError:
    problems = float_op_problems(summary, layer_names)
    how = "quantization-aware" if quantization == QAT else "post-training quantized"
    return errors.ExportError(
        f"the converted ({how}) model is not fully int8: " + "; ".join(problems) + ". Exclude or replace those "
        "layers (e.g. use an activation/op TFLite supports in int8), or make them quantization-aware."
    )


def _convert(source: _Source, quantization: str, representative, phases) -> list[_Candidate]:
    """The candidate files: QAT and/or post-training quantization, each read back and checked fully int8."""
    candidates = []
    if source.qat_model is not None and quantization in ("auto", QAT):
        calibrated = needs_calibration(source.qat_model)  # an LSTM: its ranges are calibrated in the conversion
        with phases.run("conversion", "quantization-aware" + (", calibrating " + ", ".join(
                f"'{float_layer_name(layer.name)}'" for layer in calibrated) if calibrated else "")):
            content = convert.to_int8(source.qat_model, representative if calibrated else None)
        summary = read_flatbuffer(content)
        if not summary.fully_int8:
            raise _not_int8_error(summary, [layer.name for layer in source.qat_model.layers], QAT)
        candidates.append(_Candidate(QAT, source.qat_model, content, summary))
    if source.float_model is not None and representative is not None and quantization in ("auto", "ptq"):
        with phases.run("conversion", "post-training quantization"):
            try:
                content = convert.to_int8(source.float_model, representative)
            except errors.ExportError as error:
                if candidates:  # QAT converted: post-training is only the comparison
                    source.notes.append(f"post-training quantization was not compared: {error}")
                    return candidates
                raise
        summary = read_flatbuffer(content)
        if summary.fully_int8:
            candidates.append(_Candidate(POST_TRAINING, source.float_model, content, summary))
        elif not candidates:
            raise _not_int8_error(summary, [layer.name for layer in source.float_model.layers], POST_TRAINING)
        else:
            source.notes.append("post-training quantization was not compared: its file is not fully int8")
    if not candidates:
        raise errors.ConfigError(
            "`quantization`='ptq' needs `representative_data` (samples to calibrate the int8 ranges on)."
            if quantization == "ptq" else
            "a float model needs `representative_data` for full-integer post-training quantization: prepare and fit "
            "it with tfjoint first, or pass representative_data=x_calib.")
    return candidates


# --- Validation -------------------------------------------------------------------------------------------------

def _validate(candidates: list[_Candidate], runtimes, validation, float_model, tolerances, batch_size, verbose,
              phases) -> list[np.ndarray] | None:
    """Fills each candidate's per-runtime results; returns the float model's outputs (None without one)."""
    inputs, labels = validation
    float_out = None
    if float_model is not None:
        float_out = outputs_as_list(float_model.predict(inputs, batch_size=batch_size, verbose=0))
    for candidate in candidates:
        keras_out = outputs_as_list(candidate.keras_model.predict(inputs, batch_size=batch_size, verbose=0))
        names = convert.keras_names(candidate.keras_model)
        per_output_labels = validate.labels_per_output(labels, names[1])
        for runtime in runtimes:
            with phases.run("validation", f"{candidate.quantization} file in {runtime}"):
                model = runtime_model(runtime, candidate.content, candidate.summary, *names)
                int8_out = model.predict(inputs, batch_size=batch_size, verbose=verbose)
            per_output = validate.compare_outputs(names[1], int8_out, keras_out, float_out, per_output_labels)
            candidate.validations[runtime] = dict(
                validate.headline(per_output), per_output=per_output,
                failures=validate.failures(per_output, tolerances, runtime),
                notes=validate.notes_on_outputs(per_output, keras_out, {t.signature_name or t.name: t.scale
                                                                       for t in candidate.summary.outputs},
                                                float_out is not None))
    return float_out


def _score(candidate: _Candidate, runtime: str) -> tuple:
    """Higher is better: passes validation, then accuracy, then (negated) MSE, then SQNR against the float model."""
    result = candidate.validations.get(runtime, {})
    primary = validate.primary_output(result.get("per_output", {}))
    sqnr = result.get("float_sqnr_db")
    return (not candidate.failures, primary.get("int8_accuracy", 0.0), -primary.get("int8_mse", 0.0),
            sqnr if sqnr is not None else 0.0, candidate.quantization == QAT)


def _choose(candidates: list[_Candidate], runtimes, notes: list[str]) -> _Candidate:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates[0].validations and not any(c.budget_failures for c in candidates):
        notes.append("no validation_data: shipped the quantization-aware file without comparing it with post-training "
                     "quantization")
        return candidates[0]
    shipped = max(candidates, key=lambda c: _score(c, runtimes[0]))
    others = [c.quantization for c in candidates if c is not shipped]
    notes.append(f"shipped the {shipped.quantization} file: it scored better in {runtimes[0]} than {', '.join(others)} "
                 "(see quantization_candidates)")
    return shipped


# --- Measurements of the shipped file ---------------------------------------------------------------------------

def _kernel_values(layer) -> np.ndarray | None:
    weight_name = pruned_weight_name(layer, prune_depthwise=True)
    for weight in layer.weights:
        if weight_short_name(weight) == weight_name:
            return weight.numpy()
    return None


def _layer_of_unnamed_ops(model, summary: FlatbufferSummary) -> dict[str, str]:
    """Operators whose weights the converter names after nothing (`arith.constant`), tied to the one layer whose
    registry kind becomes that operator, when there is exactly one such layer and one such operator."""
    claims: dict[str, list[str]] = {}
    for layer in model.layers:
        for op in getattr(kind_of(layer), "tflite_ops", ()):
            claims.setdefault(op, []).append(layer.name)
    counts: dict[str, int] = {}
    for op in summary.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    return {op: layers[0] for op, layers in claims.items() if len(layers) == 1 and counts.get(op) == 1}


def _per_layer_sparsity(model, summary: FlatbufferSummary, plan: dict[str, float] | None) -> dict[str, dict]:
    """Zeros per pruned layer (only those): planned, in the Keras kernel, and in the flatbuffer's int8 weights.

    Without a plan (a model trained elsewhere), the layers whose kernels hold zeros are listed, planned unknown.
    """
    layers = [layer for layer in model.layers if _kernel_values(layer) is not None]
    tensors = summary.weights_of([layer.name for layer in layers], _layer_of_unnamed_ops(model, summary))
    per_layer = {}
    for layer in layers:
        name = float_layer_name(layer.name)
        kernel = _kernel_values(layer)
        if kernel is None or (plan is not None and not plan.get(name)):  # not pruned, or planned to stay dense
            continue
        if plan is None and not np.any(kernel == 0):
            continue
        found = tensors.get(layer.name, [])
        size = sum(t.size for t in found)
        per_layer[name] = {
            "planned": plan.get(name) if plan is not None else None,
            "keras": measure.zero_fraction(kernel),
            "tflite": sum(t.zeros for t in found) / size if size else None,
            "tflite_tensors": [t.tensor_name for t in found],
            "size": int(kernel.size),
        }
    return per_layer


def _per_layer_channels(model, summary: FlatbufferSummary, original: dict) -> dict[str, dict[str, int | None]]:
    """Output channels per weight layer: before pruning, in the Keras model, and in the int8 file."""
    layers = [layer for layer in model.layers if output_channels(layer) is not None]
    tensors = summary.weights_of([layer.name for layer in layers])
    return {
        float_layer_name(layer.name): {
            "original": original.get(float_layer_name(layer.name)),
            "keras": output_channels(layer),
            "tflite": tensors[layer.name][0].output_channels if tensors.get(layer.name) else None,
        }
        for layer in layers
    }


def _per_layer_macs(model, summary: FlatbufferSummary) -> dict[str, int]:
    """MACs of each layer's weight operators in the file (by the user's layer names)."""
    shapes = {t.index: t.shape for t in summary.tensors}
    names = [layer.name for layer in model.layers]
    per_layer: dict[str, int] = {}
    for op in summary.ops:
        macs = memory.op_macs(op.name, [shapes.get(i, ()) for i in op.inputs],
                              shapes.get(op.outputs[0], ()) if op.outputs else ())
        if not macs:
            continue
        weight_tensor = next((t for t in summary.weights if t.op_index == op.index), None)
        layer = layer_of(weight_tensor.tensor_name, names) if weight_tensor is not None else None
        key = float_layer_name(layer) if layer else f"{op.name}#{op.index}"
        per_layer[key] = per_layer.get(key, 0) + macs
    return per_layer


def _memory(summary: FlatbufferSummary, content: bytes, float_content, measure_rss: bool, notes, phases) -> dict:
    """Flash, weights, the TFLM arena (measured when tflite-micro is installed, else the planner estimate), RSS."""
    int8 = memory.memory_use(summary)
    result: dict[str, Any] = {
        "flash_bytes": len(content), "weights_bytes": int8.weights_bytes, "activation_bytes": int8.planned_head_bytes,
        "tflm_arena_bytes": None, "tflm_arena_head_bytes": None, "tflm_arena_tail_bytes": None,
        "tflm_arena_measured_by": None, "float_weights_bytes": None, "float_activation_bytes": None,
        "int8_peak_rss_bytes": None, "float_peak_rss_bytes": None,
    }
    if tflm.tflm_available():
        with phases.run("TFLM arena"):
            try:
                arena = tflm.measure_arena(content)
                result.update(tflm_arena_bytes=arena.total_bytes, tflm_arena_head_bytes=arena.head_bytes,
                              tflm_arena_tail_bytes=arena.tail_bytes,
                              tflm_arena_measured_by="TensorFlow Lite Micro on this 64-bit host (the tail is smaller "
                                                     "on a 32-bit MCU)")
            except errors.ExportError as error:
                notes.append(f"TensorFlow Lite Micro could not run this file: {error}")
    else:
        notes.append("memory['activation_bytes'] is an estimate (TFLM's planner, followed exactly, without scratch "
                     "buffers or TFLM's own persistent memory): install tflite-micro to measure the arena in TFLM "
                     f"({tflm.INSTALL_HINT})")
    if float_content is not None:
        float32 = memory.memory_use(read_flatbuffer(float_content))
        result.update(float_weights_bytes=float32.weights_bytes, float_activation_bytes=float32.planned_head_bytes)
    if measure_rss:
        result["int8_peak_rss_bytes"] = memory.peak_rss_bytes(content)
        if float_content is not None:
            result["float_peak_rss_bytes"] = memory.peak_rss_bytes(float_content)
    return result


def _latency(candidate: _Candidate, float_content, float_model) -> dict[str, dict[str, float]]:
    """Median single-sample latency: int8 with XNNPACK (1 and 4 threads) and builtin kernels, float32 likewise."""
    names = convert.keras_names(candidate.keras_model)
    runners = {"int8": TFLiteModel(candidate.content, *names)}
    if float_content is not None:
        runners["float"] = TFLiteModel(float_content, *convert.keras_names(float_model))
    latency = {kind: {str(threads): 1000 * runner.median_latency_s(num_threads=threads) for threads in (1, 4)}
               for kind, runner in runners.items()}
    # On small models XNNPACK's per-call overhead hides the compute: LiteRT's builtin kernels show it.
    builtin = TFLiteModel(candidate.content, *names, kernels="builtin")
    latency["int8_builtin"] = {"1": 1000 * builtin.median_latency_s(num_threads=1)}
    return latency


def _check_budget(budget: Budget | None, memory_figures: dict, macs: int) -> tuple[dict, list[str]]:
    """Each budget against its figure measured on the file; a sentence per missed budget."""
    if budget is None:
        return {}, []
    return budget.check(memory_figures, macs)


# --- The public entry point -------------------------------------------------------------------------------------

def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    representative_data=None,
    validation_data=None,
    float_model: keras.Model | None = None,
    schedule: JointSchedule | None = None,
    quantization: str = "auto",
    runtimes=("litert",),
    budget: Budget | None = None,
    tolerances: Tolerances | None = None,
    max_accuracy_drop: float | None = None,
    min_agreement: float | None = None,
    min_sqnr_db: float | None = None,
    max_mse_increase: float | None = None,
    measure_latency: bool = False,
    explain_layers: bool | None = None,
    keep_rejected: str | os.PathLike | None = None,
    float_path: str | os.PathLike | None = None,
    batch_size: int = 64,
    verbose: bool = False,
) -> ExportReport:
    """Converts to a fully int8 .tflite, validates it where it will run, and writes it atomically.

    Args:
      model: a model from `tfjoint.prepare` (stripped here), one already
        stripped, any TF-MOT quantization-aware model, or a float model (then
        full-integer post-training quantization with `representative_data`).
      path: where to write the .tflite. Written only if validation passes.
      representative_data: samples of the model input (array, list of arrays
        or dict for multi-input, tf.data.Dataset or generator). Used to
        calibrate post-training quantization: of a float model, or of a
        prepared model's pruned float weights for comparison with QAT.
      validation_data: `x` or `(x, y)`; `y` may be one array, a list (one per
        output, None for outputs without labels) or a dict by output name.
      float_model: the original float model, to measure what compression cost
        (accuracy, agreement, SQNR, float32 TFLite size and latency).
      schedule: the `JointSchedule` the model was trained with, for the
        report. Defaults to the one the model carries (a prepared model, or
        one `tfjoint.strip` returned).
      quantization: "auto" (default): with `representative_data` and a
        quantization-aware model, also convert its pruned float weights with
        full-integer post-training quantization, validate both files in the
        same runtimes, and ship the better (both scores are in the report's
        `quantization_candidates`); "qat": the quantization-aware file only;
        "ptq": post-training quantization only. Pruned zeros are exact in
        either file.
      runtimes: where to validate: "litert" (LiteRT's default interpreter with
        XNNPACK, as phones run it), "litert_reference" (LiteRT's reference
        kernels), "tflm" (the TensorFlow Lite Micro interpreter, as
        microcontrollers run it; needs `tfjoint[micro]`). Validation fails if
        any of them breaks a tolerance; the headline figures are the first's.
      budget: a `tfjoint.Budget` (flash, arena, MACs) the file must meet,
        checked on the file itself (the arena in TFLM): a missed budget is a
        validation failure.
      tolerances: a `Tolerances` (defaults: `Tolerances()`); the four keywords
        below override single fields of it.
      max_accuracy_drop: largest allowed float-minus-int8 accuracy (fraction).
      min_agreement: smallest allowed top-1 agreement between the int8 file
        and the Keras model it was converted from.
      min_sqnr_db: smallest allowed SQNR of any int8 output against Keras.
      max_mse_increase: largest allowed relative increase of a real-valued
        output's MSE against its labels (int8 over float).
      measure_latency: time single-sample invokes (median; 1 thread, the
        headline, and 4; and LiteRT's builtin kernels) of the int8 and float32
        files, and measure the peak resident memory of running each.
      explain_layers: with validation data, compute `per_layer_error` (the
        error each int8 operator adds on its own, worst first). Defaults to
        on for files up to 200 weight operators (the per-layer pass costs
        about one Keras forward per operator); the report says when it was
        skipped.
      keep_rejected: where to write the flatbuffer if validation fails.
      float_path: where to write the float32 .tflite of `float_model`, for
        comparison on device (written whether or not validation passes).
      batch_size: samples per interpreter call during validation.
      verbose: show a progress bar during validation.

    Returns:
      The `ExportReport` (also for models that pass).

    Raises:
      errors.ModelTypeError: `model` or `float_model` is not a tf_keras model.
      errors.ConfigError: a bad path, tolerance, runtime or quantization; TFLM
        asked for but not installed.
      errors.DataError: bad representative or validation data.
      errors.ExportError: conversion failed or the result is not fully int8.
      errors.ValidationError: a tolerance or budget was violated; `.report` has everything.
    """
    # 0. Arguments, before any slow work.
    model = prepared_model(_checked_model(model, "model"))  # a Distiller exports its student
    float_model = None if float_model is None else _checked_model(float_model, "float_model")
    path = checked_output_path(path, "path")
    keep_rejected = None if keep_rejected is None else checked_output_path(keep_rejected, "keep_rejected")
    float_path = _checked_float_path(float_path, float_model)
    tolerances = _resolve_tolerances(tolerances, dict(
        max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, min_sqnr_db=min_sqnr_db,
        max_mse_increase=max_mse_increase))
    _check_arguments(batch_size, schedule, quantization, budget)
    _check_calibration(model, representative_data)
    runtimes = check_runtimes(runtimes)
    phases = _progress.Phases("tfjoint export")

    # 1. What is converted, and the data, checked against its inputs.
    with phases.run("preparing the source"):
        source = _quantization_source(model, schedule, quantization, representative_data is not None)
    inputs_of = source.qat_model or source.float_model
    representative = None
    if representative_data is not None:
        representative = collect_inputs(representative_data, inputs_of, "representative_data", _CALIBRATION_SAMPLES)
    validation = split_validation(validation_data, inputs_of) if validation_data is not None else None

    # 2. Convert and read back; 3. validate each candidate where it will run, and choose.
    candidates = _convert(source, quantization, representative, phases)
    float_content = None
    if float_model is not None:
        with phases.run("conversion", "float32 reference"):
            float_content = convert.to_float32(float_model)
    if float_path is not None and float_content is not None:
        atomic_write_bytes(float_path, float_content)
    notes = list(source.notes)
    if validation is not None:
        _validate(candidates, runtimes, validation, float_model, tolerances, batch_size, verbose, phases)
    else:
        notes.append("no validation_data: the int8 file was checked for structure only")
    measured = _check_budgets(candidates, budget, float_content, notes, phases)
    shipped = _choose(candidates, runtimes, notes)

    # 4. Measure the shipped file; 5. the report, once; 6. write, or refuse.
    figures = _measure(shipped, source, validation, float_model, float_content, measured.get(id(shipped)), budget,
                       measure_latency, explain_layers, notes, phases)
    report = _build_report(shipped, candidates, quantization, runtimes, source, float_model, float_content,
                           validation, tolerances, figures, notes, phases)
    for data, argument in ((validation[0] if validation else None, "validation_data"),
                           (representative, "representative_data")):
        if data is not None:
            report.notes.extend(validate.input_range_notes(data, shipped.summary.inputs, argument))
    return _write_or_refuse(report, shipped.content, path, keep_rejected)


def _check_budgets(candidates, budget, float_content, notes, phases) -> dict[int, dict]:
    """Every candidate's memory figures against the budget (so that one meeting it ships), by id(candidate)."""
    measured: dict[int, dict] = {}
    if budget is None:
        return measured
    for candidate in candidates:
        measured[id(candidate)] = _memory(candidate.summary, candidate.content, float_content, False, notes, phases)
        _, candidate.budget_failures = budget.check(measured[id(candidate)], memory.memory_use(candidate.summary).macs)
    return measured


@dataclasses.dataclass(frozen=True)
class _Measurements:
    """What the shipped file needs and does: memory, MACs, per-layer error, latency, each budget."""

    memory: dict
    macs: int
    per_layer_error: list
    latency: dict
    budget: dict


def _measure(shipped, source, validation, float_model, float_content, memory_figures, budget, measure_latency,
             explain_layers, notes, phases) -> _Measurements:
    if memory_figures is None or measure_latency:  # not measured for the budget, or the RSS is wanted too
        memory_figures = _memory(shipped.summary, shipped.content, float_content, measure_latency, notes, phases)
    per_layer_error = []
    if validation is not None and _explains(explain_layers, shipped.summary, notes):
        with phases.run("per-layer error"):
            per_layer_error = _explain(shipped, source, float_model, validation[0], notes)
    latency = {}
    if measure_latency:
        with phases.run("latency"):
            latency = _latency(shipped, float_content, float_model)
    macs = memory.memory_use(shipped.summary).macs
    budget_figures, _ = _check_budget(budget, memory_figures, macs)
    return _Measurements(memory_figures, macs, per_layer_error, latency, budget_figures)


def _checked_model(model, argument: str):
    check_tf_keras_model(model, argument=argument)
    return model


def _checked_float_path(float_path, float_model) -> str | None:
    if float_path is None:
        return None
    if float_model is None:
        raise errors.ConfigError("`float_path` needs `float_model`: there is no float model to convert.")
    return checked_output_path(float_path, "float_path")


def _resolve_tolerances(tolerances: Tolerances | None, overrides: dict) -> Tolerances:
    if tolerances is not None and not isinstance(tolerances, Tolerances):
        raise errors.ConfigError(f"`tolerances` must be a tfjoint.Tolerances; received {type(tolerances).__name__}.")
    return (tolerances or Tolerances()).replace(**overrides)


def _check_arguments(batch_size, schedule, quantization, budget) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise errors.ConfigError(f"`batch_size` must be an int >= 1; received {batch_size!r}.")
    if schedule is not None and not isinstance(schedule, JointSchedule):
        raise errors.ConfigError(f"`schedule` must be a tfjoint.JointSchedule; received {type(schedule).__name__}.")
    if quantization not in QUANTIZATIONS:
        raise errors.ConfigError(f"`quantization` must be one of {list(QUANTIZATIONS)}; received {quantization!r}.")
    if budget is not None and not isinstance(budget, Budget):
        raise errors.ConfigError(f"`budget` must be a tfjoint.Budget; received {type(budget).__name__}.")
    if budget is not None and budget.arena_bytes is not None:
        tflm.require_tflm("budget.arena_bytes (the arena is measured in TensorFlow Lite Micro)")


def _check_calibration(model, representative_data) -> None:
    """A model with layers whose int8 ranges come from calibration (an LSTM) needs representative data."""
    calibrated = needs_calibration(model)
    if calibrated and representative_data is None:
        names = ", ".join(f"'{float_layer_name(layer.name)}' ({type(unwrapped(layer)).__name__})"
                          for layer in calibrated)
        raise errors.ConfigError(f"model '{model.name}' has layers whose int8 ranges the converter calibrates "
                                 f"({names}): pass `representative_data` (a few hundred typical inputs).")


_EXPLAIN_MAX_WEIGHT_OPS = 200


def _explains(explain_layers: bool | None, summary: FlatbufferSummary, notes: list[str]) -> bool:
    if explain_layers is not None:
        return bool(explain_layers)
    if len(summary.weights) > _EXPLAIN_MAX_WEIGHT_OPS:
        notes.append(f"per_layer_error was skipped: the file has {len(summary.weights)} weight operators (more than "
                     f"{_EXPLAIN_MAX_WEIGHT_OPS}); pass explain_layers=True to compute it anyway")
        return False
    return True


def _explain(shipped: _Candidate, source: _Source, float_model, inputs, notes) -> list[dict]:
    """`per_layer_error`: against the float model (the converted float weights themselves without one)."""
    reference = float_model if float_model is not None else (source.float_model or shipped.keras_model)
    if shipped.quantization == QAT and float_model is None:
        notes.append("per_layer_error compares with the QAT Keras model: pass float_model to compare every "
                     "layer with the float model too")
    return explain.per_layer_error(shipped.content, shipped.summary, reference, inputs,
                                   qat_model=shipped.keras_model if shipped.quantization == QAT else None)


def _originals(source: _Source, float_model) -> dict[str, int]:
    """Output channels before pruning: the float model's if given, else what the source recorded, else the file's."""
    found = dict(source.original_channels)
    for layer in (float_model.layers if float_model is not None else []):
        channels = output_channels(layer)
        if channels is not None:
            found.setdefault(float_layer_name(layer.name), channels)
    model = source.qat_model or source.float_model
    for layer in (model.layers if model is not None else []):
        channels = output_channels(layer)
        if channels is not None:
            found.setdefault(float_layer_name(layer.name), channels)
    return found


def _candidate_summary(candidate: _Candidate, runtimes) -> dict[str, Any]:
    result = candidate.validations.get(runtimes[0], {})
    return {"size_bytes": len(candidate.content), "int8_accuracy": result.get("int8_accuracy"),
            "top1_agreement": result.get("top1_agreement"), "sqnr_db": result.get("sqnr_db"),
            "float_sqnr_db": result.get("float_sqnr_db"), "failures": candidate.failures,
            "per_runtime": {runtime: {k: v for k, v in r.items() if k not in ("per_output", "notes")}
                            for runtime, r in candidate.validations.items()}}


def _build_report(shipped, candidates, quantization, runtimes, source, float_model, float_content, validation,
                  tolerances, figures: _Measurements, notes, phases) -> ExportReport:
    """The report, once, from what the stages measured."""
    summary = shipped.summary
    first = shipped.validations.get(runtimes[0], {})
    failures = shipped.failures
    notes = notes + [note for result in shipped.validations.values() for note in result.get("notes", [])]
    if "tflm" in runtimes and source.plan and any(v > 0 for v in source.plan.values()):
        notes.append("TensorFlow Lite Micro stores weights dense: unstructured zeros shrink the download (gzip), not "
                     "flash or RAM on a microcontroller; channel_sparsity (or a tfjoint.Budget) removes whole filters, "
                     "which shrinks both")
    report = ExportReport(
        tflite_path=None,
        quantization=shipped.quantization,
        quantization_requested=quantization,
        quantization_candidates={c.quantization: _candidate_summary(c, runtimes) for c in candidates},
        size_bytes=len(shipped.content),
        gzip_size_bytes=measure.gzip_size(shipped.content),
        fully_int8=summary.fully_int8,
        ops=summary.op_names,
        float_ops=[{"op": op.name, "tensors": list(op.float_tensors)} for op in summary.float_ops],
        weight_sparsity=summary.weight_sparsity,
        per_layer_sparsity=_per_layer_sparsity(shipped.keras_model, summary, source.plan),
        per_layer_channels=_per_layer_channels(shipped.keras_model, summary, _originals(source, float_model)),
        per_layer_macs=_per_layer_macs(shipped.keras_model, summary),
        inputs=[t.to_dict() for t in summary.inputs],
        outputs=[t.to_dict() for t in summary.outputs],
        operator_counts=summary.operator_counts,
        micro_op_resolver=micro.micro_op_resolver_calls(summary.op_names),
        schedule=source.schedule.to_dict() if source.schedule is not None else None,
        budget=figures.budget,
        float_size_bytes=len(float_content) if float_content is not None else None,
        float_gzip_size_bytes=measure.gzip_size(float_content) if float_content is not None else None,
        num_validation_samples=int(validation[0][0].shape[0]) if validation is not None else 0,
        runtimes=list(runtimes) if validation is not None else [],
        per_runtime={runtime: {k: v for k, v in result.items() if k != "notes"}
                     for runtime, result in shipped.validations.items()},
        float_accuracy=first.get("float_accuracy"),
        keras_accuracy=first.get("keras_accuracy"),
        int8_accuracy=first.get("int8_accuracy"),
        top1_agreement=first.get("top1_agreement"),
        float_top1_agreement=first.get("float_top1_agreement"),
        sqnr_db=first.get("sqnr_db"),
        float_sqnr_db=first.get("float_sqnr_db"),
        per_output=first.get("per_output", {}),
        per_layer_error=figures.per_layer_error,
        memory=figures.memory,
        macs=figures.macs,
        latency_ms=figures.latency,
        stage_seconds={name: round(seconds, 3) for name, seconds in phases.seconds.items()},
        thresholds=tolerances.to_dict(),
        failures=failures,
        notes=list(dict.fromkeys(notes)),
        flatbuffer=summary,
    )
    return report


def _write_or_refuse(report, content, path, keep_rejected) -> ExportReport:
    """Writes the file atomically if every tolerance holds; else raises ValidationError, leaving `path` alone."""
    report.passed = not report.failures
    if not report.passed:
        if keep_rejected is not None:
            atomic_write_bytes(keep_rejected, content)
            report.tflite_path = keep_rejected
            report.notes.append(f"rejected flatbuffer kept at {keep_rejected}")
        hints = [note for note in report.notes if note.startswith(("`validation_data`", "`representative_data`"))]
        raise errors.ValidationError(
            f"export to '{path}' failed validation ({len(report.failures)} problem(s)); nothing was written there: "
            + "; ".join(report.failures) + (f". Note: {hints[0]}" if hints else ""),
            report,
        )
    atomic_write_bytes(path, content)
    report.tflite_path = path
    return report
