"""Every promise the report makes is kept (issue 35): nothing degrades silently, the shipped file is chosen on
evidence, failures after training leave a report, and the runtimes agree."""

import json
import os

import numpy as np
import pytest
import tf_keras as keras
from conftest import tfjoint_cli_runs

import tfjoint
from tfjoint.export import validation
from tfjoint.export.candidates import Candidate
from tfjoint.findings import Kind, failure
from tfjoint.quantize.substitution import substituted
from tfjoint.registry import unwrapped

# --- What a rewrite keeps -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_recurrent_rewrite_carries_dropout_regularizers_and_constraints(kind):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 3), name="series")
    layer = getattr(keras.layers, kind)(
        8, dropout=0.3, recurrent_dropout=0.2, kernel_regularizer=keras.regularizers.L2(1e-2),
        recurrent_constraint=keras.constraints.MaxNorm(1.5), name="cell")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(layer(inputs)))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=4), check=False)
    cell = unwrapped(joint.get_layer("quant_cell"))
    assert (cell.dropout, cell.recurrent_dropout) == (0.3, 0.2)
    assert cell.kernel_regularizer.get_config()["l2"] == pytest.approx(1e-2)
    assert cell.recurrent_constraint.get_config()["max_value"] == pytest.approx(1.5)
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype(np.float32)
    assert not np.allclose(joint(x, training=True), joint(x, training=True))  # dropout is drawn in training
    np.testing.assert_array_equal(joint(x, training=False), joint(x, training=False))
    assert joint.losses and float(sum(joint.losses)) > 0  # the regularizer reaches the loss
    again = keras.layers.deserialize(keras.layers.serialize(cell), custom_objects={type(cell).__name__: type(cell)})
    assert again.get_config() == cell.get_config()


