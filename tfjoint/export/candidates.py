"""Stage 2 of `export_tflite`: the candidate files, each converted once and read back once.

One candidate per quantization the options allow: the quantization-aware
file (its trained ranges; layers whose ranges the converter calibrates, an
LSTM, calibrated in the same conversion), and post-training quantization of
the same pruned float weights when representative data is given. Each is
read back (operators, dtypes, int8 weights) and must be fully int8. The
float32 reference file of `float_model` is converted here too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfjoint import errors
from tfjoint._names import float_layer_name
from tfjoint.data import outputs_as_list
from tfjoint.export.options import POST_TRAINING, QAT
from tfjoint.export.source import Source
from tfjoint.findings import Finding, Kind, note
from tfjoint.registry import needs_calibration
from tfjoint.tflite import convert
from tfjoint.tflite.flatbuffer import FlatbufferSummary, float_op_problems, read_flatbuffer
from tfjoint.tflite.runtimes import runtime_model
from tfjoint.tflite.streaming import StreamingModel, StreamRunner, keras_stream, streaming_model

__all__ = ["Candidate", "Candidates", "FloatReference", "convert_candidates", "convert_float_reference"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One converted file: its quantization, the Keras model it came from, its bytes read back.

    `compressed` is its file for TFLM only (`export.compression`: reduced,
    or LUT-compressed and reduced), which is what ships when present;
    `content` and `summary` stay the int8 file it was made from (what
    LiteRT reads, and the weights it decodes to).
    """

    quantization: str
    keras_model: Any
    content: bytes
    summary: FlatbufferSummary
    compressed: Any = None
    stream: StreamingModel | None = None

    @property
    def file_names(self) -> tuple[list[str], list[str]]:
        """The file's input and output names, in Keras order (a streaming file's states after the frames and
        the outputs)."""
        if self.stream is None:
            return convert.keras_names(self.keras_model)
        states = self.stream.states
        return ([self.stream.input_name] + [state.name for state in states],
                list(self.stream.output_names) + [state.output_name for state in states])

    def runtime_model(self, runtime: str, compressed: bool = False):
        """The file in `runtime` (the LUT-compressed one with `compressed`), called like the Keras model: a
        streaming file runs over each whole sequence, frame by frame."""
        content = self.shipped_content if compressed else self.content
        model = runtime_model(runtime, content, self.summary, *self.file_names,
                              alt_decompression_bytes=self.alt_decompression_bytes if compressed else 0)
        if self.stream is None:
            return model
        return StreamRunner(self.stream, lambda inputs: model.predict(inputs, batch_size=1, verbose=False))

    def reference_outputs(self, inputs: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
        """What the Keras model the file was converted from computes on `inputs` (a streaming file's: the Keras
        step model, run call by call over each sequence)."""
        if self.stream is not None:
            return keras_stream(self.stream).predict(inputs)
        return outputs_as_list(self.keras_model.predict(inputs if len(inputs) > 1 else inputs[0],
                                                        batch_size=batch_size, verbose=0))

    @property
    def shipped_content(self) -> bytes:
        """The bytes written to the path: the compressed file if there is one."""
        return self.compressed.content if self.compressed is not None else self.content

    @property
    def alt_decompression_bytes(self) -> int:
        return self.compressed.alt_decompression_bytes if self.compressed is not None else 0


@dataclasses.dataclass(frozen=True)
class Candidates:
    """The candidate files, in preference order (quantization-aware first), and this stage's notes."""

    files: tuple[Candidate, ...]
    notes: tuple[Finding, ...] = ()


def _not_int8_error(summary: FlatbufferSummary, layer_names, quantization: str) -> errors.ExportError:
    problems = float_op_problems(summary, layer_names)
    how = "quantization-aware" if quantization == QAT else "post-training quantized"
    return errors.ExportError(
        f"the converted ({how}) model is not fully int8: " + "; ".join(problems) + ". Exclude or replace those "
        "layers (e.g. use an activation/op TFLite supports in int8), or make them quantization-aware."
    )


def _stream_samples(stream: StreamingModel, representative: list[np.ndarray]) -> list[np.ndarray]:
    """Calibration samples for a streaming file: its inputs (frames and states) as the Keras step model meets them
    running over the representative sequences."""
    seen: list[list[np.ndarray]] = []
    reference = keras_stream(stream)

    def record(inputs):
        seen.append([np.asarray(array) for array in inputs])
        return reference.call_model(inputs)

    StreamRunner(stream, record, batched=True).predict(representative[0][:64])
    return [np.concatenate([sample[index] for sample in seen]) for index in range(len(seen[0]))]


def _quantization_aware(source: Source, representative, streaming: bool, phases) -> Candidate:
    assert source.qat_model is not None
    stream = None
    if streaming:
        with phases.run("streaming", "the model one call computes, and its states"):
            stream = streaming_model(source.qat_model)
    converted = stream.keras_model if stream is not None else source.qat_model
    calibrated = needs_calibration(converted)  # an LSTM: its ranges are calibrated in the conversion
    detail = ("quantization-aware" + (", streaming" if stream is not None else "")
              + (", calibrating " + ", ".join(f"'{float_layer_name(layer.name)}'" for layer in calibrated)
                 if calibrated else ""))
    samples = None
    if calibrated and representative is not None:
        samples = _stream_samples(stream, representative) if stream is not None else representative
    with phases.run("conversion", detail):
        content = convert.to_int8(converted, samples)
    summary = read_flatbuffer(content)
    if not summary.fully_int8:
        raise _not_int8_error(summary, [layer.name for layer in converted.layers], QAT)
    return Candidate(QAT, source.qat_model, content, summary, stream=stream)


def convert_candidates(source: Source, quantization: str, representative: list[np.ndarray] | None,
                       phases, streaming: bool = False) -> Candidates:
    """The candidate files `quantization` ("auto", "qat" or "ptq") asks for, each checked fully int8.

    Raises:
      errors.ExportError: the converter fails, or the only candidate is not
        fully int8 (naming the layers left in float).
      errors.ConfigError: nothing to convert ("ptq" without representative
        data, a float model without it).
    """
    files: list[Candidate] = []
    notes: list[Finding] = []
    if source.qat_model is not None and quantization in ("auto", QAT):
        files.append(_quantization_aware(source, representative, streaming, phases))
    if streaming and files and source.float_model is not None and representative is not None:
        notes.append(note(Kind.CANDIDATE_SKIPPED, "post-training quantization was not compared: a streaming file's "
                                                  "states keep the int8 ranges QAT trained for them"))
    elif source.float_model is not None and representative is not None and quantization in ("auto", "ptq"):
        with phases.run("conversion", "post-training quantization"):
            try:
                content = convert.to_int8(source.float_model, representative)
            except errors.ExportError as error:
                if not files:
                    raise
                content, notes = b"", [note(Kind.CANDIDATE_SKIPPED,
                                            f"post-training quantization was not compared: {error}")]
        if content:
            summary = read_flatbuffer(content)
            if summary.fully_int8:
                files.append(Candidate(POST_TRAINING, source.float_model, content, summary))
            elif not files:
                raise _not_int8_error(summary, [layer.name for layer in source.float_model.layers], POST_TRAINING)
            else:
                notes.append(note(Kind.CANDIDATE_SKIPPED,
                                  "post-training quantization was not compared: its file is not fully int8"))
    if not files:
        raise errors.ConfigError(
            "`quantization`='ptq' needs `representative_data` (samples to calibrate the int8 ranges on)."
            if quantization == "ptq" else
            "a float model needs `representative_data` for full-integer post-training quantization: prepare and fit "
            "it with tfjoint first, or pass representative_data=x_calib.")
    return Candidates(tuple(files), tuple(notes))


@dataclasses.dataclass(frozen=True)
class FloatReference:
    """The float32 file of `float_model` (None without one, or if it does not convert), and what happened."""

    content: bytes | None
    notes: tuple[Finding, ...] = ()


def convert_float_reference(float_model, phases) -> FloatReference:
    """The float32 file of `float_model`, for sizes, latency and comparisons; a conversion failure is a note."""
    if float_model is None:
        return FloatReference(None)
    with phases.run("conversion", "float32 reference"):
        try:
            return FloatReference(convert.to_float32(float_model))
        except errors.ExportError as error:
            return FloatReference(None, (note(Kind.FLOAT_REFERENCE, f"the float32 reference file of `float_model` was "
                                                                    f"not written (its float sizes and latency are "
                                                                    f"missing): {error}"),))
