"""`tfjoint.export_tflite`: a fully int8 flatbuffer, checked and validated where it will run, before it is written.

The stages, each a module of `tfjoint.export` whose function returns a frozen value with its own notes, in the
order data flows through them:

    arguments     every argument checked before any slow work (`ExportArguments`)
    source        strip a prepared model (or take a QAT model, or a float one for post-training quantization)
    streaming     with streaming=True: the model one call computes (a hop of frames, the states as int8 I/O)
    candidates    one file per quantization (QAT, and post-training quantization of the same pruned weights),
                  each converted and read back once, and refused if not fully int8
    compression   with compression="lut": each file's weights LUT-compressed by TFLM's own tooling
    validation    each candidate in each runtime (LiteRT, its reference kernels, TFLM) against the Keras model
                  it was converted from, the pruned and the float model and the labels; budgets; the file to ship
    measurements  the shipped file: memory (the arena in TFLM), MACs, per-layer error, latency, per layer
    report        `ExportReport`, assembled once from the stage values
    write         atomically; or raise `ValidationError` and leave any existing file alone (this module)
"""

import dataclasses
import os
import warnings

from tfjoint import _progress, errors
from tfjoint._files import atomic_write_bytes
from tfjoint._keras import keras
from tfjoint.data import collect_inputs, split_validation
from tfjoint.export import compare
from tfjoint.export.arguments import check_arguments
from tfjoint.export.candidates import convert_candidates, convert_float_reference
from tfjoint.export.compression import compress_candidates
from tfjoint.export.measurements import measure_shipped
from tfjoint.export.options import QUANTIZATIONS, ExportOptions, Tolerances
from tfjoint.export.report import ExportReport, assemble_report
from tfjoint.export.source import quantization_source
from tfjoint.export.validation import validate_candidates
from tfjoint.findings import Kind, note
from tfjoint.prune.schedule import JointSchedule

__all__ = ["export_tflite", "Tolerances", "ExportOptions", "QUANTIZATIONS", "DEPRECATED_KEYWORDS"]

_CALIBRATION_SAMPLES = 500
_TOLERANCE_FIELDS = tuple(field.name for field in dataclasses.fields(Tolerances))
_OPTION_FIELDS = tuple(field.name for field in dataclasses.fields(ExportOptions) if field.name != "tolerances")
# The keywords export_tflite took before 0.4, each now a field of ExportOptions (or of its Tolerances).
DEPRECATED_KEYWORDS = ("schedule", "tolerances") + _OPTION_FIELDS + _TOLERANCE_FIELDS


def _options(options: ExportOptions | None, deprecated: dict) -> tuple[ExportOptions, JointSchedule | None]:
    """The one `ExportOptions`: `options` (or the defaults), with any deprecated keyword merged in (warned)."""
    if options is not None and not isinstance(options, ExportOptions):
        raise errors.ConfigError(f"`options` must be a tfjoint.ExportOptions; received {type(options).__name__}.")
    unknown = sorted(set(deprecated) - set(DEPRECATED_KEYWORDS))
    if unknown:
        raise TypeError(f"export_tflite() got unexpected keyword argument(s) {unknown}: everything besides the "
                        f"model, the path and the data is a field of options=tfjoint.ExportOptions(...) "
                        f"({', '.join(_OPTION_FIELDS)}, tolerances=tfjoint.Tolerances(...)).")
    base = options or ExportOptions()
    given = {name: value for name, value in deprecated.items() if value is not None}
    for name in given:
        where = (f"options=tfjoint.ExportOptions(tolerances=tfjoint.Tolerances({name}=...))"
                 if name in _TOLERANCE_FIELDS else "nothing: the model carries its schedule (tfjoint.strip records it)"
                 if name == "schedule" else f"options=tfjoint.ExportOptions({name}=...)")
        warnings.warn(f"export_tflite({name}=...) is deprecated and will be removed in tfjoint 0.5: pass {where}.",
                      DeprecationWarning, stacklevel=3)
    schedule = given.pop("schedule", None)
    if schedule is not None and not isinstance(schedule, JointSchedule):
        raise errors.ConfigError(f"`schedule` must be a tfjoint.JointSchedule; received {type(schedule).__name__}.")
    tolerances = given.pop("tolerances", None)
    if tolerances is not None and not isinstance(tolerances, Tolerances):
        raise errors.ConfigError(f"`tolerances` must be a tfjoint.Tolerances; received {type(tolerances).__name__}.")
    merged = (tolerances or base.tolerances).replace(**{n: given.pop(n) for n in _TOLERANCE_FIELDS if n in given})
    return base.replace(tolerances=merged, **given), schedule


