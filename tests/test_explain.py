"""Explaining the int8 file: which layer adds the error, how much memory it needs, the right metric per output."""

import json
import math

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint
from tfjoint.export import compare
from tfjoint.export.memory import planned_head_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outlier_report(digits_float_model, digits_data, tmp_path_factory):
    """The trained digits CNN with one huge weight injected into `fc1`, exported by post-training quantization."""
    model = keras.models.clone_model(digits_float_model)
    model.set_weights(digits_float_model.get_weights())
    kernel, bias = model.get_layer("fc1").get_weights()
    kernel[3, 5] = 1000.0
    model.get_layer("fc1").set_weights([kernel, bias])
    path = str(tmp_path_factory.mktemp("outlier") / "outlier.tflite")
    # The outlier is planted to break the file: the gate is opened so the report that explains it is written.
    return tfjoint.export_tflite(model, path, representative_data=digits_data["x_calib"],
                                 validation_data=(digits_data["x_val"], digits_data["y_val"]),
                                 options=tfjoint.ExportOptions(tolerances=
                                     tfjoint.Tolerances(min_agreement=0.0, min_sqnr_db=-100)))


def test_the_outlier_layer_comes_first(outlier_report):
    entries = outlier_report.per_layer_error
    assert entries[0]["layer"] == "fc1"
    assert {e["layer"] for e in entries} == {"conv1", "conv2", "fc1", "classes"}  # every conv and dense layer
    # Worst first, by the lower of the whole-tensor and the mean per-channel SQNR.
    worst = [min(e["sqnr_db"], e["mean_channel_sqnr_db"]) for e in entries]
    assert worst == sorted(worst)
    # One channel takes the whole activation grid: the worst channel shows it far more than the whole tensor.
    assert entries[0]["worst_channel_sqnr_db"] < entries[0]["sqnr_db"] - 10
    # The clean layers' own error is small even downstream of the outlier: nothing is blamed on consumers.
    assert next(e for e in entries if e["layer"] == "classes")["sqnr_db"] > 30
    assert next(e for e in entries if e["layer"] == "classes")["cumulative_sqnr_db"] < 30


def test_memory_is_in_the_report_and_its_json(outlier_report, tmp_path):
    memory = outlier_report.memory
    assert 0.9 * outlier_report.size_bytes < memory["weights_bytes"] < outlier_report.size_bytes
    assert memory["activation_bytes"] > 0 and memory["tflm_arena_bytes"] >= memory["activation_bytes"]
    outlier_report.save_json(str(tmp_path / "report.json"))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["per_layer_error"][0]["layer"] == "fc1" and saved["memory"]["activation_bytes"] > 0
    text = str(outlier_report)
    assert "worst int8 layers" in text and "TFLM arena" in text


def test_the_arena_plan_is_tflms_greedy_planner():
    # Three tensors: A (100 B) at scopes 0-1, B (40 B) at 1-2, C (60 B) at 2-3.
    # A and C never live together, so C reuses A's place; B sits above A.
    assert planned_head_bytes([(100, 0, 1), (40, 1, 2), (60, 2, 3)]) == 112 + 48
    assert planned_head_bytes([(10, 0, 0), (10, 1, 1)]) == 16  # one 16-byte slot, reused
    # Equal sizes are placed in reverse order of addition, as TFLM's planner does: D, B, A, then C. Placing
    # A first (first-seen order) would fit C beside B and need only 64 bytes.
    assert planned_head_bytes([(32, 1, 3), (32, 2, 3), (16, 0, 1), (32, 0, 0)]) == 80


def test_int8_activations_need_about_a_quarter_of_float32s(digits_joint, digits_float_model, digits_data, tmp_path):
    report = tfjoint.export_tflite(digits_joint, str(tmp_path / "m.tflite"), float_model=digits_float_model,
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]))
    memory = report.memory
    assert 3.0 < memory["float_activation_bytes"] / memory["activation_bytes"] <= 4.5
    assert 3.0 < memory["float_weights_bytes"] / memory["weights_bytes"] <= 4.5
    # QAT: each layer against the float model and against the QAT Keras model it was converted from.
    entries = {e["layer"]: e for e in report.per_layer_error}
    assert set(entries) == {"conv1", "conv2", "fc1", "classes"}
    assert all(e["qat_sqnr_db"] is None or e["qat_sqnr_db"] > 25 for e in entries.values())  # conversion is faithful
    assert entries["conv1"]["qat_sqnr_db"] > 25


