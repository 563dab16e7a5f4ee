"""Streaming files: one hop of frames per call, the state carried between calls as int8 tensors.

The file is read back (its inputs, outputs and their quantization), the C header a firmware would include is
parsed, and a device loop written from that header alone runs the file in the real TFLM interpreter over whole
sequences; its answers are compared with the whole-sequence quantization-aware Keras model.
"""

import re

import numpy as np
import pytest
import tf_keras as keras

import tfjoint
from tfjoint.findings import Kind
from tfjoint.tflite.flatbuffer import read_flatbuffer
from tfjoint.tflite.streaming import streaming_model

STEPS = 32


def series(n: int, seed: int, steps: int = STEPS):
    """Four classes: a sine of 2, 4, 6 or 8 periods per window, random phase, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.arange(steps)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(2 * np.pi * (2 + 2 * y[:, None]) * t / steps + phase) + rng.normal(0, 0.3, (n, steps))
    return x[..., None].astype(np.float32), y


def conv_lstm(seed: int = 0, padding: str = "causal"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((STEPS, 1), name="frames")
    x = keras.layers.Conv1D(8, 3, padding=padding, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling1D(2, name="pool")(x)
    x = keras.layers.LSTM(12, name="lstm")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(x), name="conv_lstm")


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    x, y = series(480, 0)
    x_val, y_val = series(120, 1)
    model = conv_lstm()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, 0.5, check=("tflm", "streaming"))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, epochs=2, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("streaming")
    path = out / "stream.tflite"
    report = tfjoint.export_tflite(joint, str(path), representative_data=x[:64], validation_data=(x_val, y_val),
                                   float_model=model,
                                   options=tfjoint.ExportOptions(streaming=True, runtimes=("tflm", "litert")))
    header = open(tfjoint.write_c_array(path, out, "model_data").header).read()
    return {"joint": joint, "report": report, "content": path.read_bytes(), "header": header, "x_val": x_val,
            "y_val": y_val, "x": x, "model": model, "out": out}


def _header_array(header: str, name: str) -> list[int]:
    found = re.search(rf"constexpr int {name}\[kStateCount\] = \{{([^}}]*)\}};", header)
    assert found, f"{name} is not in model_data.h"
    return [int(value) for value in found.group(1).split(",")]


@pytest.mark.slow
def test_the_streaming_file_carries_its_states_as_int8_tensors_on_one_scale_each(streamed):
    summary = read_flatbuffer(streamed["content"])
    report = streamed["report"]
    assert report.passed is True and summary.fully_int8
    assert report.streaming["frames_per_call"] == 2  # the pooling halves time: a call brings two frames
    inputs = {t.signature_name: t for t in summary.inputs}
    outputs = {t.signature_name: t for t in summary.outputs}
    assert tuple(inputs["frames"].shape[1:]) == (2, 1)  # one call's frames, not the sequence
    names = [state["name"] for state in report.streaming["states"]]
    assert names == ["conv_buffer", "lstm_hidden", "lstm_cell"]
    for state in report.streaming["states"]:
        given, returned = inputs[state["name"]], outputs[state["output_name"]]
        assert given.dtype == returned.dtype == "int8"
        assert (given.scale, given.zero_point) == (returned.scale, returned.zero_point)  # copied byte for byte
        assert tuple(given.shape[1:]) == tuple(state["shape"][1:])
    assert tuple(inputs["conv_buffer"].shape[1:]) == (2, 1)  # a causal kernel of 3 keeps the last 2 frames
    assert tuple(inputs["lstm_hidden"].shape[1:]) == (12,)
    # The header a firmware includes names the same tensors, by position in the file.
    positions = {t.signature_name: i for i, t in enumerate(summary.inputs)}
    out_positions = {t.signature_name: i for i, t in enumerate(summary.outputs)}
    assert _header_array(streamed["header"], "kStateInput") == [positions[n] for n in names]
    assert _header_array(streamed["header"], "kStateOutput") == [out_positions[f"{n}_next"] for n in names]
    assert _header_array(streamed["header"], "kStateZeroPoint") == [inputs[n].zero_point for n in names]
    assert _header_array(streamed["header"], "kStateBytes") == [int(np.prod(inputs[n].shape[1:])) for n in names]


@pytest.mark.slow
def test_a_device_loop_written_from_the_header_matches_the_whole_sequence_model_in_tflm(streamed):
    """What a firmware does, in TFLM's own interpreter: reset every state to its zero point, quantize each hop of
    frames, invoke, read the outputs and copy the state outputs' bytes aside, then into the inputs; the last call's
    class is the sequence's."""
    from tflite_micro import runtime

    header, content = streamed["header"], streamed["content"]
    arena = int(re.search(r"kTensorArenaSize = (\d+)", header).group(1)) if "kTensorArenaSize" in header else None
    interpreter = runtime.Interpreter.from_bytes(content, arena_size=arena or streamed["report"].memory[
        "tflm_arena_bytes"] + 1024)
    state_in, state_out = _header_array(header, "kStateInput"), _header_array(header, "kStateOutput")
    zero_points = _header_array(header, "kStateZeroPoint")
    frames = interpreter.get_input_details(0)
    scale, zero = frames["quantization_parameters"]["scales"][0], frames["quantization_parameters"]["zero_points"][0]
    hop = int(frames["shape"][1])
    x_val = streamed["x_val"][:60]
    classes = []
    for sequence in x_val:
        for position, zero_point in zip(state_in, zero_points):
            details = interpreter.get_input_details(position)
            interpreter.set_input(np.full(details["shape"], zero_point, np.int8), position)
        for start in range(0, STEPS, hop):
            quantized = np.clip(np.round(sequence[start:start + hop] / scale + zero), -128, 127).astype(np.int8)
            interpreter.set_input(quantized[None], 0)
            interpreter.invoke()
            scores = np.asarray(interpreter.get_output(0)).copy()  # every output read before any input is written
            carried = [np.asarray(interpreter.get_output(source)).copy() for source in state_out]
            for state, target in zip(carried, state_in):
                interpreter.set_input(state, target)
        classes.append(int(np.argmax(scores)))
    whole = tfjoint.strip(streamed["joint"]).predict(x_val, verbose=0).argmax(-1)
    assert np.mean(np.asarray(classes) == whole) >= tfjoint.Tolerances().min_agreement


