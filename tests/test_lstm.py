"""An LSTM keeps its accuracy in int8, in LiteRT and in TFLM, at the default tolerances.

The issue's own model: Keras 3, Conv1D(16, 5) -> MaxPooling1D -> LSTM(16) -> Dense(4, softmax), on a noisy
4-class series. TFLite's fused integer LSTM took it to chance level; tfjoint runs the LSTM as the integer operators
of its unrolled cell, fake-quantized where the file quantizes.
"""

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint


def noisy_series(n: int, seed: int, steps: int = 64):
    """Four classes: a sine of 2, 4, 6 or 8 periods per window, random phase, under heavy noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.arange(steps)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(2 * np.pi * (2 + 2 * y[:, None]) * t / steps + phase) + rng.normal(0, 0.8, (n, steps))
    return x[..., None].astype(np.float32), y


def conv_lstm_keras3(seed: int = 0):
    import keras as keras3

    keras3.utils.set_random_seed(seed)
    inputs = keras3.Input((64, 1), name="series")
    x = keras3.layers.Conv1D(16, 5, activation="relu", name="conv")(inputs)
    x = keras3.layers.MaxPooling1D(2, name="pool")(x)
    x = keras3.layers.LSTM(16, name="lstm")(x)
    return keras3.Model(inputs, keras3.layers.Dense(4, activation="softmax", name="classes")(x), name="conv_lstm")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, y = noisy_series(1200, 0)
    x_val, y_val = noisy_series(300, 1)
    model = conv_lstm_keras3()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.6, end_step=60, frequency=10), check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    joint.fit(x, y, epochs=3, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("lstm") / "model.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path), representative_data=x[:200],
                                   validation_data=(x_val, y_val), float_model=model,
                                   options=tfjoint.ExportOptions(runtimes=("litert", "tflm")))
    return model, joint, report, path


@pytest.mark.slow
def test_an_lstm_model_keeps_its_accuracy_in_litert_and_tflm_at_the_default_tolerances(trained):
    _, _, report, path = trained
    assert report.passed and report.thresholds == tfjoint.Tolerances().to_dict()
    summary = tfjoint.inspect.read_flatbuffer(path.read_bytes())
    assert summary.fully_int8 and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in summary.op_names
    assert {"FULLY_CONNECTED", "LOGISTIC", "TANH", "MUL"} <= set(summary.op_names)
    for runtime in ("litert", "tflm"):  # read back from each interpreter's outputs
        result = report.per_runtime[runtime]
        assert result["keras_accuracy"] > 0.6, runtime  # the task is learned (chance is 0.25)
        assert result["int8_accuracy"] >= result["keras_accuracy"] - 0.02, runtime
        assert result["top1_agreement"] >= 0.95 and result["sqnr_db"] >= 15, runtime


@pytest.mark.slow
def test_the_lstm_is_pruned_and_listed_in_the_per_layer_error_table(trained):
    _, joint, report, _ = trained
    assert {f"{pk.layer_name}/{pk.weight_name}" for pk in tfjoint.inspect.pruned_kernels(joint)} >= {
        "lstm/kernel", "lstm/recurrent_kernel"}
    assert report.per_layer_sparsity["lstm"]["tflite"] == pytest.approx(0.6, abs=0.01)  # zeros in the int8 gates
    entry = next(e for e in report.per_layer_error if e["layer"] == "lstm")
    # The int8 operators of the LSTM against the quantization-aware LSTM on the same input: what conversion cost.
    assert entry["qat_sqnr_db"] > 15 and entry["sqnr_db"] is not None and entry["cumulative_sqnr_db"] is not None


def test_an_lstm_over_an_unknown_number_of_steps_is_refused_before_training():
    inputs = keras.Input((None, 3), name="series")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.LSTM(4, name="lstm")(inputs)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'lstm' \\(LSTM\\): its number of time steps is not "
                                                            "fixed.*keras.Input\\(\\(steps, features\\)\\)"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))
    inputs = keras.Input((10, 3), name="series")
    model = keras.Model(inputs, keras.layers.LSTM(4, recurrent_activation="hard_sigmoid", name="lstm")(inputs))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="recurrent_activation is 'hard_sigmoid'"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))


@pytest.mark.slow
def test_an_int8_file_that_computes_something_else_than_qat_is_refused_before_training_with_the_figure(monkeypatch):
    """The conversion check runs the int8 file on sample inputs against the quantization-aware model: a file that
    computes something else (here: a converter that returns another model's file) is refused with the figure."""
    from tfjoint.tflite import convert

    def model(seed, steps=30):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((steps, 4), name="series")
        x = keras.layers.LSTM(16, name="lstm")(keras.layers.Dense(8, activation="relu", name="embed")(inputs))
        return keras.Model(inputs, keras.layers.Dense(4, name="classes")(x))

    real_to_int8 = convert.to_int8

    def another_models_file(prepared, representative=None):  # same inputs (the check shortens the sequence)
        other = model(1, steps=prepared.inputs[0].shape[1])
        return real_to_int8(tfjoint.strip(tfjoint.prepare(other, tfjoint.JointSchedule(0.0, end_step=2),
                                                          check=False)))

    monkeypatch.setattr(convert, "to_int8", another_models_file)
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="would not keep its accuracy in int8.*computes "
                                                            "-?[0-9.]+ dB \\(SQNR\\) from the quantization-aware"):
        tfjoint.prepare(model(0), tfjoint.JointSchedule(0.5, end_step=4))


