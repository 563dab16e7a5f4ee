"""`tfjoint.export_tflite`: a fully int8 flatbuffer, checked and validated before it is written.

The stages, one module each, in the order data flows through them:

    source (strip a prepared model, or choose post-training quantization)
      -> convert   (model -> flatbuffer bytes)
      -> inspect   (read the bytes back once: ops, dtypes, int8 weights, I/O quantization)
      -> validate  (run in LiteRT, compare with Keras and the float model, apply `Tolerances`)
      -> report    (`ExportReport`)
      -> write     (atomically; or raise `ValidationError` and leave any existing file alone)
"""

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint._files import atomic_write_bytes, checked_output_path
from tfjoint._keras import check_tf_keras_model, distribution_strategy_of, keras, weight_short_name
from tfjoint.data import collect_inputs, outputs_as_list, split_validation
from tfjoint.export import convert, explain, measure, memory, micro, validate
from tfjoint.export.inspect import FlatbufferSummary, layer_of, read_flatbuffer
from tfjoint.export.report import ExportReport
from tfjoint.export.runtime import TFLiteModel
from tfjoint.export.validate import Tolerances
from tfjoint.registry import output_channels, pruned_weight_name
from tfjoint.prune.schedule import JointSchedule
from tfjoint.train.inspect import float_layer_name, is_prepared, prepared_model, schedule_of
from tfjoint.train.strip import strip

__all__ = ["export_tflite", "Tolerances"]

_CALIBRATION_SAMPLES = 500


@dataclasses.dataclass
class _Source:
    """The Keras model that is converted, and how it is quantized."""

    model: Any
    quantization: str  # "qat" or "post_training"
    schedule: dict | None
    notes: list[str]


def _trained_on_several_workers(model) -> bool:
    """Whether the model's variables live in a MultiWorkerMirroredStrategy across several workers."""
    strategy = distribution_strategy_of(model)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def _quantization_source(model, representative_data, schedule) -> _Source:
    """Strips a prepared model (the one place this happens); a float model falls back to PTQ."""
    if is_prepared(model) and _trained_on_several_workers(model):
        raise errors.ConfigError(
            f"model '{model.name}' was trained with MultiWorkerMirroredStrategy: reading its synchronized variables "
            "is a collective operation every worker must join. Call tfjoint.strip(model) on every worker, then "
            "export_tflite the stripped model on the chief only."
        )
    planned = None if schedule is None else schedule.to_dict()
    if is_prepared(model):
        return _Source(strip(model), "qat", planned or schedule_of(model).to_dict(), [])
    if any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) for layer in model.layers):
        return _Source(model, "qat", planned, [])
    if representative_data is None:
        raise errors.ModelStructureError(
            f"model '{model.name}' is neither prepared with tfjoint nor quantization-aware, so it has no trained "
            "int8 ranges. Prepare and fit it with tfjoint first, or pass `representative_data` for full-integer "
            "post-training quantization."
        )
    note = "model was not quantization-aware: used full-integer post-training quantization with representative_data"
    return _Source(model, "post_training", planned, [note])


def _not_int8_error(summary: FlatbufferSummary, layer_names) -> errors.ExportError:
    problems = []
    for op in summary.float_ops[:5]:
        layer = next((layer_of(t, layer_names) for t in op.tensor_names if layer_of(t, layer_names)), None)
        origin = f"from layer '{layer}'" if layer else "layer not identifiable from its tensor names"
        problems.append(f"{op.name} ({origin}, float tensor '{op.float_tensors[0]}')")
    if not problems:
        problems.append(f"input dtypes {summary.input_dtypes}, output dtypes {summary.output_dtypes}")
    return errors.ExportError(
        "the converted model is not fully int8: " + "; ".join(problems) + ". Exclude or replace those layers "
        "(e.g. use an activation/op TFLite supports in int8), or make them quantization-aware."
    )


def _kernel_values(layer) -> np.ndarray | None:
    weight_name = pruned_weight_name(layer, prune_depthwise=True)
    for weight in layer.weights:
        if weight_short_name(weight) == weight_name:
            return weight.numpy()
    return None


