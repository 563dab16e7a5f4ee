"""Layers TF-MOT leaves in float come out fully int8: Conv1D+BN, Dense+BN, a lone BatchNorm, Rescaling, Normalization."""

import numpy as np
import pytest

import tfjoint
from tfjoint import keras

pytestmark = pytest.mark.slow


def _keyword_data(n, seed):
    """Four noisy spectral sweeps over 40 frames x 6 features: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    t = np.linspace(0, 1, 40)[:, None]
    f = np.arange(6)[None, :]
    clips = np.stack([np.sin(2 * np.pi * ((k + 1) * t + 0.1 * (k + 1) * f / 6)) for k in labels])
    return (clips + 0.8 * rng.standard_normal(clips.shape)).astype(np.float32) * 3 + 2, labels


def _conv1d_bn_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((40, 6), name="mfcc")
    normalization = keras.layers.Normalization(name="norm")
    normalization.adapt(_keyword_data(256, 9)[0])
    x = normalization(inputs)
    x = keras.layers.Conv1D(16, 5, use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling1D(name="pool")(x)
    x = keras.layers.Conv1D(16, 3, use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    x = keras.layers.Dense(16, name="fc")(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    x = keras.layers.ReLU(name="fc_relu")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="keyword")(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    x_train, y_train = _keyword_data(1200, 0)
    x_val, y_val = _keyword_data(400, 1)
    float_model = _conv1d_bn_model()
    float_model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    float_model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    steps = 4 * int(np.ceil(len(x_train) / 32))
    joint = tfjoint.prepare(float_model, schedule=tfjoint.plan_schedule(steps, 0.5))
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    path = str(tmp_path_factory.mktemp("rewrites") / "kws.tflite")
    report = tfjoint.export_tflite(joint, path, validation_data=(x_val, y_val), float_model=float_model)
    return report


def test_conv1d_and_dense_batchnorm_fold_into_an_int8_file(exported):
    assert exported.fully_int8 and exported.passed
    ops = exported.operator_counts
    # Three convolutions with their BatchNorms folded in, the input Normalization as a depthwise 1x1,
    # and no MUL/ADD/DEQUANTIZE left from any BatchNorm.
    assert ops["CONV_2D"] == 3 and ops["DEPTHWISE_CONV_2D"] == 1
    assert not {"MUL", "ADD", "SUB", "DEQUANTIZE"} & set(ops)


def test_folding_keeps_the_accuracy_of_the_float_model(exported):
    assert exported.float_accuracy > 0.8  # the task is learnable: the comparison means something
    assert exported.float_accuracy - exported.int8_accuracy <= 0.02


def test_pruned_layers_keep_the_users_names_and_their_zeros_reach_the_file(exported):
    sparsity = exported.per_layer_sparsity
    assert {"conv1", "conv2", "fc", "keyword"} <= set(sparsity)
    for name in ("conv1", "conv2", "fc", "keyword"):
        assert sparsity[name]["tflite"] == pytest.approx(sparsity[name]["keras"]), name
        assert sparsity[name]["keras"] == pytest.approx(0.5, abs=0.02), name


def test_rescaling_and_a_lone_batchnorm_are_int8_too(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 16.0, offset=-0.5, name="rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.BatchNormalization(name="lone_bn")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="fc")(x))
    from tfjoint.app import digits

    data = digits.load_digits()
    x_train, x_val = data["x_train"] * 16, data["x_val"] * 16  # raw 0..16 pixel values: the model rescales
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, data["y_train"], epochs=12, verbose=0)
    # Nothing pruned: what is measured is the rewrites (and int8), not the sparsity of an 8-filter conv.
    joint = tfjoint.prepare(model, target_sparsity=0.0, end_step=40, frequency=10)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x_train, data["y_train"], epochs=3, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "m.tflite"), validation_data=(x_val, data["y_val"]),
                                   float_model=model)
    assert report.fully_int8 and report.passed and report.float_accuracy > 0.9
    assert report.operator_counts["DEPTHWISE_CONV_2D"] == 2  # the Rescaling and the lone BatchNorm
    low, high = report.inputs[0]["float_range"]
    assert low <= 0.0 and high >= 15.9  # the int8 input takes raw pixels, as the float model does