def test_a_layers_leaky_relu_activation_becomes_a_layer_of_its_own_and_computes_the_same():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(4, activation="leaky_relu", name="dense")(inputs))
    split = substituted(model)
    assert [type(layer).__name__ for layer in split.layers] == ["InputLayer", "Dense", "IntegerLeakyReLU"]
    assert split.get_layer("dense").get_config()["activation"] == "linear"
    x = np.random.default_rng(1).standard_normal((16, 5)).astype(np.float32)
    np.testing.assert_allclose(split.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def test_an_elu_activation_is_refused_with_the_layer_that_replaces_it():
    inputs = keras.Input((5,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(4, activation="elu", name="dense")(inputs))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'dense' \\(Dense, activation 'elu'\\).*for elu or "
                                                                  "selu, a keras.layers.LeakyReLU layer"):
        tfjoint.prepare(model, 0.5, check=False)


# --- Choosing QAT or post-training by evidence ----------------------------------------------------------------------

def _result(quantization: str, outcomes, size: int, failures=()):
    candidate = Candidate(quantization, None, b"x" * size, None)
    runtime = validation.RuntimeResult("litert", {}, tuple(failures), (), np.asarray(outcomes, np.float64))
    return validation.CandidateResult(candidate, (runtime,))


def test_a_difference_inside_the_noise_ships_the_smaller_file_then_qat():
    rng = np.random.default_rng(0)
    right = rng.random(600) < 0.9
    other = right.copy()
    other[:4] = ~other[:4]  # 4 samples of 600 differ: noise
    qat, ptq = _result("qat", right, 1000), _result("post_training", other, 1500)
    shipped, decision = validation.choose([qat, ptq], ("litert",))
    assert shipped is qat and decision.p_value > 0.05 and "the smaller file" in decision.rule
    equal = _result("post_training", other, 1000)
    shipped, decision = validation.choose([qat, equal], ("litert",))
    assert shipped is qat and "equal sizes: the quantization-aware file" in decision.rule


def test_a_real_difference_ships_the_more_accurate_file_and_says_by_which_test():
    qat = _result("qat", [1] * 500 + [0] * 100, 1000)
    ptq = _result("post_training", [1] * 600, 1500)  # right on 100 samples the QAT file gets wrong
    shipped, decision = validation.choose([qat, ptq], ("litert",))
    assert shipped is ptq and decision.discordant == (100, 0) and decision.p_value < 1e-20
    assert "McNemar's exact test" in decision.rule


def test_a_file_that_passes_beats_one_that_fails_whatever_their_accuracy():
    fails = _result("qat", [1] * 600, 1000, failures=[failure(Kind.SQNR, "in litert: SQNR", runtime="litert")])
    passes = _result("post_training", [0] * 600, 2000)
    shipped, decision = validation.choose([fails, passes], ("litert",))
    assert shipped is passes and decision.rule == "the only candidate that passes validation"


def test_the_headline_leads_with_the_runtime_that_failed():
    candidate = Candidate("qat", None, b"x", None)
    litert = validation.RuntimeResult("litert", {}, ())
    tflm = validation.RuntimeResult("tflm", {}, (failure(Kind.AGREEMENT, "in tflm: agreement", runtime="tflm",
                                                         excess=0.06),))
    assert validation.CandidateResult(candidate, (litert, tflm)).headline_runtime == "tflm"
    assert validation.CandidateResult(candidate, (litert, validation.RuntimeResult("tflm", {}, ()))
                                      ).headline_runtime == "litert"


# --- End to end ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_file_written_without_validation_data_says_it_was_not_validated(digits_joint, tmp_path):
    report = tfjoint.export_tflite(digits_joint, tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").exists() and report.passed is None and report.validated is False
    assert "NOT VALIDATED" in str(report).splitlines()[0]
    assert any(n.kind is Kind.NOT_VALIDATED for n in report.notes)
    assert json.loads(json.dumps(report.to_dict()))["passed"] is None


@pytest.mark.slow
def test_a_leaky_relu_runs_in_tflm_as_its_quantization_aware_model_computes_it(tmp_path):
    """TFLM's int8 LEAKY_RELU rounds negative values with a bias (about -0.27 steps at alpha 0.3) that QAT does not
    simulate; the MUL and MAXIMUM tfjoint exports instead compute what the quantization-aware model computed."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="x")
    hidden = keras.layers.LeakyReLU(0.3, name="leaky")(keras.layers.Dense(64, name="dense")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(hidden))
    x = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    model.compile("adam", "mse")
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=2), check="tflm")
    joint.compile(keras.optimizers.Adam(1e-4), "mse")
    joint.fit(x, np.zeros((256, 4)), batch_size=32, verbose=0)
    stripped = tfjoint.strip(joint)
    report = tfjoint.export_tflite(stripped, tmp_path / "leaky.tflite", validation_data=x[:64],
                                   options=tfjoint.ExportOptions(runtimes=("tflm",), quantization="qat"))
    assert "LEAKY_RELU" not in report.ops and "MAXIMUM" in report.ops
    # The hidden layer's int8 values in TFLM against the quantization-aware model's, in int8 steps.
    probe = keras.Model(stripped.inputs, stripped.get_layer("quant_leaky").output)
    probe_file = tfjoint.export_tflite(probe, tmp_path / "probe.tflite", options=tfjoint.ExportOptions(
        runtimes=("tflm",), quantization="qat"))
    scale = probe_file.outputs[0]["scale"]
    tflm = tfjoint.inspect.TFLMModel((tmp_path / "probe.tflite").read_bytes(), ["x"], ["quant_leaky"])
    steps = (tflm.predict([x[:32]])[0] - probe.predict(x[:32], verbose=0)) / scale
    negative = probe.predict(x[:32], verbose=0) < 0
    assert abs(float(np.mean(steps[negative]))) < 0.1  # no bias on the negative side (LEAKY_RELU's: -0.27)
    assert float(np.mean(np.abs(steps))) < 0.1 and float(np.max(np.abs(steps))) <= 2.0 + 1e-5  # FC, MUL, MAXIMUM


@pytest.mark.slow
def test_gelu_runs_on_a_microcontroller_as_prepared_for_it(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(
        keras.layers.Dense(16, activation="gelu", name="hidden")(inputs)))
    x = np.random.default_rng(0).standard_normal((128, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=2), check="tflm")
    assert "SigmoidGelu" in [type(unwrapped(layer)).__name__ for layer in joint.layers]
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=32, epochs=2, verbose=0)
    report = tfjoint.export_tflite(tfjoint.strip(joint), tmp_path / "gelu.tflite", validation_data=(x, y),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",)))
    assert report.passed and "GELU" not in report.ops and {"LOGISTIC", "MUL"} <= set(report.ops)
    assert any("x * sigmoid(1.702 x)" in note for note in report.notes)


_FAIL_AFTER_TRAINING = """
from tfjoint import errors
from tfjoint.app import pipeline

def _fail(*args, **kwargs):
    raise {error}

pipeline._export_and_plot = _fail
"""


@pytest.mark.slow
def test_a_failure_after_training_leaves_a_report_and_an_error_log(tmp_path):
    """A tfjoint error after training (the file cannot be made or validated) exits 1, anything else (a bug) 3; both
    leave report.json (what is known) and error.log (the traceback). Both runs in one process."""
    cases = [("errors.DeviceError('TensorFlow Lite Micro cannot run this file at operator GELU #3', "
              "operator='GELU #3', tensor='dense/gelu')", tmp_path / "device", 1),
             ("RuntimeError('a bug')", tmp_path / "bug", 3)]
    runs = tfjoint_cli_runs(*([f"--out={out}", "--epochs=1", "--float_epochs=1"] for _, out, _ in cases),
                            setups=[_FAIL_AFTER_TRAINING.format(error=error) for error, _, _ in cases])
    for (error, out, status), (exit_status, stderr) in zip(cases, runs, strict=True):
        assert exit_status == status, (error, stderr[-2000:])
        report = json.loads((out / "report.json").read_text())
        assert report["passed"] is False and report["status"] == "FAILED after training"
        assert report["run"]["history"]["loss"] and report["run"]["allocation"]["target"] == 0.8  # the default
        assert "Traceback" in (out / "error.log").read_text()
        assert "report.json has what is known" in stderr
        if status == 1:
            assert report["error"]["operator"] == "GELU #3" and report["error"]["tensor"] == "dense/gelu"


@pytest.mark.slow
def test_a_tflm_failure_names_the_operator_and_its_tensor():
    from tfjoint.tflite import convert, tflm

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs))
    content = convert.to_int8(model, [np.random.default_rng(0).random((8, 4), dtype=np.float32)])
    error = tflm.device_error(content, "Node FULLY_CONNECTED (number 0f) failed to prepare with status 1", 1 << 20)
    assert error.operator == "FULLY_CONNECTED #0" and error.tensor
    assert "at operator FULLY_CONNECTED #0" in str(error) and "its Prepare failed" in str(error)
    assert os.path.basename(error.tensor)  # the output tensor the operator writes