def _per_layer_sparsity(model, summary: FlatbufferSummary, schedule: dict | None) -> dict[str, dict[str, Any]]:
    """Zeros per weight layer: planned, in the Keras kernel, and in the flatbuffer's int8 weights."""
    layers = [layer for layer in model.layers if _kernel_values(layer) is not None]
    tensors = summary.weights_of([layer.name for layer in layers])
    targets = (schedule or {}).get("target_sparsity")
    per_layer = {}
    for layer in layers:
        kernel = _kernel_values(layer)
        found = tensors.get(layer.name, [])
        size = sum(t.size for t in found)
        name = float_layer_name(layer.name)
        planned = targets.get(name) if isinstance(targets, dict) else targets
        per_layer[name] = {
            "planned": planned,
            "keras": measure.zero_fraction(kernel),
            "tflite": sum(t.zeros for t in found) / size if size else None,
            "tflite_tensors": [t.tensor_name for t in found],
            "size": int(kernel.size),
        }
    return per_layer


def _per_layer_channels(model, summary: FlatbufferSummary, reference) -> dict[str, dict[str, int | None]]:
    """Output channels per weight layer: originally (`reference`), in the Keras model, and in the int8 file."""
    original = {}
    for layer in (reference.layers if reference is not None else []):
        channels = output_channels(layer)
        if channels is not None:
            original[float_layer_name(layer.name)] = channels
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


def _memory(summary, float_content, measured_content) -> dict[str, int | None]:
    """Weights and planned activation arena of the int8 file (and the float32 one), and measured peak RSS."""
    int8 = memory.memory_use(summary)
    result = {"weights_bytes": int8.weights_bytes, "activation_bytes": int8.activation_bytes,
              "float_weights_bytes": None, "float_activation_bytes": None,
              "int8_peak_rss_bytes": None, "float_peak_rss_bytes": None}
    if float_content is not None:
        float32 = memory.memory_use(read_flatbuffer(float_content))
        result.update(float_weights_bytes=float32.weights_bytes, float_activation_bytes=float32.activation_bytes)
    if measured_content is not None:
        result["int8_peak_rss_bytes"] = memory.peak_rss_bytes(measured_content)
        if float_content is not None:
            result["float_peak_rss_bytes"] = memory.peak_rss_bytes(float_content)
    return result


def _measure_latency(report, int8_model, float_content, float_model) -> None:
    """Median single-sample latency at 1 thread (the headline) and 4 threads, int8 and float32."""
    runners = {"int8": int8_model}
    if float_content is not None:
        runners["float"] = TFLiteModel(float_content, float_model.input_names, list(float_model.output_names))
    report.latency_ms = {kind: {str(threads): 1000 * runner.median_latency_s(num_threads=threads)
                                for threads in (1, 4)} for kind, runner in runners.items()}
    report.int8_latency_ms = report.latency_ms["int8"]["1"]
    if "float" in report.latency_ms:
        report.float_latency_ms = report.latency_ms["float"]["1"]


def _resolve_tolerances(tolerances: Tolerances | None, overrides: dict) -> Tolerances:
    if tolerances is not None and not isinstance(tolerances, Tolerances):
        raise errors.ConfigError(f"`tolerances` must be a tfjoint.Tolerances; received {type(tolerances).__name__}.")
    return (tolerances or Tolerances()).replace(**overrides)


