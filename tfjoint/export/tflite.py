"""`tfjoint.export_tflite`: a fully int8 flatbuffer, checked and validated where it will run, before it is written.

The stages, each a module of `tfjoint.export` whose function returns a frozen value with its own notes, in the
order data flows through them:

    arguments     every argument checked before any slow work (`ExportArguments`)
    source        strip a prepared model (or take a QAT model, or a float one for post-training quantization)
    candidates    one file per quantization (QAT, and post-training quantization of the same pruned weights),
                  each converted and read back once, and refused if not fully int8
    compression   with compression="lut": each file's weights LUT-compressed by TFLM's own tooling
    validation    each candidate in each runtime (LiteRT, its reference kernels, TFLM) against the Keras model
                  it was converted from, the pruned and the float model and the labels; budgets; the file to ship
    measurements  the shipped file: memory (the arena in TFLM), MACs, per-layer error, latency, per layer
    report        `ExportReport`, assembled once from the stage values
    write         atomically; or raise `ValidationError` and leave any existing file alone (this module)
"""

import os

from tfjoint import _progress, errors
from tfjoint._files import atomic_write_bytes
from tfjoint._keras import keras
from tfjoint.data import collect_inputs, split_validation
from tfjoint.export import validate
from tfjoint.export.arguments import check_arguments
from tfjoint.export.candidates import convert_candidates, convert_float_reference
from tfjoint.export.compression import compress_candidates
from tfjoint.export.measurements import measure_shipped
from tfjoint.export.options import QUANTIZATIONS, ExportOptions
from tfjoint.export.report import ExportReport, assemble_report
from tfjoint.export.source import quantization_source
from tfjoint.export.validate import Tolerances
from tfjoint.export.validation import validate_candidates
from tfjoint.prune.budget import Budget
from tfjoint.prune.schedule import JointSchedule

__all__ = ["export_tflite", "Tolerances", "ExportOptions", "QUANTIZATIONS"]

_CALIBRATION_SAMPLES = 500


def _options(options: ExportOptions | None, tolerances: Tolerances | None, keywords: dict,
             tolerance_keywords: dict) -> ExportOptions:
    """The one `ExportOptions`: `options` (or the defaults), with the keywords given and the tolerances merged."""
    if options is not None and not isinstance(options, ExportOptions):
        raise errors.ConfigError(f"`options` must be a tfjoint.ExportOptions; received {type(options).__name__}.")
    if tolerances is not None and not isinstance(tolerances, Tolerances):
        raise errors.ConfigError(f"`tolerances` must be a tfjoint.Tolerances; received {type(tolerances).__name__}.")
    base = options or ExportOptions()
    given = {name: value for name, value in keywords.items() if value is not None}
    merged = (tolerances or base.tolerances).replace(**tolerance_keywords)
    return base.replace(tolerances=merged, **given)


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    representative_data=None,
    validation_data=None,
    float_model: keras.Model | None = None,
    schedule: JointSchedule | None = None,
    options: ExportOptions | None = None,
    quantization: str | None = None,
    runtimes=None,
    budget: Budget | None = None,
    compression: str | None = None,
    tolerances: Tolerances | None = None,
    max_accuracy_drop: float | None = None,
    min_agreement: float | None = None,
    min_sqnr_db: float | None = None,
    max_mse_increase: float | None = None,
    max_total_drop: float | None = None,
    measure_latency: bool | None = None,
    explain_layers: bool | None = None,
    keep_rejected: str | os.PathLike | None = None,
    float_path: str | os.PathLike | None = None,
    batch_size: int | None = None,
    verbose: bool | None = None,
) -> ExportReport:
    """Converts to a fully int8 .tflite, validates it where it will run, and writes it atomically.

    Everything besides the model, the path and the data is one `ExportOptions`
    (`options=`) holding one `Tolerances`; the keywords below set single fields
    of them (a keyword left at None keeps the option's value).

    Example:
      report = tfjoint.export_tflite(tfjoint.strip(joint), "model.tflite", representative_data=x_train[:300],
                                     validation_data=(x_val, y_val), float_model=model,
                                     options=tfjoint.ExportOptions(runtimes=("litert", "tflm")))

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
      options: an `ExportOptions` with every setting below (defaults:
        `ExportOptions()`).
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
      compression: "none" (default) or "lut": TFLM's look-up-table weight
        compression (see `ExportOptions.compression`).
      tolerances: a `Tolerances` (defaults: `Tolerances()`); the five keywords
        below override single fields of it. The default gate is what
        quantization did: the int8 file against the Keras model it was
        converted from, in every runtime.
      max_accuracy_drop: largest allowed accuracy loss of the int8 file against
        the Keras model it was converted from (fraction; default 0.02).
      min_agreement: smallest allowed top-1 agreement between the int8 file
        and that Keras model (default 0.95).
      min_sqnr_db: smallest allowed SQNR of any int8 output against it (15 dB).
      max_mse_increase: largest allowed relative increase of a real-valued
        output's MSE against its labels (int8 over that Keras model; 0.5).
      max_total_drop: largest allowed accuracy loss against `float_model`
        (pruning, fine-tuning and quantization together); default None: not
        gated, reported in `accuracy_steps`.
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
    options = _options(options, tolerances, dict(
        quantization=quantization, runtimes=runtimes, budget=budget, compression=compression,
        measure_latency=measure_latency, explain_layers=explain_layers, keep_rejected=keep_rejected,
        float_path=float_path, batch_size=batch_size, verbose=verbose), dict(
        max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, min_sqnr_db=min_sqnr_db,
        max_mse_increase=max_mse_increase, max_total_drop=max_total_drop))
    arguments = check_arguments(model, path, float_model, schedule, options, representative_data is not None)
    options, phases = arguments.options, _progress.Phases("tfjoint export")

    with phases.run("preparing the source"):
        source = quantization_source(arguments.model, arguments.schedule, options.quantization,
                                     representative_data is not None)
    inputs_of = source.qat_model or source.float_model
    representative = None if representative_data is None else collect_inputs(
        representative_data, inputs_of, "representative_data", _CALIBRATION_SAMPLES)
    validation_data = None if validation_data is None else split_validation(validation_data, inputs_of)

    candidates = compress_candidates(convert_candidates(source, options.quantization, representative, phases),
                                     options.compression, phases)
    reference = convert_float_reference(arguments.float_model, phases)
    float_content = reference.content
    if options.float_path is not None and float_content is not None:
        atomic_write_bytes(options.float_path, float_content)
    validation = validate_candidates(candidates, validation_data, arguments.float_model, source.pruned_float,
                                     float_content, options, phases)
    measurements = measure_shipped(validation.shipped, source, validation_data, arguments.float_model,
                                   float_content, options, phases)
    summary = validation.shipped.candidate.summary
    checked = ((validation_data[0] if validation_data else None, "validation_data"),
               (representative, "representative_data"))
    data_notes = list(reference.notes) + [note for data, argument in checked if data is not None
                                          for note in validate.input_range_notes(data, summary.inputs, argument)]
    report = assemble_report(source, candidates, validation, measurements, options, float_content,
                             int(validation_data[0][0].shape[0]) if validation_data is not None else 0, data_notes,
                             phases.seconds)
    return _write_or_refuse(report, validation.shipped.candidate.shipped_content, arguments.path,
                            options.keep_rejected)


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
