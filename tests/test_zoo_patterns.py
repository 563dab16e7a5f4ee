"""Each pattern the keras.applications zoo brought, on a 3-layer model: bridged, prepared, trained, fully int8.

The zoo itself runs in `benchmarks/zoo.py` (minutes per model); here every
fix has a small model that failed before it (MobileNetV3's hard_silu and
raw-op arithmetic, EfficientNetV2's fixed Normalization, DenseNet's average
pooling, ConvNeXt's nested stem and LayerScale, InceptionResNetV2's
CustomScaleLayer).
"""

import keras as keras3
import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint

pytestmark = pytest.mark.slow  # conversions


def _data(shape=(8, 8, 3), n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 4, n)


def _through(model, tmp_path, x, y, **prepare_kwargs):
    """prepare -> one short fit -> strip -> export: the report of a fully int8 file."""
    joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=4, frequency=1, sample_inputs=x[:8],
                            **prepare_kwargs, check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=16, epochs=1, verbose=0)
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"), validation_data=(x, y))
    read_back = tfjoint.inspect.read_flatbuffer(open(tmp_path / "m.tflite", "rb").read())
    assert read_back.fully_int8, [op.name for op in read_back.float_ops]
    return report


def _head(x):
    x = keras3.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras3.layers.Dense(4, activation="softmax", name="classes")(x)


def test_hard_silu_and_raw_op_arithmetic_become_int8_hard_swish_and_depthwise(tmp_path):
    """MobileNetV3: Activation('hard_silu') and a squeeze-excite gate built from raw ops (relu6(x + 3) / 6)."""
    inputs = keras3.Input((8, 8, 3), name="image")
    x = keras3.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras3.layers.Activation("hard_silu", name="hs")(x)
    gate = keras3.layers.Conv2D(8, 1, name="gate_conv")(keras3.layers.GlobalAveragePooling2D(keepdims=True)(x))
    gate = keras3.layers.ReLU(6.0, name="gate_relu")(gate + 3.0) * (1.0 / 6.0)
    x = keras3.layers.Multiply(name="excite")([x, gate])
    model3 = keras3.Model(inputs, _head(x))
    rebuilt = tfjoint.from_keras3(model3)  # checks the outputs match Keras 3's
    kinds = {type(layer).__name__ for layer in rebuilt.layers}
    assert {"HardSwish", "Affine"} <= kinds
    x_data, y_data = _data()
    report = _through(model3, tmp_path, x_data, y_data)
    assert "HARD_SWISH" in report.ops and report.ops.count("DEPTHWISE_CONV_2D") == 2  # + 3 and / 6


def test_a_raw_op_adding_two_tensors_becomes_an_add_layer():
    inputs = keras3.Input((6,))
    a = keras3.layers.Dense(6, name="a")(inputs)
    model3 = keras3.Model(inputs, keras3.layers.Dense(2, name="head")(a + inputs))
    rebuilt = tfjoint.from_keras3(model3)
    assert any(type(layer).__name__ == "Add" for layer in rebuilt.layers)


def test_a_fixed_value_normalization_is_int8(tmp_path):
    """EfficientNetV2's preprocessing: Normalization(mean=..., variance=...) holds constants, not adapted weights."""
    inputs = keras3.Input((8, 8, 3))
    x = keras3.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.05, 0.06, 0.07], name="norm")(inputs)
    x = keras3.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x_data, y_data = _data()
    report = _through(keras3.Model(inputs, _head(x)), tmp_path, x_data, y_data)
    assert report.ops[0] == "DEPTHWISE_CONV_2D"  # the normalization, as an exact 1x1 depthwise