def _validate(report, int8_model, source, float_model, validation, summary, tolerances, batch_size, verbose):
    """Runs the int8 file on the validation data and fills the report's comparisons and failures."""
    inputs, labels = validation
    output_names = int8_model.output_names
    int8_out = int8_model.predict(inputs, batch_size=batch_size, verbose=verbose)
    keras_out = outputs_as_list(source.model.predict(inputs, batch_size=batch_size, verbose=0))
    float_out = outputs_as_list(float_model.predict(inputs, batch_size=batch_size, verbose=0)) if float_model else None
    per_output = validate.compare_outputs(
        output_names, int8_out, keras_out, float_out, validate.labels_per_output(labels, output_names))
    primary = validate.primary_output(per_output)
    report.per_output = per_output
    report.num_validation_samples = int(inputs[0].shape[0])
    report.float_accuracy = primary.get("float_accuracy")
    report.qat_accuracy = primary.get("qat_accuracy")
    report.int8_accuracy = primary.get("int8_accuracy")
    agreements = [e["top1_agreement"] for e in per_output.values() if "top1_agreement" in e]
    report.top1_agreement = min(agreements) if agreements else None
    float_agreements = [e["float_top1_agreement"] for e in per_output.values() if "float_top1_agreement" in e]
    report.float_top1_agreement = min(float_agreements) if float_agreements else None
    report.sqnr_db = min(e["sqnr_db"] for e in per_output.values())
    if float_out is not None:
        report.float_sqnr_db = min(e["float_sqnr_db"] for e in per_output.values())
    scales = {t.signature_name: t.scale for t in summary.outputs}
    report.notes.extend(validate.notes_on_outputs(per_output, keras_out, scales, float_out is not None))
    report.failures = validate.failures(per_output, tolerances)


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    representative_data=None,
    validation_data=None,
    float_model: keras.Model | None = None,
    schedule: JointSchedule | None = None,
    tolerances: Tolerances | None = None,
    max_accuracy_drop: float | None = None,
    min_agreement: float | None = None,
    min_sqnr_db: float | None = None,
    max_mse_increase: float | None = None,
    measure_latency: bool = False,
    explain_layers: bool = True,
    keep_rejected: str | os.PathLike | None = None,
    float_path: str | os.PathLike | None = None,
    batch_size: int = 64,
    verbose: bool = False,
) -> ExportReport:
    """Converts to a fully int8 .tflite, validates it in LiteRT, and writes it atomically.

    Args:
      model: a model from `tfjoint.prepare` (stripped here), one already
        stripped, any TF-MOT quantization-aware model, or a float model (then
        full-integer post-training quantization with `representative_data`,
        stated in the report's `quantization` and `notes`).
      path: where to write the .tflite. Written only if validation passes.
      representative_data: samples of the model input (array, list of arrays
        or dict for multi-input, tf.data.Dataset or generator). Checked against
        the model's inputs; used for calibration in the post-training fallback.
      validation_data: `x` or `(x, y)`; `y` may be one array, a list (one per
        output, None for outputs without labels) or a dict by output name.
      float_model: the original float model, to measure what compression cost
        (accuracy, agreement, SQNR, float32 TFLite size and latency).
      schedule: the `JointSchedule` the model was trained with, for the
        report's planned sparsity per layer; read from `model` itself when it
        is a prepared model (give it when exporting a stripped one).
      tolerances: a `Tolerances` (defaults: `Tolerances()`); the four keywords
        below override single fields of it.
      max_accuracy_drop: largest allowed float-minus-int8 accuracy (fraction).
      min_agreement: smallest allowed top-1 agreement between the int8 file
        and the Keras model it was converted from.
      min_sqnr_db: smallest allowed SQNR of any int8 output against Keras.
      max_mse_increase: largest allowed relative increase of a real-valued
        output's MSE against its labels (int8 over float).
      measure_latency: time single-sample invokes (median; 1 thread, the
        headline, and 4) of the int8 and float32 files, and measure the peak
        resident memory of running each (a short subprocess per file).
      explain_layers: with validation data, compute `per_layer_error` (the
        error each int8 operator adds on its own, worst first).
      keep_rejected: where to write the flatbuffer if validation fails.
      float_path: where to write the float32 .tflite of `float_model`, for
        comparison on device (written whether or not validation passes).
      batch_size: samples per interpreter call during validation.
      verbose: show a progress bar during validation.

    Returns:
      The `ExportReport` (also for models that pass).

    Raises:
      errors.ModelTypeError: `model` or `float_model` is not a tf_keras model.
      errors.ConfigError: a bad path or tolerance.
      errors.DataError: bad representative or validation data.
      errors.ExportError: conversion failed or the result is not fully int8.
      errors.ValidationError: a tolerance was violated; `.report` has everything.
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
    _check_batch_size_and_schedule(batch_size, schedule)

    # 1. What is converted, and the data, checked against its inputs.
    source = _quantization_source(model, representative_data, schedule)
    representative = None
    if representative_data is not None:
        representative = collect_inputs(representative_data, source.model, "representative_data", _CALIBRATION_SAMPLES)
    validation = split_validation(validation_data, source.model) if validation_data is not None else None

    # 2. Convert; 3. read the bytes back; 4. the report, from the bytes.
    content = convert.to_int8(source.model, representative if source.quantization == "post_training" else None)
    summary = _read_back(content, source, keep_rejected)
    float_content = convert.to_float32(float_model) if float_model is not None else None
    if float_path is not None:
        atomic_write_bytes(float_path, float_content)
    report = _report(source, content, summary, float_content, float_model or (
        model if source.model is not model else None), tolerances)

    # 5. Validation and measurements in LiteRT.
    int8_model = TFLiteModel(content, source.model.input_names, list(source.model.output_names))
    if validation is not None:
        _validate(report, int8_model, source, float_model, validation, summary, tolerances, batch_size, verbose)
        if explain_layers:
            _explain(report, content, summary, source, float_model, validation[0])
    else:
        report.notes.append("no validation_data: the int8 file was checked for structure only")
    report.memory = _memory(summary, float_content, content if measure_latency else None)
    if measure_latency:
        _measure_latency(report, int8_model, float_content, float_model)

    # 6. Write, or refuse.
    return _write_or_refuse(report, content, path, keep_rejected)


def _checked_model(model, argument: str):
    check_tf_keras_model(model, argument=argument)
    return model


def _checked_float_path(float_path, float_model):
    if float_path is None:
        return None
    if float_model is None:
        raise errors.ConfigError("`float_path` needs `float_model`: there is no float model to convert.")
    return checked_output_path(float_path, "float_path")


def _check_batch_size_and_schedule(batch_size, schedule) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise errors.ConfigError(f"`batch_size` must be an int >= 1; received {batch_size!r}.")
    if schedule is not None and not isinstance(schedule, JointSchedule):
        raise errors.ConfigError(f"`schedule` must be a tfjoint.JointSchedule; received {type(schedule).__name__}.")


def _read_back(content: bytes, source: _Source, keep_rejected) -> FlatbufferSummary:
    """The flatbuffer's summary; a file that is not fully int8 is refused (and kept where asked)."""
    summary = read_flatbuffer(content)
    if not summary.fully_int8:
        if keep_rejected is not None:
            atomic_write_bytes(keep_rejected, content)
        raise _not_int8_error(summary, [layer.name for layer in source.model.layers])
    return summary


