"""`tfjoint.export_tflite`: a fully int8 flatbuffer, checked and validated before it is written.

Stages, in order: check the arguments (before any slow work) -> strip a
prepared model -> convert with int8 input/output -> read the flatbuffer back
(operators, dtypes, zeros in the int8 weights) -> run it in LiteRT on the
validation data and compare with the Keras model it came from and with the
float model -> apply the tolerances -> write atomically, or raise
`ValidationError` with the full report and leave any existing file alone.
"""

import os
import warnings
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot

from tfjoint import errors, measure
from tfjoint._keras import check_tf_keras_model, keras, tf, weight_short_name
from tfjoint.data import collect_inputs, split_validation
from tfjoint.flatbuffer import FlatbufferSummary, layer_of, read_flatbuffer
from tfjoint.preparation import prunable_weight
from tfjoint.quantizers import is_prepared
from tfjoint.report import ExportReport, atomic_write_bytes
from tfjoint.runtime import TFLiteModel
from tfjoint.stripping import strip

__all__ = ["export_tflite", "convert_float32", "DEFAULT_THRESHOLDS"]

DEFAULT_THRESHOLDS = {
    # Compression cost: float accuracy minus int8 accuracy (needs labels and float_model).
    "max_accuracy_drop": 0.02,
    # Conversion fidelity: top-1 agreement of the int8 file with the Keras model it came from.
    "min_agreement": 0.95,
    # Conversion fidelity for every output: SQNR of the dequantized int8 outputs.
    "min_sqnr_db": 15.0,
}
_CALIBRATION_SAMPLES = 500


def _check_path(path, argument: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise errors.ConfigError(f"`{argument}` must be a file path; received {type(path).__name__}.")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise errors.ConfigError(f"`{argument}` '{path}' is a directory; give a file path such as '{os.path.join(path, 'model.tflite')}'.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise errors.ConfigError(f"`{argument}`: directory '{directory}' does not exist; create it first (os.makedirs).")
    if not os.access(directory, os.W_OK):
        raise errors.ConfigError(f"`{argument}`: directory '{directory}' is not writable.")
    return path


def _check_thresholds(thresholds: dict[str, float]) -> None:
    for name in ("max_accuracy_drop", "min_agreement"):
        if not 0.0 <= thresholds[name] <= 1.0:
            raise errors.ConfigError(f"`{name}` must be a fraction in [0, 1]; received {thresholds[name]!r}.")


def _is_quantization_aware(model) -> bool:
    return any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) for layer in model.layers)


def _converter_error(error: Exception, model) -> errors.ExportError:
    lines = [line for line in str(error).splitlines() if "error:" in line] or str(error).splitlines()[:1]
    return errors.ExportError(
        f"the TFLite converter failed on model '{model.name}': {lines[0].strip() if lines else type(error).__name__}. "
        "Check that every layer is one TFLite supports in int8 (exclude or replace the layer named above)."
    )


