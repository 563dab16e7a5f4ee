"""Stage 0 of `export_tflite`: every argument checked, before any slow work, into one `ExportArguments` value.

A bad path, runtime, tolerance, model or calibration need is refused here,
naming the argument and what to do, so nothing is converted or trained in
vain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfjoint import errors
from tfjoint._files import checked_output_path
from tfjoint._keras import check_tf_keras_model, flattened, is_keras3_model
from tfjoint._names import float_layer_name
from tfjoint.bridge.keras3 import from_keras3
from tfjoint.data import sample_inputs_of
from tfjoint.export.options import ExportOptions
from tfjoint.registry import needs_calibration, unwrapped
from tfjoint.tflite import tflm
from tfjoint.tflite.runtimes import check_runtimes
from tfjoint.train.model_kind import ModelKind, model_kind
from tfjoint.train.readback import prepared_model

__all__ = ["ExportArguments", "check_arguments"]


@dataclasses.dataclass(frozen=True)
class ExportArguments:
    """What `export_tflite` was asked to do, checked.

    Attributes:
      model: the tf_keras model to export (a Distiller's student taken out).
      kind: what kind of model it is (found once, here).
      float_model: the float model to compare with (a Keras 3 one rebuilt in
        tf_keras), or None.
      path: where the .tflite goes.
      options: the `ExportOptions`, runtimes normalised.
    """

    model: Any
    kind: ModelKind
    float_model: Any | None
    path: str
    options: ExportOptions


def _float_model(float_model, model):
    """The comparison model as tf_keras: a Keras 3 model (what `prepare` took) is rebuilt and checked, on inputs
    of `model`'s shapes (which fix a sequence length the Keras 3 model leaves open)."""
    if float_model is None:
        return None
    if is_keras3_model(float_model):
        names = [tensor.name.split(":")[0] for tensor in model.inputs]
        return from_keras3(float_model, dict(zip(names, sample_inputs_of(model))))
    check_tf_keras_model(float_model, argument="float_model")
    return flattened(float_model)  # as `prepare` took it: a nested base model's layers by their own names


def _check_calibration(model, representative_given: bool) -> None:
    """A model with layers whose int8 ranges come from calibration (an LSTM) needs representative data."""
    calibrated = needs_calibration(model)
    if calibrated and not representative_given:
        names = ", ".join(f"'{float_layer_name(layer.name)}' ({type(unwrapped(layer)).__name__})"
                          for layer in calibrated)
        raise errors.ConfigError(f"model '{model.name}' has layers whose int8 ranges the converter calibrates "
                                 f"({names}): pass `representative_data` (a few hundred typical inputs).")


def check_arguments(model, path, float_model, options: ExportOptions, representative_given: bool) -> ExportArguments:
    """Checks what `export_tflite` was given; returns it normalised.

    Raises:
      errors.ModelTypeError: `model` or `float_model` is not a Keras model.
      errors.ConfigError: a bad path, runtime or option; TFLM asked
        for but not installed; a layer that needs representative data without
        it; a file for TFLM only (compression) validated elsewhere.
    """
    check_tf_keras_model(model, argument="model")
    model = prepared_model(model)  # a Distiller exports its student
    float_model = _float_model(float_model, model)
    path = checked_output_path(path, "path")
    if options.keep_rejected is not None:
        checked_output_path(options.keep_rejected, "keep_rejected")
    if options.float_path is not None:
        if float_model is None:
            raise errors.ConfigError("`float_path` needs `float_model`: there is no float model to convert.")
        checked_output_path(options.float_path, "float_path")
    runtimes = check_runtimes(options.runtimes)
    if options.compression == "lut" and runtimes != ("tflm",):
        raise errors.ConfigError(
            f"`compression`='lut' writes TFLM_DECODE operators that only TensorFlow Lite Micro runs (LiteRT has no "
            f"DECODE kernel), but `runtimes`={list(runtimes)}: validate in TFLM alone with runtimes=('tflm',), or "
            "use compression='none' for a file LiteRT runs (shared weights then shrink only the gzip download).")
    if options.compression == "tflm" and runtimes != ("tflm",):
        raise errors.ConfigError(
            f"`compression`='tflm' writes one zero point for the many scales of a weight tensor, which only "
            f"TensorFlow Lite Micro reads (LiteRT refuses the file), but `runtimes`={list(runtimes)}: validate in "
            "TFLM alone with runtimes=('tflm',), or use compression='none' for a file LiteRT runs.")
    if options.budget is not None and options.budget.ram_bytes is not None:
        tflm.require_tflm("budget.ram_bytes (the RAM is measured in TensorFlow Lite Micro)")
    kind = model_kind(model)
    if options.streaming and (kind is ModelKind.FLOAT or options.quantization == "ptq"):
        raise errors.ConfigError(
            f"`streaming`=True needs the quantization-aware file of a model trained with tfjoint (its states keep "
            f"the int8 ranges QAT trained for them); received a {kind.value} model with `quantization`="
            f"{options.quantization!r}. Prepare and fit the model with tfjoint, and export with quantization='auto' "
            "or 'qat'.")
    _check_calibration(model, representative_given)
    return ExportArguments(model, kind, float_model, path, options.replace(runtimes=runtimes))
