"""export_tflite: a fully int8 file, read back from its bytes and run in LiteRT."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tfjoint
from tfjoint.export.candidates import _not_int8_error
from tfjoint.inspect import read_flatbuffer
from tfjoint.tflite.convert import to_float32

pytestmark = pytest.mark.slow

REQUIRED_KEYS = {
    "tflite_path", "size_bytes", "gzip_size_bytes", "float_gzip_size_bytes", "weight_sparsity", "per_layer_sparsity",
    "fully_int8", "ops", "float_accuracy", "int8_accuracy", "top1_agreement", "sqnr_db", "passed",
}


@pytest.fixture(scope="module")
def float_model(digits_float_model):
    return digits_float_model


@pytest.fixture(scope="module")
def joint(digits_joint):
    return digits_joint


@pytest.fixture(scope="module")
def exported(joint, float_model, digits_data, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "model.tflite")
    report = tfjoint.export_tflite(
        joint, path, representative_data=digits_data["x_calib"],
        validation_data=(digits_data["x_val"], digits_data["y_val"]), float_model=float_model)
    return path, report


def _interpreter(path):
    interpreter = Interpreter(model_path=path,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def test_file_is_fully_int8_when_read_back(exported):
    path, report = exported
    interpreter = _interpreter(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    assert [d["dtype"] for d in interpreter.get_input_details()] == [np.int8]
    assert [d["dtype"] for d in interpreter.get_output_details()] == [np.int8]
    assert not [t["name"] for t in tensors.values() if t["dtype"] in (np.float32, np.float16)]
    weight_ops = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(weight_ops) == 4
    for op in weight_ops:
        assert tensors[op["inputs"][1]]["dtype"] == np.int8
        assert tensors[op["inputs"][2]]["dtype"] == np.int32
    assert report.fully_int8 and report.passed
    assert "CONV_2D" in report.ops and "DEQUANTIZE" not in report.ops
    # quantization="auto" with representative data: the QAT file and post-training quantization of the same pruned
    # weights were both validated, and one shipped on evidence: more accurate by a paired test, else the smaller.
    candidates = report.quantization_candidates
    assert set(candidates) == {"qat", "post_training"}
    decision = report.quantization_decision
    assert decision["shipped"] == report.quantization and decision["rule"] in str(report)
    other = next(name for name in candidates if name != report.quantization)
    if decision["p_value"] is not None and decision["p_value"] < 0.05:
        assert candidates[report.quantization]["int8_accuracy"] > candidates[other]["int8_accuracy"]
    else:
        assert candidates[report.quantization]["size_bytes"] <= candidates[other]["size_bytes"]
    assert report.int8_accuracy == candidates[report.quantization]["int8_accuracy"]


def test_zeros_survive_into_the_int8_weights(exported, joint):
    path, report = exported
    interpreter = _interpreter(path)
    zeros = total = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            values = interpreter.get_tensor(op["inputs"][1])
            zeros += np.count_nonzero(values == 0)
            total += values.size
    assert zeros / total == pytest.approx(report.weight_sparsity)
    assert report.weight_sparsity == pytest.approx(0.8, abs=0.005)
    assert set(report.per_layer_sparsity) == {"conv1", "conv2", "fc1", "classes"}
    for name, entry in report.per_layer_sparsity.items():
        assert entry["tflite"] == pytest.approx(entry["keras"]), name
        assert entry["keras"] == pytest.approx(0.8, abs=0.01), name


def test_reported_accuracy_is_what_litert_computes(exported, float_model, digits_data):
    path, report = exported
    runner = Interpreter(model_path=path).get_signature_runner()
    (in_name, in_details), = runner.get_input_details().items()
    (out_name, out_details), = runner.get_output_details().items()
    scale, zero_point = in_details["quantization"]
    x = np.clip(np.round(digits_data["x_val"] / scale + zero_point), -128, 127).astype(np.int8)
    predictions = np.concatenate([np.argmax(runner(**{in_name: x[i : i + 50]})[out_name], -1)
                                  for i in range(0, len(x), 50)])
    assert report.int8_accuracy == pytest.approx(np.mean(predictions == digits_data["y_val"]))
    assert report.num_validation_samples == len(x)
    assert report.top1_agreement > 0.95 and report.sqnr_db > 15
    # The file loses at most the default gate's accuracy against the quantization-aware model it was converted from.
    # What 80% pruning and two epochs cost against the float model is reported, not gated (Tolerances): it depends
    # on training's numerics (1.3 points with TensorFlow's default thread pools, 3.3 with one thread, same code).
    assert report.keras_accuracy - report.int8_accuracy <= tfjoint.Tolerances().max_accuracy_drop
    float_predictions = np.argmax(float_model.predict(digits_data["x_val"], verbose=0), -1)
    assert report.float_accuracy == pytest.approx(np.mean(float_predictions == digits_data["y_val"]))


@pytest.mark.benchmark
def test_latency_is_measured_for_both_files_and_both_thread_counts(joint, float_model, digits_data, tmp_path):
    report = tfjoint.export_tflite(joint, str(tmp_path / "m.tflite"), representative_data=digits_data["x_calib"],
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]),
                                   float_model=float_model, options=tfjoint.ExportOptions(measure_latency=True))
    assert set(report.latency_ms) == {"int8", "float", "int8_builtin"} and set(report.latency_ms["int8"]) == {"1", "4"}
    assert report.int8_latency_ms == report.latency_ms["int8"]["1"] > 0 and report.float_latency_ms > 0
    assert report.memory["int8_peak_rss_bytes"] > report.memory["weights_bytes"]
    assert "1 / 4 threads" in str(report)


def test_report_sizes_and_json(exported, tmp_path):
    path, report = exported
    assert report.size_bytes == os.path.getsize(path)
    assert report.float_gzip_size_bytes > 2 * report.gzip_size_bytes
    assert report.latency_ms == {} and report.memory["int8_peak_rss_bytes"] is None  # measured only when asked
    data = report.to_dict()
    assert REQUIRED_KEYS <= set(data)
    report.save_json(str(tmp_path / "report.json"))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["weight_sparsity"] == pytest.approx(report.weight_sparsity)
    text = str(report)
    assert "fully int8" in text and "conv1" in text


def test_failed_validation_raises_and_keeps_the_existing_file(joint, digits_data, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"the good model from yesterday")
    rejected = tmp_path / "rejected.tflite"
    with pytest.raises(tfjoint.ValidationError, match="min_sqnr_db") as caught:
        tfjoint.export_tflite(joint, str(path), validation_data=(digits_data["x_val"], digits_data["y_val"]),
                              options=tfjoint.ExportOptions(keep_rejected=str(rejected),
                                                            tolerances=tfjoint.Tolerances(min_sqnr_db=500.0)))
    assert path.read_bytes() == b"the good model from yesterday"
    assert caught.value.report.passed is False and caught.value.report.failures
    assert read_flatbuffer(rejected.read_bytes()).fully_int8
    assert sorted(os.listdir(tmp_path)) == ["model.tflite", "rejected.tflite"]  # no temp files left


def test_multi_output_model_gets_metrics_per_output(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,), name="features")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    classes = keras.layers.Dense(4, activation="softmax", name="classes")(hidden)
    value = keras.layers.Dense(1, name="value")(hidden)
    model = keras.Model(inputs, [classes, value])
    rng = np.random.default_rng(0)
    x = rng.random((256, 12), dtype=np.float32)
    y_cls, y_val = (x[:, :4].argmax(1)), x.sum(1, keepdims=True)
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    model.fit(x, [y_cls, y_val], epochs=20, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=16, frequency=4), check=False)
    joint.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    joint.fit(x, [y_cls, y_val], epochs=4, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "m.tflite"), validation_data=(x, [y_cls, None]),
                                   float_model=model)
    assert set(report.per_output) == {"classes", "value"}
    assert "int8_accuracy" in report.per_output["classes"]
    assert "int8_accuracy" not in report.per_output["value"] and report.per_output["value"]["sqnr_db"] > 15
    assert report.fully_int8 and report.int8_accuracy is not None


def test_conv1d_model_exports_fully_int8_with_its_zeros(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((40, 6), name="mfcc")
    x = keras.layers.Conv1D(16, 5, activation="relu", name="conv1d")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    rng = np.random.default_rng(0)
    x_data = rng.random((128, 40, 6), dtype=np.float32)
    y = rng.integers(0, 3, 128)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.75, end_step=8, frequency=2), check=False)
    joint.compile("adam", "sparse_categorical_crossentropy")
    joint.fit(x_data, y, epochs=3, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "kws.tflite"), validation_data=x_data, float_model=model)
    assert report.fully_int8 and "CONV_2D" in report.ops
    assert report.per_layer_sparsity["conv1d"]["tflite"] == pytest.approx(report.per_layer_sparsity["conv1d"]["keras"])
    assert report.per_layer_sparsity["conv1d"]["tflite"] == pytest.approx(0.75, abs=0.01)
    assert report.int8_accuracy is None  # no labels given


def test_float_model_falls_back_to_post_training_quantization(float_model, digits_data, tmp_path):
    report = tfjoint.export_tflite(float_model, str(tmp_path / "ptq.tflite"),
                                   representative_data=digits_data["x_calib"],
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]))
    assert report.quantization == "post_training" and report.fully_int8
    assert any("post-training" in note for note in report.notes)
    with pytest.raises(tfjoint.errors.ModelStructureError, match="representative_data"):
        tfjoint.export_tflite(float_model, str(tmp_path / "x.tflite"))


def test_representative_data_as_dataset_or_generator(float_model, digits_data, tmp_path):
    x = digits_data["x_calib"][:32]
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(8)
    report = tfjoint.export_tflite(float_model, str(tmp_path / "a.tflite"), representative_data=dataset)
    assert report.fully_int8

    def generator():
        for row in x:
            yield row
    report = tfjoint.export_tflite(float_model, str(tmp_path / "b.tflite"), representative_data=generator)
    assert report.fully_int8


def test_a_float_flatbuffer_is_named_as_not_int8(float_model):
    summary = read_flatbuffer(to_float32(float_model))
    assert not summary.fully_int8
    error = _not_int8_error(summary, [layer.name for layer in float_model.layers], "post_training")
    assert "CONV_2D (from layer 'conv1'" in str(error) and "Exclude or replace" in str(error)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(representative_data=np.zeros((4, 8, 8))), tfjoint.errors.DataError,
         r"input 'image' has shape \(4, 8, 8\)"),
        (dict(representative_data=np.zeros((0, 8, 8, 1))), tfjoint.errors.DataError, "empty"),
        (dict(representative_data=np.array([["a"] * 64] * 2).reshape(2, 8, 8, 1)), tfjoint.errors.DataError, "dtype"),
        (dict(representative_data=lambda: iter([])), tfjoint.errors.DataError, "yielded no samples"),
        (dict(validation_data=(np.full((2, 8, 8, 1), np.nan, np.float32), np.zeros(2))), tfjoint.errors.DataError,
         "NaN"),
        (dict(validation_data=(np.zeros((3, 8, 8, 1)), np.zeros(2))), tfjoint.errors.DataError,
         "2 labels for 3 samples"),
        (dict(min_agreement=1.5), tfjoint.ConfigError, "min_agreement"),
    ],
)
def test_bad_input_gets_a_clear_error(joint, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        tfjoint.export_tflite(joint, str(tmp_path / "m.tflite"), **kwargs)
    assert not os.listdir(tmp_path)


def test_bad_path_and_model_are_named(joint, tmp_path):
    with pytest.raises(tfjoint.ConfigError, match="does not exist"):
        tfjoint.export_tflite(joint, str(tmp_path / "missing" / "m.tflite"))
    with pytest.raises(tfjoint.ConfigError, match="is a directory"):
        tfjoint.export_tflite(joint, str(tmp_path))
    with pytest.raises(tfjoint.errors.ModelTypeError, match="tf_keras"):
        tfjoint.export_tflite("model.h5", str(tmp_path / "m.tflite"))


def test_fixed_batch_model_is_validated_in_padded_batches(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,), batch_size=4, name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(hidden))
    x = np.random.default_rng(0).random((40, 12), dtype=np.float32)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2), check=False)
    joint.compile("adam", "sparse_categorical_crossentropy")
    joint.fit(x, x[:, :3].argmax(1), batch_size=4, epochs=1, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "m.tflite"), validation_data=x[:10])
    assert report.num_validation_samples == 10 and report.fully_int8
    assert report.top1_agreement >= 0.95


def test_a_layer_with_no_int8_kernel_gets_an_export_error_naming_it(tmp_path):
    """End to end: an op TFLite runs only in float (SIN) leaves a float island; ExportError names its layer."""
    import tensorflow as tf

    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(tf.math.sin, name="sine")(hidden))
    path = tmp_path / "m.tflite"
    path.write_bytes(b"the good model")
    with pytest.raises(tfjoint.errors.ExportError, match="not fully int8: .*SIN \\(.*float tensor.*Exclude or replace"):
        tfjoint.export_tflite(model, str(path), representative_data=np.ones((8, 4), np.float32))
    assert path.read_bytes() == b"the good model"


def test_pruned_depthwise_zeros_reach_the_int8_file(tmp_path):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    x = keras.layers.Conv2D(4, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=2, frequency=1),
                            layers=tfjoint.LayerSelection(prune_depthwise=True), check=False)
    joint.compile("adam", "mse")
    x_data = np.random.default_rng(0).random((8, 8, 8, 4), dtype=np.float32)
    joint.fit(x_data, np.zeros((8, 2)), batch_size=4, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "dw.tflite"), validation_data=x_data)
    depthwise = [w for w in report.flatbuffer.weights if w.op_name == "DEPTHWISE_CONV_2D"]
    assert len(depthwise) == 1 and depthwise[0].zeros / depthwise[0].size == pytest.approx(0.5, abs=0.03)
    assert report.per_layer_sparsity["dw"]["tflite"] == pytest.approx(report.per_layer_sparsity["dw"]["keras"])
    interpreter = _interpreter(str(tmp_path / "dw.tflite"))
    op = next(op for op in interpreter._get_ops_details() if op["op_name"] == "DEPTHWISE_CONV_2D")
    values = interpreter.get_tensor(op["inputs"][1])
    assert values.dtype == np.int8 and np.mean(values == 0) == pytest.approx(depthwise[0].zeros / depthwise[0].size)


def test_load_strip_export(joint, digits_data, tmp_path):
    saved = str(tmp_path / "joint.h5")
    joint.save(saved)
    stripped = tfjoint.strip(tfjoint.load_model(saved))
    report = tfjoint.export_tflite(stripped, str(tmp_path / "m.tflite"),
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]))
    direct = read_flatbuffer(tfjoint.tflite.convert.to_int8(tfjoint.strip(joint)))
    assert report.fully_int8 and report.passed
    assert report.weight_sparsity == pytest.approx(direct.weight_sparsity)
    for ours, theirs in zip(report.flatbuffer.weights, direct.weights):
        np.testing.assert_array_equal(ours.values, theirs.values)


def test_a_keras3_model_with_named_outputs_validates_with_labels_by_those_names(tmp_path):
    """Keras 3 writes dict outputs as a dict of endpoints; labels keyed by the user's output names match the
    prepared model's 'quant_<name>' outputs."""
    import keras as keras3

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((12,), name="features")
    hidden = keras3.layers.Dense(32, activation="relu", name="hidden")(inputs)
    model3 = keras3.Model(inputs, {"classes": keras3.layers.Dense(4, activation="softmax", name="classes")(hidden),
                                   "value": keras3.layers.Dense(1, name="value")(hidden)})
    rng = np.random.default_rng(0)
    x = rng.random((256, 12), dtype=np.float32)
    y = {"classes": x[:, :4].argmax(1), "value": x.sum(1, keepdims=True)}
    losses = {"classes": "sparse_categorical_crossentropy", "value": "mse"}
    model3.compile("adam", losses)
    model3.fit(x, y, epochs=10, verbose=0)
    joint = tfjoint.prepare(model3, tfjoint.JointSchedule(0.5, end_step=16, frequency=4), sample_inputs=x, check=False)
    joint.compile("adam", losses)
    joint.fit(x, y, epochs=2, batch_size=32, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "named.tflite"), validation_data=(x, y))
    assert report.fully_int8 and report.passed
    assert report.per_output["classes"]["int8_accuracy"] == pytest.approx(report.int8_accuracy)
    assert "int8_mse" in report.per_output["value"]  # its labels reached it, by name
    with pytest.raises(tfjoint.errors.DataError, match=r"outputs \['nope'\].*\['classes', 'value'\]"):
        tfjoint.export_tflite(joint, str(tmp_path / "bad.tflite"), validation_data=(x, {"nope": y["value"]}))