def _convert_int8(model, representative: list[np.ndarray] | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if representative is not None:  # full-integer post-training quantization
        def samples():
            for i in range(representative[0].shape[0]):
                yield [array[i : i + 1] for array in representative]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        try:
            return converter.convert()
        except Exception as error:  # the converter raises ConverterError and others
            raise _converter_error(error, model) from error


def convert_float32(model) -> bytes:
    """A plain float32 flatbuffer of `model`, for size and latency comparison."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    try:
        return converter.convert()
    except Exception as error:
        raise _converter_error(error, model) from error


def _not_int8_error(summary: FlatbufferSummary, layer_names) -> errors.ExportError:
    problems = []
    for op in summary.float_ops[:5]:
        layer = next((layer_of(t, layer_names) for t in op.float_tensors if layer_of(t, layer_names)), None)
        problems.append(f"{op.name} (from layer '{layer or 'unknown'}', float tensor '{op.float_tensors[0]}')")
    if not problems:
        problems.append(f"input dtypes {summary.input_dtypes}, output dtypes {summary.output_dtypes}")
    return errors.ExportError(
        "the converted model is not fully int8: " + "; ".join(problems) + ". Exclude or replace those layers "
        "(e.g. use an activation/op TFLite supports in int8), or make them quantization-aware."
    )


def _kernel_values(wrapper) -> np.ndarray | None:
    weight_name = prunable_weight(wrapper.layer, prune_depthwise=True)
    for weight in wrapper.weights:
        if weight_short_name(weight) == weight_name:
            return weight.numpy()
    return None


def _per_layer_sparsity(model, summary: FlatbufferSummary) -> dict[str, dict[str, Any]]:
    """Zeros per weight layer: in the Keras kernel, and in the flatbuffer's int8 weights."""
    wrappers = [layer for layer in model.layers if isinstance(layer, tfmot.quantization.keras.QuantizeWrapper)]
    names = [w.name for w in wrappers]
    per_layer = {}
    for wrapper in wrappers:
        kernel = _kernel_values(wrapper)
        if kernel is None:
            continue
        tensors = [w for w in summary.weights if layer_of(w.tensor_name, names) == wrapper.name]
        zeros = sum(t.zeros for t in tensors)
        size = sum(t.size for t in tensors)
        per_layer[wrapper.layer.name] = {
            "keras": measure.zero_fraction(kernel),
            "tflite": zeros / size if size else None,
            "tflite_tensors": [t.tensor_name for t in tensors],
            "size": int(kernel.size),
        }
    return per_layer


def _labels_per_output(labels, output_names) -> list:
    if labels is None:
        return [None] * len(output_names)
    if isinstance(labels, dict):
        return [labels.get(name) for name in output_names]
    if isinstance(labels, list):
        if len(labels) != len(output_names):
            raise errors.DataError(
                f"`validation_data`: {len(labels)} label arrays for {len(output_names)} outputs {output_names}."
            )
        return labels
    if len(output_names) > 1:
        raise errors.DataError(
            f"`validation_data`: the model has {len(output_names)} outputs {output_names}; give labels as a list "
            "with one array (or None) per output."
        )
    return [labels]


def _as_list(outputs) -> list[np.ndarray]:
    return [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else [np.asarray(outputs)]


def _compare_outputs(output_names, int8_out, keras_out, float_out, labels) -> dict[str, dict[str, Any]]:
    per_output = {}
    for i, name in enumerate(output_names):
        entry: dict[str, Any] = {
            "sqnr_db": measure.sqnr_db(keras_out[i], int8_out[i]),
            "cosine_similarity": measure.cosine_similarity(keras_out[i], int8_out[i]),
            "max_abs_error": measure.max_abs_error(keras_out[i], int8_out[i]),
        }
        classifier = measure.is_classifier_output(int8_out[i])
        entry["classifier"] = classifier
        if classifier:
            entry["top1_agreement"] = measure.top1_agreement(keras_out[i], int8_out[i])
        if float_out is not None:
            entry["float_sqnr_db"] = measure.sqnr_db(float_out[i], int8_out[i])
            if classifier:
                entry["float_top1_agreement"] = measure.top1_agreement(float_out[i], int8_out[i])
        if labels[i] is not None and classifier:
            entry["int8_accuracy"] = measure.accuracy(int8_out[i], labels[i])
            entry["qat_accuracy"] = measure.accuracy(keras_out[i], labels[i])
            if float_out is not None:
                entry["float_accuracy"] = measure.accuracy(float_out[i], labels[i])
        per_output[name] = entry
    return per_output


def _failures(per_output, thresholds) -> list[str]:
    failures = []
    for name, entry in per_output.items():
        if "top1_agreement" in entry and entry["top1_agreement"] < thresholds["min_agreement"]:
            failures.append(
                f"output '{name}': top-1 agreement of int8 with its Keras model {entry['top1_agreement']:.4f} "
                f"< min_agreement {thresholds['min_agreement']}"
            )
        if entry["sqnr_db"] < thresholds["min_sqnr_db"]:
            failures.append(f"output '{name}': SQNR {entry['sqnr_db']:.2f} dB < min_sqnr_db {thresholds['min_sqnr_db']}")
        if "float_accuracy" in entry:
            drop = entry["float_accuracy"] - entry["int8_accuracy"]
            if drop > thresholds["max_accuracy_drop"]:
                failures.append(
                    f"output '{name}': int8 accuracy {entry['int8_accuracy']:.4f} is {drop:.4f} below float "
                    f"{entry['float_accuracy']:.4f} > max_accuracy_drop {thresholds['max_accuracy_drop']}"
                )
    return failures


def _primary(per_output) -> dict[str, Any]:
    for predicate in (lambda e: "int8_accuracy" in e, lambda e: e["classifier"], lambda e: True):
        for entry in per_output.values():
            if predicate(entry):
                return entry
    return {}


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    representative_data=None,
    validation_data=None,
    float_model: keras.Model | None = None,
    max_accuracy_drop: float = DEFAULT_THRESHOLDS["max_accuracy_drop"],
    min_agreement: float = DEFAULT_THRESHOLDS["min_agreement"],
    min_sqnr_db: float = DEFAULT_THRESHOLDS["min_sqnr_db"],
    measure_latency: bool = False,
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
      max_accuracy_drop: largest allowed float-minus-int8 accuracy (fraction).
      min_agreement: smallest allowed top-1 agreement between the int8 file
        and the Keras model it was converted from.
      min_sqnr_db: smallest allowed SQNR of any int8 output against Keras.
      measure_latency: time single-sample invokes (median, 1 thread) of the
        int8 and float32 files.
      keep_rejected: where to write the flatbuffer if validation fails.
      float_path: where to write the float32 .tflite of `float_model`, for
        comparison on device (written whether or not validation passes).
      batch_size: samples per interpreter call during validation.
      verbose: show a progress bar during validation.

    Returns:
      The `ExportReport` (also for models that pass).

    Raises:
      errors.ModelTypeError: `model` or `float_model` is not a tf_keras model.
      errors.ConfigError: a bad path or threshold.
      errors.DataError: bad representative or validation data.
      errors.ExportError: conversion failed or the result is not fully int8.
      errors.ValidationError: a tolerance was violated; `.report` has everything.
    """
    check_tf_keras_model(model)
    if float_model is not None:
        check_tf_keras_model(float_model, argument="float_model")
    path = _check_path(path, "path")
    if keep_rejected is not None:
        keep_rejected = _check_path(keep_rejected, "keep_rejected")
    if float_path is not None:
        if float_model is None:
            raise errors.ConfigError("`float_path` needs `float_model`: there is no float model to convert.")
        float_path = _check_path(float_path, "float_path")
    thresholds = {"max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement, "min_sqnr_db": min_sqnr_db}
    _check_thresholds(thresholds)
    if batch_size < 1:
        raise errors.ConfigError(f"`batch_size` must be >= 1; received {batch_size!r}.")

    notes = []
    if is_prepared(model):
        quantized_model, quantization = strip(model), "qat"
    elif _is_quantization_aware(model):
        quantized_model, quantization = model, "qat"
    else:
        if representative_data is None:
            raise errors.ModelStructureError(
                f"model '{model.name}' is neither prepared with tfjoint nor quantization-aware, so it has no trained "
                "int8 ranges. Prepare and fit it with tfjoint first, or pass `representative_data` for full-integer "
                "post-training quantization."
            )
        quantized_model, quantization = model, "post_training"
        notes.append("model was not quantization-aware: used full-integer post-training quantization with representative_data")
    representative = None
    if representative_data is not None:
        representative = collect_inputs(representative_data, quantized_model, "representative_data", _CALIBRATION_SAMPLES)
    validation = split_validation(validation_data, quantized_model) if validation_data is not None else None

    content = _convert_int8(quantized_model, representative if quantization == "post_training" else None)
    summary = read_flatbuffer(content)
    if not summary.fully_int8:
        if keep_rejected is not None:
            atomic_write_bytes(keep_rejected, content)
        raise _not_int8_error(summary, [layer.name for layer in quantized_model.layers])

    total = sum(w.size for w in summary.weights)
    report = ExportReport(
        tflite_path=None,
        quantization=quantization,
        size_bytes=len(content),
        gzip_size_bytes=measure.gzip_size(content),
        fully_int8=summary.fully_int8,
        ops=summary.op_names,
        float_ops=[{"op": op.name, "tensors": list(op.float_tensors)} for op in summary.float_ops],
        weight_sparsity=sum(w.zeros for w in summary.weights) / total if total else 0.0,
        per_layer_sparsity=_per_layer_sparsity(quantized_model, summary),
        thresholds=thresholds,
        notes=notes,
    )

    float_content = convert_float32(float_model) if float_model is not None else None
    if float_content is not None:
        report.float_size_bytes = len(float_content)
        report.float_gzip_size_bytes = measure.gzip_size(float_content)
        if float_path is not None:
            atomic_write_bytes(float_path, float_content)

    output_names = list(quantized_model.output_names)
    int8_model = TFLiteModel(content, quantized_model.input_names, output_names)
    if validation is not None:
        inputs, labels = validation
        int8_out = int8_model.predict(inputs, batch_size=batch_size, verbose=verbose)
        keras_out = _as_list(quantized_model.predict(inputs, batch_size=batch_size, verbose=0))
        float_out = _as_list(float_model.predict(inputs, batch_size=batch_size, verbose=0)) if float_model else None
        per_output = _compare_outputs(output_names, int8_out, keras_out, float_out, _labels_per_output(labels, output_names))
        primary = _primary(per_output)
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
        report.failures = _failures(per_output, thresholds)
    else:
        report.notes.append("no validation_data: the int8 file was checked for structure only")

    if measure_latency:
        report.int8_latency_ms = 1000 * TFLiteModel(content, quantized_model.input_names, output_names, num_threads=1).median_latency_s()
        if float_content is not None:
            float_runner = TFLiteModel(float_content, float_model.input_names, list(float_model.output_names), num_threads=1)
            report.float_latency_ms = 1000 * float_runner.median_latency_s()

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
