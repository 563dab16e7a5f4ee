"""Streaming: a file that takes one frame (or one hop of frames) per call, its state kept between calls.

Audio and IMU frames arrive one at a time, and a microcontroller runs the model
once per frame. `streaming_model` builds, from the quantization-aware model,
the model one call computes: the same layers (weights and trained ranges) on
`frames_per_call` frames, with a state that carries what the next call needs:

* a Conv1D (or a (k, 1) Conv2D, or a pooling layer) keeps the last frames of
  its input it will see again (a ring buffer of `(k - 1) * dilation` frames);
* an LSTM or GRU keeps its hidden (and cell) state.

Each state is an input and an output of the file, int8, on exactly the range
QAT trained for the tensor it holds (the ring buffer: its layer's input; the
LSTM: its `hidden` and `cell` points): the application copies each output
state to the matching input after every call, and sets every input state to
its zero point to start a new sequence. A causal Conv1D streams exactly (its
whole-sequence form pads the same zeros); a `valid` one streams its steady
state, seeing `k - 1` frames more at a sequence's start. A layer whose frame
needs later frames (`padding="same"`, a Bidirectional, a backwards LSTM) or
the whole sequence (a global pooling, a Flatten over time) is refused, named.

`StreamRunner` runs such a file over whole sequences, frame by frame, in
LiteRT or TFLM, so validation compares it with the whole-sequence model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from tfjoint import _tfmot, errors
from tfjoint._keras import keras, replay, tf, without_causal_padding
from tfjoint._names import float_layer_name, output_name
from tfjoint.findings import Finding, Kind, Severity
from tfjoint.registry import recurrent_layers, unwrapped
from tfjoint.registry.own_layers import CausalPadding, FixedRange, TimeConcat, TimeSlice
from tfjoint.registry.rewrites import user_class_name
from tfjoint.registry.streaming import (
    BACKWARDS_REASON,
    BIDIRECTIONAL_REASON,
    SAME_PADDING_REASON,
    STREAMING_ADVICE,
    WHOLE_SEQUENCE_REASON,
    TimeWindow,
    is_bidirectional,
    time_window,
)

__all__ = ["StreamState", "StreamingModel", "streaming_model", "StreamRunner", "keras_stream", "unrolled_finding",
           "TYPICAL_MCU_FLASH_BYTES", "TYPICAL_MCU_RAM_BYTES"]


@dataclasses.dataclass(frozen=True)
class StreamState:
    """One state tensor a streaming file carries from call to call.

    Attributes:
      name: the file's input name (the output is `<name>_next`).
      layer: the user's layer that keeps it.
      shape: its shape, batch included (1, ...).
      what: what it holds, in words.
    """

    name: str
    layer: str
    shape: tuple[int, ...]
    what: str

    @property
    def output_name(self) -> str:
        return f"{self.name}_next"

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), output_name=self.output_name)


@dataclasses.dataclass(frozen=True)
class StreamingModel:
    """The model one streaming call computes, and how the calls follow each other.

    Attributes:
      keras_model: inputs `[frames, *states]` (frames: (1, frames_per_call,
        features...)), outputs `[*model outputs, *next states]`.
      frames_per_call: frames one call consumes (the product of the time
        strides along the model; 1 without pooling).
      states: the state tensors, in input (and output) order.
      sequence_outputs: per model output, whether it has a time axis (then
        each call gives `frames_per_call / stride` of its frames).
      input_name: the whole-sequence model's input name (the frames' name).
      output_names: the model's output names.
    """

    keras_model: Any
    frames_per_call: int
    states: tuple[StreamState, ...]
    sequence_outputs: tuple[bool, ...]
    input_name: str
    output_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The report's `streaming` section."""
        return {"frames_per_call": self.frames_per_call, "input": self.input_name,
                "outputs": list(self.output_names), "states": [state.to_dict() for state in self.states],
                "reset": "set every state input to its zero point to start a sequence; after each call, read the "
                         "outputs and copy every `<state>_next` output aside, then each to its input (TFLM may place "
                         "an input where an output lives)"}


class _NeedsFrames(Exception):
    """A layer downsamples time: every call must bring `factor` times as many frames."""

    def __init__(self, factor: int):
        self.factor = factor


def _refuse(layer, model, why: str) -> errors.UnsupportedLayerError:
    return errors.UnsupportedLayerError(
        f"layer '{float_layer_name(layer.name)}' ({user_class_name(layer, model)}) cannot stream one frame at a "
        f"time: {why}. {STREAMING_ADVICE}.")