def _regression(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="value")(hidden))


def test_a_regression_output_gets_mse_mae_and_fails_on_a_coarse_int8_grid(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((2048, 4), dtype=np.float32) * 10
    y = x.sum(1, keepdims=True) * 10  # targets from 0 to 400
    model = _regression()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, epochs=40, batch_size=64, verbose=0)
    # Validation on a narrow slice of the range: 0.25 .. 0.40 of it, where int8's steps are coarse.
    narrow = (y[:, 0] > 100) & (y[:, 0] < 160)
    # SQNR is opened so that the regression check is the one that fails, the one this test is about.
    with pytest.raises(tfjoint.ValidationError, match="max_mse_increase") as caught:
        tfjoint.export_tflite(model, str(tmp_path / "r.tflite"), representative_data=x,
                              validation_data=(x[narrow], y[narrow]),
                              options=tfjoint.ExportOptions(tolerances=
                                  tfjoint.Tolerances(min_sqnr_db=0, max_mse_increase=0.1)))
    entry = caught.value.report.per_output["value"]
    assert entry["int8_mse"] > entry["keras_mse"] and entry["int8_mae"] > 0 and "mse_increase" in entry
    assert any("steps of" in note for note in caught.value.report.notes)
    assert not (tmp_path / "r.tflite").exists()


def test_an_exact_match_without_a_float_model_is_flagged():
    per_output = {"out": {"sqnr_db": math.inf, "classifier": False}}
    notes = compare.notes_on_outputs(per_output, [np.linspace(0, 1, 100)[:, None]], {"out": None}, has_float=False)
    assert any("SQNR inf" in note and "float_model" in note for note in notes)
    assert not compare.notes_on_outputs(per_output, [np.linspace(0, 1, 100)[:, None]], {"out": None},
                                         has_float=True)


def test_mse_tolerance_is_checked_and_named():
    entry = {"sqnr_db": 30.0, "classifier": False, "int8_mse": 2.0, "keras_mse": 1.0, "float_mse": 1.0,
             "mse_increase": 1.0}
    failures = compare.failures({"value": entry}, tfjoint.Tolerances(max_mse_increase=0.5))
    assert [str(f) for f in failures] == [
        "output 'value': int8 MSE 2 is 100% above the Keras model's 1 > max_mse_increase 0.5 (50%)"]
    assert failures[0].kind is tfjoint.findings.Kind.MSE and (failures[0].measured, failures[0].limit) == (1.0, 0.5)
    with pytest.raises(tfjoint.ConfigError, match="`max_mse_increase` must be >= 0; received -1"):
        tfjoint.Tolerances(max_mse_increase=-1)


def test_own_error_is_measured_against_the_float_models_signal():
    # A layer whose input was crushed upstream: its float op on that input gives tiny values (0.01), which its
    # int8 grid (calibrated for the normal outputs, ~1) rounds to 0. Against its own tiny output that is 0 dB;
    # against the signal the layer normally carries it is a small error, and must not rank the layer as broken.
    from tfjoint.export.explain import _sqnrs

    own_reference = np.full((8, 4), 0.01)
    int8_output = np.zeros((8, 4))
    float_output = np.ones((8, 4))
    assert _sqnrs(own_reference, int8_output, own_reference)["sqnr_db"] == pytest.approx(0.0)
    against_float = _sqnrs(own_reference, int8_output, float_output)
    assert against_float["sqnr_db"] == pytest.approx(40.0)
    assert against_float["mean_channel_sqnr_db"] == pytest.approx(40.0)


def test_a_self_attention_is_replayed_on_the_files_float64_values():
    # The file's tensors dequantize to float64; a layer called on several arguments (a self-attention's query
    # and value) casts only the first, so the chain must hand every layer float32 (it failed in TF's Conv2D).
    from tfjoint.export.explain import _apply
    from tfjoint.registry.transformer import IntegerAttention  # what a MultiHeadAttention becomes

    inputs = keras.Input((6, 8))
    model = keras.Model(inputs, IntegerAttention(2, 4, name="attention")(inputs, inputs))
    values = np.random.default_rng(0).normal(size=(3, 6, 8))  # float64, as `_dequantized` returns
    replayed = _apply([model.get_layer("attention")], values, 3 * 6 * 8)
    expected = model(values.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(replayed, expected, rtol=1e-5, atol=1e-6)