def _report(source, content, summary, float_content, reference, tolerances) -> ExportReport:
    """What the bytes say: operators, sparsity, channels, I/O quantization, sizes."""
    report = ExportReport(
        tflite_path=None,
        quantization=source.quantization,
        size_bytes=len(content),
        gzip_size_bytes=measure.gzip_size(content),
        fully_int8=summary.fully_int8,
        ops=summary.op_names,
        float_ops=[{"op": op.name, "tensors": list(op.float_tensors)} for op in summary.float_ops],
        weight_sparsity=summary.weight_sparsity,
        per_layer_sparsity=_per_layer_sparsity(source.model, summary, source.schedule),
        per_layer_channels=_per_layer_channels(source.model, summary, reference),
        inputs=[t.to_dict() for t in summary.inputs],
        outputs=[t.to_dict() for t in summary.outputs],
        operator_counts=summary.operator_counts,
        micro_op_resolver=micro.micro_op_resolver_calls(summary.op_names),
        schedule=source.schedule,
        thresholds=tolerances.to_dict(),
        notes=list(source.notes),
        flatbuffer=summary,
    )
    if float_content is not None:
        report.float_size_bytes = len(float_content)
        report.float_gzip_size_bytes = measure.gzip_size(float_content)
    return report


def _explain(report, content, summary, source, float_model, inputs) -> None:
    """`per_layer_error`: against the float model (the converted model itself for post-training int8)."""
    reference = float_model if float_model is not None else source.model
    if source.quantization == "qat" and float_model is None:
        report.notes.append("per_layer_error compares with the QAT Keras model: pass float_model to compare every "
                            "layer with the float model too")
    report.per_layer_error = explain.per_layer_error(
        content, summary, reference, inputs, qat_model=source.model if source.quantization == "qat" else None)


def _write_or_refuse(report, content, path, keep_rejected) -> ExportReport:
    """Writes the file atomically if every tolerance holds; else raises ValidationError, leaving `path` alone."""
    report.passed = not report.failures
    if not report.passed:
        if keep_rejected is not None:
            atomic_write_bytes(keep_rejected, content)
            report.tflite_path = keep_rejected
            report.notes.append(f"rejected flatbuffer kept at {keep_rejected}")
        raise errors.ValidationError(
            f"export to '{path}' failed validation ({len(report.failures)} problem(s)); nothing was written there: "
            + "; ".join(report.failures),
            report,
        )
    atomic_write_bytes(path, content)
    report.tflite_path = path
    return report
