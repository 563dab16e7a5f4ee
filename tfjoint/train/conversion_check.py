"""The conversion check: a freshly prepared model converted once, as `export_tflite` will, before any training.

The int8 file's structure does not depend on trained values, so a layer the
converter rejects, leaves in float, or computes differently from the
quantization-aware model, is refused now, naming the user's layer instead of
an MLIR location. Where the file will run on a microcontroller, it is also
allocated in TensorFlow Lite Micro: an operator TFLM has no kernel for, or a
tensor it cannot plan, is refused before the fit rather than after it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from absl import logging

from tfjoint import errors
from tfjoint.data import outputs_as_list, sample_inputs_of
from tfjoint.metrics import sqnr_db
from tfjoint.quantize.quantizers import training_phase
from tfjoint.registry import needs_calibration, offset_variables, recurrent_layers, unwrapped
from tfjoint.tflite import convert, tflm
from tfjoint.tflite.flatbuffer import float_op_problems, layer_of, missing_in_tflm, read_flatbuffer
from tfjoint.tflite.run import run_reference
from tfjoint.tflite.runtimes import runtime_model
from tfjoint.tflite.streaming import streaming_model

__all__ = ["refuse_what_export_would", "ranges_initialized", "MIN_CHECK_SQNR_DB"]

# Below this, the int8 file of a freshly prepared model computes something else than its quantization-aware model
# (TFLite's fused int8 LSTM measured 1.7 dB; files whose operators QAT simulates measure 25-45 dB).
MIN_CHECK_SQNR_DB = 10.0
# TFLM against LiteRT's reference kernels on the same file (bit-exact where their kernels agree).
MIN_RUNTIME_SQNR_DB = 30.0


@contextlib.contextmanager
def ranges_initialized(prepared, samples):
    """The prepared model after one training-mode step on `samples`, and exactly as before afterwards.

    A freshly prepared model's quantizer ranges are their initial values, and
    an untrained model's biases are exactly zero, which the converter treats
    unlike trained values (a TRANSPOSE_CONV with an all-zero bias stays float,
    and identical zero biases are stored once, so the file is smaller than the
    trained one will be); one step gives the ranges real values, and all-zero
    biases (and BatchNorm shifts, which fold into biases) small values,
    distinct per channel. The step fake-quantizes even before a late
    `quant_start_step`, so that the ranges are set there too. Every variable (ranges, biases, BatchNorm
    statistics, masks, step counters) is put back after, and a schedule the
    fit will set (no `end_step` yet) is left unset.
    """
    saved = [variable.numpy() for variable in prepared.variables]
    distinct = np.random.default_rng(0)
    try:
        with prepared.schedule_set_for(2):  # one step needs an end_step; the fit sets the real one
            for variable in (v for layer in prepared.layers for v in offset_variables(layer)):
                value = variable.numpy()
                if not np.any(value):
                    variable.assign(distinct.uniform(1e-2, 2e-2, value.shape).astype(value.dtype))
            with training_phase(quantizing=True):  # a late quant_start_step: the ranges are set all the same
                prepared(samples if len(samples) > 1 else samples[0], training=True)
        yield
    finally:
        for variable, value in zip(prepared.variables, saved):
            variable.assign(value)


def _fidelity_db(prepared, reference: list, samples) -> float:
    """The lowest SQNR, over the outputs, of the int8 file (its `reference` outputs on `samples`, from LiteRT's
    reference kernels) against the quantization-aware model."""
    expected = outputs_as_list(prepared.predict(samples if len(samples) > 1 else samples[0], verbose=0))
    return min(sqnr_db(e, a) for e, a in zip(expected, reference))


def _refuse_for_tflm(prepared, content: bytes, summary, samples=None, reference=None) -> None:
    """Allocates the file in TFLM (as the export will measure it) and runs it on `samples`; an operator or tensor
    it cannot take, or a kernel that computes otherwise than LiteRT's (its `reference` outputs on `samples`), is
    refused now."""
    layer_names = [layer.name for layer in prepared.layers]
    missing = missing_in_tflm(summary, layer_names)
    if missing:
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not run in TensorFlow Lite Micro: its int8 file needs "
            f"{'; '.join(missing)}, which TFLM has no kernel for (found before training, by converting the prepared "
            "model once). Use an activation TFLM runs (relu, or GELU as prepared for a microcontroller), or deploy "
            "on LiteRT (a phone).")
    try:
        arena = tflm.measure_arena(content)
    except errors.DeviceError as error:
        layer = layer_of(error.tensor or "", layer_names) if error.tensor else None
        where = f" (layer '{layer}')" if layer else ""
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not run in TensorFlow Lite Micro: converted once before training, its "
            f"int8 file fails there at operator {error.operator or '?'}{where}: {error}") from error
    if samples is None or reference is None:
        return
    # The same file in TFLM and in LiteRT's reference kernels: they compute the same (TFLM's kernels are those
    # references), unless a TFLM kernel takes the file differently, which only its outputs show.
    input_names, output_names = convert.keras_names(prepared)
    device = runtime_model("tflm", content, summary, input_names, output_names, arena.total_bytes).predict(samples)
    agreement = min(sqnr_db(r, d) for r, d in zip(reference, device))
    if agreement < MIN_RUNTIME_SQNR_DB:
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not compute in TensorFlow Lite Micro what it computes in LiteRT: "
            f"converted once before training, its int8 file's outputs in TFLM are {agreement:.1f} dB (SQNR) from "
            f"LiteRT's reference kernels on sample inputs (below {MIN_RUNTIME_SQNR_DB:g} dB), so a TFLM kernel runs "
            f"one of its operators differently ({', '.join(sorted(set(summary.op_names)))}). Replace the layer that "
            "becomes that operator, or deploy on LiteRT (a phone).")


# A recurrent model is checked on sequences this long: its cell converts the same at every step, and the whole-
# sequence file unrolls the steps, so converting every one of them would only make the check grow with them.
CHECKED_STEPS = 4


def _shortened(prepared):
    """`prepared` on sequences of `CHECKED_STEPS` steps, its layers shared (it converts what the full model does, in
    less time), or `prepared` itself: no recurrent layer, short sequences already, or layers whose shapes follow
    the sequence's length (a Flatten before a Dense)."""
    recurrent = [layer for layer in prepared.layers if isinstance(unwrapped(layer), recurrent_layers())]
    steps = [t.shape[1] for t in prepared.inputs if t.shape.rank == 3 and t.shape[1] is not None]
    if not recurrent or not steps or min(steps) <= 2 * CHECKED_STEPS:
        return prepared
    from tfjoint._keras import keras

    for length in (CHECKED_STEPS, 2 * CHECKED_STEPS, 4 * CHECKED_STEPS):
        try:
            inputs = [keras.Input((length,) + tuple(t.shape[2:]) if t.shape.rank == 3 else tuple(t.shape[1:]),
                                  batch_size=t.shape[0], dtype=t.dtype, name=t.name.split(":")[0]) for t in
                      prepared.inputs]
            shortened = keras.models.clone_model(prepared, input_tensors=inputs, clone_function=lambda layer: layer)
            return keras.Model(shortened.inputs, shortened.outputs, name=prepared.name)
        except Exception:  # noqa: BLE001  (a layer whose shape needs the full length: check the full model)
            continue
    return prepared