def _variables_range(variables) -> tuple[float, float] | None:
    if variables and "min_var" in variables and "max_var" in variables:
        return float(np.asarray(variables["min_var"])), float(np.asarray(variables["max_var"]))
    return None


def _output_range(layer) -> tuple[float, float] | None:
    """The range QAT fake-quantizes `layer`'s output with, or None where it passes its input's values through."""
    if _tfmot.is_quantize_layer(layer):
        return _variables_range(getattr(layer, "quantizer_vars", None))
    if not _tfmot.is_quantize_wrapper(layer):
        return None
    found = _variables_range(_tfmot.output_quantizer_vars(layer))
    if found is None:
        activations = _tfmot.activation_quantizer_vars(layer)
        found = _variables_range(activations[-1]) if activations else None
    inner = unwrapped(layer)
    if found is None and getattr(inner, "POINTS", None):
        variables = inner.point_range(inner.POINTS[-1][0])
        found = (float(variables[0].numpy()), float(variables[1].numpy())) if variables else None
    return found


def _fake_quantized(tensor, value_range, name: str):
    """`tensor` on the int8 grid of `value_range` (the identity without one, or for a range never trained)."""
    low, high = value_range if value_range and value_range[1] > value_range[0] else (None, None)
    return FixedRange(low, high, name=name)(tensor)