def export_tflite(model: keras.Model, path: str | os.PathLike, *, representative_data=None, validation_data=None,
                  float_model: keras.Model | None = None, options: ExportOptions | None = None,
                  **deprecated) -> ExportReport:
    """Converts to a fully int8 .tflite, validates it where it will run, and writes it atomically.

    Everything besides the model, the path and the data is one
    `ExportOptions` holding one `Tolerances`.

    Example:
      report = tfjoint.export_tflite(tfjoint.strip(joint), "model.tflite", representative_data=x_train[:300],
                                     validation_data=(x_val, y_val), float_model=model,
                                     options=tfjoint.ExportOptions(runtimes=("tflm",)))

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
        Without it the file is checked for structure only, and the report
        says so (`passed` is None, "NOT VALIDATED").
      float_model: the original float model, to measure what compression cost
        (accuracy, agreement, SQNR, float32 TFLite size and latency).
      options: an `ExportOptions` (defaults: `ExportOptions()`): where to
        validate (`runtimes`), the `tolerances`, a `budget`, `quantization`,
        `compression`, what to measure, where rejected files go.
      **deprecated: the keywords of tfjoint 0.3 (`runtimes=`,
        `max_accuracy_drop=`, ...), each a field of `ExportOptions` now; they
        still work, with a DeprecationWarning.

    Returns:
      The `ExportReport` (also for models that pass).

    Raises:
      errors.ModelTypeError: `model` or `float_model` is not a tf_keras model.
      errors.ConfigError: a bad path, tolerance, runtime or quantization; TFLM
        asked for but not installed.
      errors.DataError: bad representative or validation data.
      errors.ExportError: conversion failed or the result is not fully int8.
      errors.ValidationError: a tolerance or budget was violated; `.report` has
        everything, and nothing was written at `path`.
    """
    options, schedule = _options(options, deprecated)
    arguments = check_arguments(model, path, float_model, options, representative_data is not None)
    options, phases = arguments.options, _progress.Phases("tfjoint export")

    with phases.run("preparing the source"):
        source = quantization_source(arguments.model, arguments.kind, options.quantization,
                                     representative_data is not None)
    if schedule is not None and source.schedule is None:
        source = dataclasses.replace(source, schedule=schedule)
    inputs_of = source.qat_model or source.float_model
    representative = None if representative_data is None else collect_inputs(
        representative_data, inputs_of, "representative_data", _CALIBRATION_SAMPLES)
    validation_data = None if validation_data is None else split_validation(validation_data, inputs_of)

    ram_limit = options.budget.ram_bytes if options.budget is not None else None
    candidates = compress_candidates(convert_candidates(source, options.quantization, representative, phases,
                                                        options.streaming), options.compression, phases, ram_limit)
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
                                          for note in compare.input_range_notes(data, summary.inputs, argument)]
    content = validation.shipped.candidate.shipped_content
    failed = bool(validation.shipped.failures)
    written = options.keep_rejected if failed else arguments.path
    extra = (note(Kind.REJECTED_FILE, f"rejected flatbuffer kept at {written}"),) if failed and written else ()
    if written is not None:
        atomic_write_bytes(written, content)  # the path only when it passed; a good file is never clobbered
    report = assemble_report(source, candidates, validation, measurements, options, float_content,
                             int(validation_data[0][0].shape[0]) if validation_data is not None else 0, data_notes,
                             phases.seconds, written, extra)
    if failed:
        hints = [n for n in report.notes if n.kind is Kind.DATA_RANGE]
        raise errors.ValidationError(
            f"export to '{arguments.path}' failed validation ({len(report.failures)} problem(s)); nothing was written "
            "there: " + "; ".join(str(f) for f in report.failures) + (f". Note: {hints[0]}" if hints else ""), report)
    return report