def _streaming_file(prepared) -> tuple[bytes, Any]:
    """The streaming file of `prepared` (a layer that cannot stream is refused, named) and its step model."""
    stream = streaming_model(prepared)
    return convert.to_int8(stream.keras_model, None), stream.keras_model


def refuse_what_export_would(prepared, runtimes=(), streaming: bool = False) -> None:
    """Converts the prepared model once, as `export_tflite` will, and refuses now what it would refuse after training.

    With "tflm" among `runtimes`, the file is also allocated in TensorFlow
    Lite Micro (an operator it has no kernel for, a tensor it cannot plan).
    With `streaming`, the file checked is the streaming one
    (`tfjoint.tflite.streaming`): one call's frames, the states as int8 I/O.

    Raises:
      errors.UnsupportedLayerError: the converter fails, the file would not
        be fully int8, would compute something else than the model, or would
        not run where asked; the message names the layers.
    """
    samples = sample_inputs_of(prepared)
    representative = samples if needs_calibration(prepared) else None  # the export calibrates those layers
    try:
        with ranges_initialized(prepared, samples):
            if streaming:
                content, checked = _streaming_file(prepared)
            else:
                checked = _shortened(prepared)
                checked_samples = sample_inputs_of(checked) if checked is not prepared else samples
                content = convert.to_int8(checked, checked_samples if representative is not None else None)
            summary = read_flatbuffer(content)
            reference = (run_reference(content, *convert.keras_names(checked), checked_samples)
                         if summary.fully_int8 and not streaming else None)
            fidelity = _fidelity_db(checked, reference, checked_samples) if reference is not None else None
    except errors.ExportError as error:
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not export to int8 (found before training, by converting the prepared "
            f"model once): {error}") from error
    if not summary.fully_int8:
        problems = "; ".join(float_op_problems(summary, [layer.name for layer in checked.layers]))
        if streaming:
            raise errors.UnsupportedLayerError(
                f"model '{prepared.name}' would not stream fully int8 (found before training, by converting its "
                f"streaming file once): {problems}.")
        raise errors.UnsupportedLayerError(
            f"model '{prepared.name}' would not export fully int8 (found before training, by converting the prepared "
            f"model once): {problems}. Replace or exclude those layers with ones TFLite runs in int8.")
    if "tflm" in runtimes:
        _refuse_for_tflm(checked, content, summary, None if streaming else checked_samples, reference)
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