def test_average_pooling_after_a_conv_is_int8(tmp_path):
    """DenseNet's transition: Conv -> AveragePooling2D (the converter wants one scale across the pooling)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="conv")(x)
    x = keras.layers.AveragePooling2D(2, strides=2, name="avg")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(x))
    x_data, y_data = _data()
    report = _through(model, tmp_path, x_data, y_data)
    assert "AVERAGE_POOL_2D" in report.ops


def test_noise_layers_leave_nothing_in_the_file_and_an_average_merge_is_int8(tmp_path):
    """GaussianNoise, GaussianDropout and AlphaDropout train and are the identity at inference (TF-MOT's registry
    does not know them: they were refused); Average's sum was float before its MUL."""
    inputs = keras3.Input((8, 8, 3))
    x = keras3.layers.GaussianNoise(0.1, name="noise")(inputs)
    a = keras3.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
    b = keras3.layers.Conv2D(8, 1, activation="relu", name="b")(x)
    x = keras3.layers.Average(name="average")([a, b, keras3.layers.Conv2D(8, 1, name="c")(x)])
    x = keras3.layers.GaussianDropout(0.1, name="gaussian_dropout")(x)
    x = keras3.layers.AlphaDropout(0.1, name="alpha_dropout")(x)
    model = keras3.Model(inputs, _head(x))
    x_data, y_data = _data()
    x_data[y_data < 3, :, :, y_data[y_data < 3]] += 1.0  # a class per bright channel (and one for none), learned
    model.compile(keras3.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")  # so that no logits are tied
    model.fit(x_data, y_data, epochs=30, batch_size=16, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=4), check=False)  # QAT alone: the layers
    joint.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")  # are what is tested, and pruning
    joint.fit(x_data, y_data, batch_size=16, epochs=1, verbose=0)  # half of an 8-channel model in 3 steps tied logits
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"), validation_data=(x_data, y_data))
    assert report.passed and report.fully_int8
    counts = report.operator_counts
    assert counts["ADD"] == 2 and counts["MUL"] == 1, counts  # the sum, then times 1/3
    assert set(counts) <= {"CONV_2D", "ADD", "MUL", "MEAN", "FULLY_CONNECTED", "SOFTMAX"}, counts


def test_a_nested_stem_and_layer_scale_are_flattened(tmp_path):
    """ConvNeXt: a Sequential stem inside the Functional model, and LayerScale (a per-channel gamma)."""
    from keras.src.applications.convnext import LayerScale

    stem = keras3.Sequential([keras3.layers.Conv2D(8, 2, strides=2, name="stem_conv"),
                              keras3.layers.BatchNormalization(name="stem_bn")], name="stem")
    inputs = keras3.Input((8, 8, 3))
    x = stem(inputs)
    x = LayerScale(0.5, 8, name="scale")(keras3.layers.Conv2D(8, 1, name="mix")(x)) + x
    model3 = keras3.Model(inputs, _head(x))
    rebuilt = tfjoint.from_keras3(model3)
    names = [layer.name for layer in rebuilt.layers]
    assert "stem_conv" in names and "stem_bn" in names and "stem" not in names
    x_data, y_data = _data()
    _through(model3, tmp_path, x_data, y_data)


def test_custom_scale_layer_is_an_affine_and_an_add(tmp_path):
    """InceptionResNetV2's residual `CustomScaleLayer(scale)([x, branch])` = x + branch * scale."""
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inputs = keras3.Input((8, 8, 3))
    x = keras3.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    branch = keras3.layers.Conv2D(8, 1, name="branch")(x)
    x = CustomScaleLayer(0.17, name="residual")([x, branch])
    model3 = keras3.Model(inputs, _head(x))
    rebuilt = tfjoint.from_keras3(model3)
    assert type(rebuilt.get_layer("residual")).__name__ == "Add"
    assert rebuilt.get_layer("residual_scale").scale == pytest.approx(0.17)
    x_data, y_data = _data()
    _through(model3, tmp_path, x_data, y_data)


def test_layer_normalization_on_images_runs_as_integer_operators_each_fake_quantized():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="classes")(keras.layers.Flatten()(x)))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), check=False)
    ln = joint.get_layer("quant_ln")
    assert type(ln.layer).__name__ == "IntegerLayerNorm"
    # Each integer operator's output has its own trained range (MEAN, SUB, MUL, RSQRT, ...), named after it.
    ranges = {w.name.split("/")[-1].rsplit("_", 1)[0] for w in ln.weights if w.name.endswith(("_min:0", "_max:0"))}
    assert {"mean", "centered", "variance", "inverse_std", "normalized", "output"} <= ranges