def _bidirectional(framework: str, merge_mode: str = "concat", return_sequences: bool = False, seed: int = 0):
    import importlib

    k = keras if framework == "tf_keras" else importlib.import_module("keras")
    k.utils.set_random_seed(seed)
    inputs = k.Input((64, 1), name="series")
    x = k.layers.Conv1D(16, 5, activation="relu", name="conv")(inputs)
    x = k.layers.MaxPooling1D(2, name="pool")(x)
    x = k.layers.Bidirectional(k.layers.LSTM(12, return_sequences=return_sequences), merge_mode=merge_mode,
                               name="both_ways")(x)
    if return_sequences:
        x = k.layers.GlobalAveragePooling1D(name="gap")(x)
    return k.Model(inputs, k.layers.Dense(4, activation="softmax", name="classes")(x), name="bidirectional")


@pytest.mark.parametrize("merge_mode,return_sequences", [("concat", False), ("sum", True), ("ave", False),
                                                         ("mul", True)])
def test_a_bidirectional_lstm_runs_as_both_integer_cells_computing_what_keras_computes(merge_mode, return_sequences):
    from tfjoint.quantize.substitution import substituted

    model = _bidirectional("tf_keras", merge_mode, return_sequences)
    x, _ = noisy_series(16, 3)
    stand_in = substituted(model).get_layer("both_ways")
    assert type(stand_in).__name__ == "IntegerBidirectionalLSTM"  # the weights carried over, in Keras's order
    np.testing.assert_allclose(substituted(model).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("framework", ["tf_keras", "keras3"])
def test_a_bidirectional_gru_is_refused_before_training_naming_the_layer(framework):
    import importlib

    k = keras if framework == "tf_keras" else importlib.import_module("keras")
    inputs = k.Input((12, 3))
    x = k.layers.Bidirectional(k.layers.GRU(4), name="both_ways")(inputs)
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'both_ways' \\(Bidirectional\\)") as refused:
        tfjoint.prepare(k.Model(inputs, k.layers.Dense(2)(x)), tfjoint.JointSchedule(0.5, end_step=100))
    assert "wraps a GRU" in str(refused.value) and "Bidirectional LSTM" in str(refused.value)


@pytest.mark.slow
def test_a_keras3_bidirectional_lstm_keeps_its_accuracy_in_litert_and_tflm_and_is_pruned(tmp_path):
    x, y = noisy_series(1200, 0)
    x_val, y_val = noisy_series(300, 1)
    model = _bidirectional("keras3")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=60, frequency=10), check=False)  # exported below
    assert {f"{pk.layer_name}/{pk.weight_name}" for pk in tfjoint.inspect.pruned_kernels(joint)} >= {
        "both_ways/forward_kernel", "both_ways/backward_kernel", "both_ways/backward_recurrent_kernel"}
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    joint.fit(x, y, epochs=3, batch_size=32, verbose=0)
    path = tmp_path / "model.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path), validation_data=(x_val, y_val),
                                   options=tfjoint.ExportOptions(runtimes=("litert", "tflm")))
    assert report.passed and report.thresholds == tfjoint.Tolerances().to_dict()
    summary = tfjoint.inspect.read_flatbuffer(path.read_bytes())
    assert summary.fully_int8 and "BIDIRECTIONAL_SEQUENCE_LSTM" not in summary.op_names
    assert report.per_layer_sparsity["both_ways"]["tflite"] == pytest.approx(0.5, abs=0.01)  # read from the file
    for runtime in ("litert", "tflm"):
        result = report.per_runtime[runtime]
        assert result["keras_accuracy"] > 0.6, runtime  # the task is learned (chance is 0.25)
        assert result["int8_accuracy"] >= result["keras_accuracy"] - 0.02, runtime


