"""What a newcomer meets first: a report and plots that never mislead, files like any other, errors that help.

Each test here failed on the previous release (see the issue "first hour").
"""

import os
import stat

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint
from tfjoint.app import plots
from tfjoint.export import compare

pytestmark = pytest.mark.slow  # conversions


def _cnn_with_a_lone_batchnorm():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.BatchNormalization(name="lone_bn")(x)  # after pooling: nothing folds it
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="classes")(x))


@pytest.fixture(scope="module")
def lone_bn_report(digits_data, tmp_path_factory):
    model = _cnn_with_a_lone_batchnorm()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits_data["x_train"], digits_data["y_train"], epochs=2, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=20, frequency=5))
    joint.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    joint.fit(digits_data["x_train"], digits_data["y_train"], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("bn") / "m.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path), float_model=model,
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]),
                                   options=tfjoint.ExportOptions(quantization="qat"))
    return report, path


def test_only_pruned_layers_are_in_the_pruned_layer_table(lone_bn_report):
    report, _ = lone_bn_report
    assert set(report.per_layer_sparsity) == {"conv", "classes"}  # not the BatchNorm run as a depthwise conv
    assert all(entry["planned"] == 0.5 for entry in report.per_layer_sparsity.values())
    assert "lone_bn " not in str(report).split("pruned layer")[1]


def test_channel_rows_always_know_their_original_count(lone_bn_report):
    report, _ = lone_bn_report
    assert report.per_layer_channels and all(e["original"] is not None for e in report.per_layer_channels.values())


def test_a_softmax_classifier_gets_no_regression_advice(lone_bn_report):
    report, _ = lone_bn_report
    assert not any("Scale the targets" in note for note in report.notes)


def test_the_schedule_plot_shows_the_size_weighted_target():
    schedule = tfjoint.JointSchedule(target_sparsity={"small": 0.1, "large": 0.9}, end_step=10, frequency=1)
    sizes = {"small": 100, "large": 900}
    curve = plots.scheduled_curve(schedule, 12, sizes)
    assert curve[-1] == pytest.approx((0.1 * 100 + 0.9 * 900) / 1000)  # 0.82, what the measured points show


def test_the_float_models_own_figures_are_not_called_qat(digits_float_model, digits_data, tmp_path):
    report = tfjoint.export_tflite(digits_float_model, str(tmp_path / "ptq.tflite"),
                                   representative_data=digits_data["x_calib"],
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]))
    assert report.quantization == "post_training" and report.keras_accuracy is not None
    assert report.qat_accuracy is None
    saved = report.to_dict()
    assert saved["qat_accuracy"] is None and "keras_accuracy" in saved  # every key the README documents is there
    assert "Keras model converted (pruned float) accuracy" in str(report)


def test_an_accuracy_drop_of_exactly_the_tolerance_passes():
    entry = {"sqnr_db": 30.0, "classifier": True, "top1_agreement": 1.0, "keras_accuracy": 0.9260,
             "int8_accuracy": 0.9060}
    assert compare.failures({"classes": entry}, tfjoint.Tolerances(max_accuracy_drop=0.02)) == []
    entry["int8_accuracy"] = 0.9050
    assert len(compare.failures({"classes": entry}, tfjoint.Tolerances(max_accuracy_drop=0.02))) == 1
    entry.update(int8_accuracy=0.9060, float_accuracy=0.9560)  # the total drop is gated only when asked
    assert compare.failures({"classes": entry}, tfjoint.Tolerances(max_accuracy_drop=0.02)) == []
    assert len(compare.failures({"classes": entry}, tfjoint.Tolerances(max_total_drop=0.04))) == 1


def test_the_file_keeps_the_models_input_order_and_the_users_output_names(tmp_path):
    image = keras.Input((8, 8, 1), name="image")
    meta = keras.Input((3,), name="meta")
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="conv")(image))
    x = keras.layers.Concatenate()([x, keras.layers.Dense(4, name="embed")(meta)])
    model = keras.Model([image, meta], [keras.layers.Dense(5, activation="softmax", name="classes")(x),
                                        keras.layers.Dense(1, name="score")(x)])
    rng = np.random.default_rng(0)
    x_data = [rng.random((32, 8, 8, 1), dtype=np.float32), rng.random((32, 3), dtype=np.float32)]
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=2))
    joint.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    joint.fit(x_data, [rng.integers(0, 5, 32), rng.random(32)], verbose=0)
    tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"),
                          options=tfjoint.ExportOptions(quantization="qat"))
    summary = tfjoint.inspect.read_flatbuffer((tmp_path / "m.tflite").read_bytes())
    assert [t.signature_name for t in summary.inputs] == ["image", "meta"]  # the model's order, not sorted
    assert [t.signature_name for t in summary.outputs] == ["classes", "score"]  # not 'quant_classes'


def test_written_files_honour_the_umask(lone_bn_report, tmp_path):
    _, path = lone_bn_report
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(os.stat(path).st_mode) == expected
    written = tfjoint.write_c_array(path, tmp_path / "c")
    assert stat.S_IMODE(os.stat(written.header).st_mode) == expected
    report_path = tmp_path / "report.json"
    lone_bn_report[0].save_json(str(report_path))
    assert stat.S_IMODE(os.stat(report_path).st_mode) == expected


def test_schedule_of_a_distiller_is_its_students():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8)(inputs)))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.7, end_step=30), check=False)
    distiller = tfjoint.Distiller(joint, model)
    assert tfjoint.inspect.schedule_of(distiller) == joint.schedule
    assert tfjoint.inspect.schedule_of(distiller).target_sparsity == 0.7


def test_a_simple_rnn_refusal_says_what_fits_a_sequence_model():
    inputs = keras.Input((10, 4))
    x = keras.layers.SimpleRNN(8, name="rnn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError) as caught:
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=10))
    message = str(caught.value)
    assert "'rnn' (SimpleRNN)" in message and "Conv1D" in message and "LSTM" in message and "GRU" in message
    assert "preprocessing outside" not in message


def test_inputs_outside_the_int8_inputs_range_are_named(digits_float_model, digits_data, tmp_path):
    """0-255 pixels into a model trained on 0-1: the report says so, not only that accuracy fell."""
    pixels = digits_data["x_val"] * 255.0
    with pytest.raises(tfjoint.ValidationError) as caught:
        tfjoint.export_tflite(digits_float_model, str(tmp_path / "m.tflite"),
                              representative_data=digits_data["x_calib"],
                              validation_data=(pixels, digits_data["y_val"]), float_model=digits_float_model)
    assert "`validation_data`" in str(caught.value) and "outside" in str(caught.value)
    note = str(next(n for n in caught.value.report.notes
                    if n.kind is tfjoint.findings.Kind.DATA_RANGE and n.subject == "validation_data"))
    assert "input 'image'" in note and "Preprocess the data" in note