@pytest.mark.slow
def test_the_whole_sequence_file_says_what_unrolling_costs_and_streaming_needs_less(streamed):
    whole = tfjoint.export_tflite(streamed["joint"], str(streamed["out"] / "whole.tflite"),
                                  options=tfjoint.ExportOptions(quantization="qat", runtimes=("tflm",)))
    fit = [finding for finding in whole.notes if finding.kind is Kind.DEVICE_FIT]
    assert fit and "'lstm' over 16 steps" in fit[0] and "streaming=True" in fit[0]
    stream = streamed["report"]
    assert stream.memory["flash_bytes"] < whole.memory["flash_bytes"]
    assert stream.memory["ram_bytes"] < whole.memory["ram_bytes"]
    assert not [finding for finding in stream.notes if finding.kind is Kind.DEVICE_FIT]


@pytest.mark.slow
def test_a_gru_with_an_output_per_frame_streams_and_passes_the_default_gate(tmp_path):
    """Frames in, a value per (pooled) frame out: each call returns its frames' outputs, the sequence's are their
    concatenation."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, STEPS, 2)).astype(np.float32)
    target = np.cumsum(x[:, :, :1], axis=1)[:, 1::2] / 4.0  # a running sum: needs the state
    inputs = keras.Input((STEPS, 2), name="frames")
    h = keras.layers.Conv1D(8, 2, padding="causal", name="conv")(inputs)
    h = keras.layers.AveragePooling1D(2, name="pool")(h)
    h = keras.layers.GRU(16, return_sequences=True, name="gru")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="total")(h))
    model.compile("adam", "mse")
    model.fit(x, target, epochs=6, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, 0.0, check=("streaming",))
    joint.compile(keras.optimizers.Adam(5e-4), "mse")
    joint.fit(x, target, epochs=1, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "gru.tflite"), validation_data=(x[:40], target[:40]),
                                   options=tfjoint.ExportOptions(streaming=True))
    assert report.passed is True
    assert report.streaming["frames_per_call"] == 2 and report.streaming["outputs"] == ["total"]
    assert [state["name"] for state in report.streaming["states"]] == ["conv_buffer", "gru_hidden"]
    assert report.per_output["total"]["sqnr_db"] >= tfjoint.Tolerances().min_sqnr_db
    output = next(t for t in read_flatbuffer((tmp_path / "gru.tflite").read_bytes()).outputs
                  if t.signature_name == "total")
    assert tuple(output.shape[1:]) == (1, 1)  # one pooled frame per call


def _prepared(layer_between, name: str):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((STEPS, 3), name="frames")
    x = layer_between(inputs)
    x = keras.layers.LSTM(8, name="lstm")(x) if x.shape.rank == 3 else x
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    return tfjoint.prepare(model, 0.0, check=False)


@pytest.mark.parametrize("layer, named, why", [
    (lambda: keras.layers.Conv1D(4, 3, padding="same", name="conv"), "'conv' (Conv1D)", "padding='causal'"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="both"),
     "'both' (Bidirectional)", "backward direction"),
    (lambda: keras.layers.GlobalAveragePooling1D(name="gap"), "'gap' (GlobalAveragePooling1D)", "whole sequence"),
])
def test_a_layer_that_cannot_stream_is_named_with_what_streams(layer, named, why):
    prepared = _prepared(layer(), "m")
    with pytest.raises(tfjoint.errors.UnsupportedLayerError) as caught:
        streaming_model(prepared)
    message = str(caught.value)
    assert named in message and why in message and "streaming=False" in message


@pytest.mark.slow
def test_prepare_refuses_a_model_that_cannot_stream_before_training():
    inputs = keras.Input((STEPS, 3), name="frames")
    x = keras.layers.Conv1D(4, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.LSTM(4, name="lstm")(x)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'conv' \\(Conv1D\\) cannot stream"):
        tfjoint.prepare(model, 0.0, check=("tflm", "streaming"))


def test_streaming_needs_a_model_trained_with_tfjoint(tmp_path):
    model = conv_lstm()
    x, _ = series(8, 0)
    with pytest.raises(tfjoint.errors.ConfigError, match="`streaming`=True needs .*received a float model"):
        tfjoint.export_tflite(model, str(tmp_path / "m.tflite"), representative_data=x,
                              options=tfjoint.ExportOptions(streaming=True))
    with pytest.raises(tfjoint.errors.ConfigError, match="`streaming` must be True or False; received 'yes'"):
        tfjoint.ExportOptions(streaming="yes")
    from tfjoint.app.flags import RunConfig

    with pytest.raises(tfjoint.errors.ConfigError, match="--streaming needs the quantization-aware file"):
        RunConfig(streaming=True, quantization="ptq")


def test_the_streaming_flag_reaches_the_export_options(tmp_path):
    from tfjoint.app.flags import RunConfig

    options = RunConfig(streaming=True, target="micro").export_options(str(tmp_path), "none")
    assert options.streaming is True and options.runtimes == ("tflm",)
    assert RunConfig().export_options(str(tmp_path), "none").streaming is False


@pytest.mark.slow
def test_a_tcn_of_dilated_causal_convolutions_streams_in_tflm_with_a_ring_buffer_per_layer(tmp_path):
    """Each dilated causal Conv1D keeps (kernel - 1) x dilation frames from call to call; its causal zeros are the
    buffer's starting state (the whole-sequence rewrite's padding layer is left out of the step model)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, STEPS, 2)).astype(np.float32)
    target = np.cumsum(x[:, :, :1], axis=1) / 4.0
    inputs = keras.Input((STEPS, 2), name="frames")
    h = keras.layers.Conv1D(8, 3, dilation_rate=2, padding="causal", activation="relu", name="tcn_2")(inputs)
    h = keras.layers.Conv1D(8, 3, dilation_rate=4, padding="causal", activation="relu", name="tcn_4")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="total")(h))
    model.compile("adam", "mse")
    model.fit(x, target, epochs=4, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, 0.0, check=("tflm", "streaming"))
    joint.compile(keras.optimizers.Adam(5e-4), "mse")
    joint.fit(x, target, epochs=1, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "tcn.tflite"), validation_data=(x[:24], target[:24]),
                                   options=tfjoint.ExportOptions(streaming=True, runtimes=("tflm",)))
    assert report.passed is True and report.fully_int8
    states = {state["name"]: state for state in report.streaming["states"]}
    assert set(states) == {"tcn_2_buffer", "tcn_4_buffer"}, states
    assert [states[name]["shape"][1] for name in ("tcn_2_buffer", "tcn_4_buffer")] == [4, 8]  # (3 - 1) x 2, x 4
    assert not {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "PAD"} & set(report.operator_counts)