@pytest.mark.slow
def test_a_gru_without_a_recurrent_bias_is_fully_int8_after_training(tmp_path):
    """reset_after=False (Keras's legacy GRU): its first step has no recurrent bias to add. Trained, its gate
    ranges differ, and the converter requantized the one SPLIT of the input gates through float (found only at the
    export, after training); the first step now projects each gate on its own."""
    import keras as keras3

    keras3.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 24, 3)).astype(np.float32), rng.integers(0, 3, 300)
    inputs = keras3.Input((24, 3), name="series")
    hidden = keras3.layers.GRU(16, reset_after=False, name="gru")(inputs)
    model = keras3.Model(inputs, keras3.layers.Dense(3, activation="softmax", name="classes")(hidden))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=10, frequency=5), check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, epochs=1, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "gru.tflite"),
                                   validation_data=(x[:200], y[:200]),
                                   options=tfjoint.ExportOptions(runtimes=("litert", "tflm")))
    assert report.passed and report.fully_int8 and report.thresholds == tfjoint.Tolerances().to_dict()
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "gru.tflite").read_bytes())
    assert summary.fully_int8 and "DEQUANTIZE" not in summary.op_names and "SPLIT" in summary.op_names


def _lstm_autoencoder(steps: int = 6, repeat: int = 11, decoder: bool = True):
    """keras.io's sequence autoencoder: LSTM encoder, RepeatVector, LSTM decoder, TimeDistributed(Dense)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((steps, 2), name="series")
    code = keras.layers.LSTM(4, name="encoder")(inputs)
    x = keras.layers.RepeatVector(repeat, name="repeat")(code)
    x = keras.layers.LSTM(4, return_sequences=True, name="decoder")(x) if decoder else x
    return keras.Model(inputs, keras.layers.TimeDistributed(keras.layers.Dense(2), name="reconstruction")(x))


def test_repeat_vector_becomes_concatenations_computing_what_keras_computes():
    """RepeatVector is TILE in a file, which TFLM has no kernel for: prepare puts RepeatSteps in its place."""
    from tfjoint.registry.own_layers import RepeatSteps

    vector = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    for n in (1, 2, 11, 23):  # more than 10: TFLM's CONCATENATION takes at most 10 inputs
        np.testing.assert_array_equal(RepeatSteps(n)(vector).numpy(), keras.layers.RepeatVector(n)(vector).numpy())
    model = _lstm_autoencoder(steps=6, repeat=6)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), check=False)
    assert any(type(getattr(layer, "layer", layer)).__name__ == "RepeatSteps" for layer in joint.layers)


@pytest.mark.slow
def test_a_sequence_decoded_from_a_repeat_vector_runs_fully_int8_in_tflm(tmp_path):
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(256, 6, 2)), axis=1).astype(np.float32) / 3
    # 11 steps: more than one CONCATENATION of TFLM's takes; no LSTM decoder (integer LSTMs run in TFLM above)
    model = _lstm_autoencoder(steps=6, repeat=11, decoder=False)
    model.compile("adam", "mse")
    y = np.concatenate([x, x[:, :5]], axis=1)  # the series, then its first five steps again
    model.fit(x, y, epochs=2, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=8, frequency=4), check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "mse")
    joint.fit(x, y, epochs=1, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "ae.tflite"), validation_data=(x[:128], y[:128]),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",), quantization="qat"))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "ae.tflite").read_bytes())
    assert report.passed and summary.fully_int8  # validated in TFLM, which has no TILE kernel
    assert "CONCATENATION" in summary.op_names and "TILE" not in summary.op_names


@pytest.mark.parametrize("recurrent", ["LSTM", "GRU"])
def test_every_steps_output_keeps_its_length_for_a_flatten_after_it(recurrent):
    """The symbolic loop's output had no static length, so a Flatten then Dense after an LSTM(return_sequences=True)
    failed in prepare ("The last dimension of the inputs to a Dense layer should be defined")."""
    model = keras.Sequential([keras.Input((5, 3)), getattr(keras.layers, recurrent)(4, return_sequences=True),
                              keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), check=False)
    assert joint.layers[-2].output_shape == (None, 20)
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    assert joint.predict(x, verbose=0).shape == (4, 2)