def test_a_conv2d_transpose_model_keeps_its_signature(tmp_path):
    """tf_keras cannot save the layer traces of TF-MOT's Conv2DTranspose QAT wrapper, and the converter then
    silently writes a file with no signature (no named inputs/outputs); export converts through a serving
    function instead."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="down")(inputs)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2, padding="same", activation="relu", name="up")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, name="mask")(x))
    x_data = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2), check=False)
    joint.compile("adam", "mse")
    joint.fit(x_data, x_data, batch_size=16, verbose=0)
    path = tmp_path / "unet.tflite"
    report = tfjoint.export_tflite(joint, str(path), validation_data=(x_data, x_data))
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(path)).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["image"], "outputs": ["mask"]}}
    assert report.fully_int8 and report.operator_counts["TRANSPOSE_CONV"] == 1
    assert report.per_output["mask"]["sqnr_db"] > 20  # the int8 file computes what the QAT model does
    entry = next(e for e in report.per_layer_error if e["layer"] == "up")
    assert entry["qat_sqnr_db"] is not None and entry["qat_sqnr_db"] > 20  # its activations input, not its shape


def test_integer_inputs_are_not_quantized_and_an_embedding_is_taken():
    inputs = keras.Input((12,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 8, name="embedding")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(x))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2))
    tokens = joint.get_layer("tokens")
    # The token ids go straight to the embedding (no input quantizer), whose table is quantized as a weight.
    assert [node.outbound_layer.name for node in tokens._outbound_nodes] == ["quant_embedding"]
    assert joint.predict(np.arange(24).reshape(2, 12) % 100, verbose=0).shape == (2, 2)


def test_a_converter_error_names_the_users_layer_not_an_mlir_location():
    from tfjoint.tflite.convert import _converter_error

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.AveragePooling2D(name="pool1")(keras.layers.Conv2D(4, 1)(inputs)))
    raw = ("/x.py:3:1: error: loc(callsite(fused[\"AvgPool:\", \"model/quant_pool1/AvgPool@__inference_serve_12\"] at "
           "fused[\"StatefulPartitionedCall:\", \"StatefulPartitionedCall\"])): 'tfl.average_pool_2d' op quantization "
           "parameters violate the same scale constraint")
    message = str(_converter_error(RuntimeError(raw), model))
    assert "at layer 'pool1' (AveragePooling2D)" in message
    assert "'tfl.average_pool_2d' op quantization parameters violate the same scale constraint" in message
    assert "loc(" not in message and "__inference" not in message