class _Builder:
    """Replays the quantization-aware model on one call's frames, collecting the states it needs."""

    def __init__(self, model, frames: int):
        self.model = model
        self.frames = frames
        self.time: dict[int, int | None] = {}  # id(tensor) -> frames along axis 1 in this call (None: no time axis)
        self.ranges: dict[int, tuple[float, float] | None] = {}
        self.state_inputs: list = []
        self.state_outputs: list = []
        self.states: list[StreamState] = []

    def _state(self, layer, kind: str, shape: tuple[int, ...], value_range, what: str):
        name = f"{float_layer_name(layer.name)}_{kind}"
        state = keras.Input(shape[1:], name=name)  # any batch: Keras runs many sequences at once, a file one
        self.state_inputs.append(state)
        self.states.append(StreamState(name, float_layer_name(layer.name), tuple(int(d) for d in shape), what))
        return _fake_quantized(state, value_range, f"{name}_range") if value_range else state

    def _output_state(self, tensor, value_range, name: str) -> None:
        self.state_outputs.append(_fake_quantized(tensor, value_range, f"{name}_next"))

    def _recurrent(self, layer, inputs, kwargs):
        inner = unwrapped(layer)
        if is_bidirectional(layer):
            raise _refuse(layer, self.model, BIDIRECTIONAL_REASON)
        if inner.go_backwards:
            raise _refuse(layer, self.model, BACKWARDS_REASON)
        states = []
        for kind in inner.STATE:
            variables = inner.point_range(kind)
            value_range = (float(variables[0].numpy()), float(variables[1].numpy())) if variables else None
            states.append((kind, value_range, self._state(layer, kind, (1, inner.units), value_range,
                                                          f"its {kind} state ({inner.units} values)")))
        outputs = layer(inputs, initial_state=[state for _, _, state in states], **kwargs)
        for (kind, value_range, _), new in zip(states, outputs[1:]):
            self._output_state(new, value_range, f"{float_layer_name(layer.name)}_{kind}")
        self.time[id(outputs[0])] = self.time.get(id(inputs)) if inner.return_sequences else None
        self.ranges[id(outputs[0])] = _output_range(layer)
        return outputs[0]

    def _windowed(self, layer, inputs, kwargs, window: TimeWindow):
        frames = self.time.get(id(inputs))
        if frames is None:
            raise _refuse(layer, self.model, WHOLE_SEQUENCE_REASON)
        if window.padding == "same":
            raise _refuse(layer, self.model, SAME_PADDING_REASON)
        if frames % window.stride:
            raise _NeedsFrames(window.stride // math.gcd(frames, window.stride))
        history = window.history
        value_range = self.ranges.get(id(inputs))
        window_input = inputs
        if history > 0:
            shape = (1, history) + tuple(int(d) for d in inputs.shape[2:])
            buffer = self._state(layer, "buffer", shape, value_range,
                                 f"the last {history} frames of its input")
            window_input = TimeConcat(name=f"{float_layer_name(layer.name)}_window")([buffer, inputs])
            if value_range:  # the joined frames stay on the input's int8 grid (no DEQUANTIZE around the concat)
                window_input = _fake_quantized(window_input, value_range, f"{float_layer_name(layer.name)}_joined")
            self._output_state(TimeSlice(-history, name=f"{float_layer_name(layer.name)}_keep")(window_input),
                               value_range, f"{float_layer_name(layer.name)}_buffer")
        if window.padding == "causal":
            # The buffer holds the frames the causal padding stands for: the copy's layer pads no more.
            without_causal_padding(unwrapped(layer))
        output = layer(window_input, **kwargs)
        self.time[id(output)] = frames // window.stride
        self.ranges[id(output)] = _output_range(layer) or value_range
        return output

    def call(self, layer, args, kwargs):
        inputs = args[0] if args else None
        original_in, original_out = layer.get_input_shape_at(0), layer.get_output_shape_at(0)
        original_in = original_in[0] if isinstance(original_in, list) else original_in
        original_out = original_out[0] if isinstance(original_out, list) else original_out
        if isinstance(unwrapped(layer), recurrent_layers()):
            return self._recurrent(layer, inputs, kwargs)
        if isinstance(unwrapped(layer), CausalPadding):  # the next (valid) window's ring buffer holds these frames
            return inputs
        window = time_window(layer) if len(original_in or ()) >= 3 else None
        if window is not None:
            return self._windowed(layer, inputs, kwargs, window)
        had_time = len(original_in or ()) >= 3
        keeps_time = had_time and len(original_out or ()) >= 3 and original_out[1] == original_in[1]
        if had_time and not keeps_time:
            raise _refuse(layer, self.model, WHOLE_SEQUENCE_REASON)
        output = layer(*args, **kwargs)
        flat_inputs = [t for t in tf.nest.flatten(args) if hasattr(t, "shape")]
        source = flat_inputs[0] if flat_inputs else None
        self.time[id(output)] = self.time.get(id(source)) if keeps_time else None
        self.ranges[id(output)] = _output_range(layer) or (self.ranges.get(id(source)) if source is not None
                                                           else None)
        return output


def _built(model):
    """The step model at the fewest frames per call every strided layer divides (each try on a fresh copy: a
    build changes the copy's causal layers)."""
    frames = 1
    for _ in range(12):
        try:
            return _build(_copy(model), frames) + (frames,)
        except _NeedsFrames as needed:
            frames *= needed.factor
    raise errors.UnsupportedLayerError(f"model '{model.name}' downsamples time by more than 4096: it cannot stream.")


def _build(model, frames: int):
    if len(model.inputs) != 1 or model.inputs[0].shape.rank < 3:
        raise errors.UnsupportedLayerError(
            f"model '{model.name}' cannot stream: streaming takes one input of frames (batch, steps, features); it "
            f"has {[tuple(t.shape) for t in model.inputs]}.")
    builder = _Builder(model, frames)
    source = model.inputs[0]
    name = source.name.split(":")[0]
    frame = keras.Input((frames,) + tuple(source.shape[2:]), name=name)
    builder.time[id(frame)] = frames
    outputs = replay(model, [frame], builder.call)
    sequence = tuple(builder.time.get(id(output)) is not None for output in outputs)
    step = keras.Model([frame] + builder.state_inputs, list(outputs) + builder.state_outputs,
                       name=f"{model.name}_streaming")
    return step, builder, sequence


def _copy(model):
    """A copy of the quantization-aware model (its layers are replayed on new inputs; the original's stay as
    they are)."""
    import tensorflow_model_optimization as tfmot

    with tfmot.quantization.keras.quantize_scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def streaming_model(model) -> StreamingModel:
    """The model one streaming call of `model` (a quantization-aware model) computes, and its states.

    Raises:
      errors.UnsupportedLayerError: a layer that cannot stream (named, with
        why and what to do).
    """
    step, builder, sequence, frames = _built(model)
    if not builder.states:
        raise errors.UnsupportedLayerError(
            f"model '{model.name}' keeps no state between frames (no recurrent layer, no convolution over time): "
            "export it whole; streaming would only run it on one frame at a time.")
    output_names = tuple(output_name(name) for name in model.output_names)
    return StreamingModel(step, frames, tuple(builder.states), sequence, model.inputs[0].name.split(":")[0],
                          output_names)


class StreamRunner:
    """A streaming model run over whole sequences, call by call: whole-sequence outputs out.

    Every sequence starts from zero states (the int8 zero point: what a
    reset sets), and each call's `<state>_next` outputs are its next call's
    state inputs, as on the device.

    Args:
      stream: the `StreamingModel`.
      call_model: one call: `[frames, *states]` (float, Keras order) in,
        `[*outputs, *next states]` out: the file in a runtime (batch 1, one
        sequence at a time), or with `batched` the Keras step model (every
        sequence at once).
      batched: whether `call_model` takes every sequence in one call.
    """

    def __init__(self, stream: StreamingModel, call_model, batched: bool = False):
        self.stream = stream
        self.call_model = call_model
        self.batched = batched

    def _run(self, sequences: np.ndarray) -> list[np.ndarray]:
        frames, count = self.stream.frames_per_call, len(self.stream.output_names)
        states = [np.zeros((len(sequences),) + state.shape[1:], np.float32) for state in self.stream.states]
        kept: list[list[np.ndarray]] = [[] for _ in range(count)]
        last: list = [None] * count
        for start in range(0, sequences.shape[1] - frames + 1, frames):
            outputs = [np.asarray(array) for array in self.call_model([sequences[:, start:start + frames]] + states)]
            states = [state.reshape((len(sequences),) + spec.shape[1:]) for state, spec in
                      zip(outputs[count:], self.stream.states)]
            for index in range(count):
                kept[index].append(outputs[index])
                last[index] = outputs[index]
        return [np.concatenate(kept[index], axis=1) if self.stream.sequence_outputs[index] else last[index]
                for index in range(count)]

    def predict(self, inputs, batch_size: int = 1, verbose: bool = False) -> list[np.ndarray]:
        """Outputs for whole sequences (`inputs`: the frames, or a list holding them), one array per output."""
        del batch_size, verbose
        sequences = np.asarray(inputs[0] if isinstance(inputs, (list, tuple)) else inputs, np.float32)
        if self.batched:
            return self._run(sequences)
        parts = [self._run(sequences[index:index + 1]) for index in range(len(sequences))]
        return [np.concatenate([part[index] for part in parts]) for index in range(len(self.stream.output_names))]


def keras_stream(stream: StreamingModel) -> StreamRunner:
    """The Keras step model run as a stream (every sequence at once): what the streaming file was converted from."""
    def call(inputs):
        outputs = stream.keras_model.predict_on_batch(inputs)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    return StreamRunner(stream, call, batched=True)


# A typical microcontroller board that runs TFLM (a Cortex-M4F/M7 part): what "does not fit" means in a heads-up.
TYPICAL_MCU_FLASH_BYTES = 1 << 20
TYPICAL_MCU_RAM_BYTES = 256 << 10


def unrolled_finding(model, figures: Mapping[str, Any], runtimes) -> Finding | None:
    """Where a whole-sequence file of a recurrent model is meant for a microcontroller: what unrolling its steps
    cost in flash and RAM (measured), and that streaming would not; a warning past a typical board's memory."""
    recurrent = [layer for layer in (model.layers if model is not None else [])
                 if isinstance(unwrapped(layer), recurrent_layers())]
    if not recurrent or "tflm" not in tuple(runtimes):
        return None
    flash, ram = figures.get("flash_bytes"), figures.get("ram_bytes")

    def steps(layer) -> str:
        shape = layer.get_input_shape_at(0)
        shape = shape[0] if isinstance(shape, list) else shape
        return f"'{float_layer_name(layer.name)}' over {shape[1]} steps"

    names = ", ".join(steps(layer) for layer in recurrent)
    too_big = (flash or 0) > TYPICAL_MCU_FLASH_BYTES or (ram or 0) > TYPICAL_MCU_RAM_BYTES

    def kb(value) -> str:
        return "n/a" if value is None else f"{value / 1024:.0f} KB"

    text = (f"the file unrolls {names}: {kb(flash)} of flash and {kb(ram)} of RAM (measured "
            f"in TFLM), which grow with the sequence"
            + (f", past a typical microcontroller's {TYPICAL_MCU_FLASH_BYTES >> 20} MB flash / "
               f"{TYPICAL_MCU_RAM_BYTES >> 10} KB RAM" if too_big else "")
            + ". ExportOptions(streaming=True) writes a file that runs one frame per call and carries the state "
              "between calls instead: its size and RAM do not depend on the sequence's length")
    return Finding(Kind.DEVICE_FIT, text, Severity.WARNING if too_big else Severity.NOTE,
                   subject=", ".join(float_layer_name(layer.name) for layer in recurrent),
                   measured=float(ram) if ram is not None else None)
