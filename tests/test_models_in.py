"""Models in: Keras 3 models (in memory and as .keras / .h5 files) rebuilt in tf_keras, checked, and refused clearly."""

import keras as keras3
import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint
from tfjoint.bridge.equivalence import check_equivalent, max_relative_difference
from tfjoint.bridge.translate import rebuild_in_tf_keras


def _mlp():
    keras3.utils.set_random_seed(0)
    return keras3.Sequential([keras3.Input((12,), name="features"), keras3.layers.Dense(16, activation="relu"),
                              keras3.layers.Dropout(0.1), keras3.layers.Dense(3, activation="softmax")], name="mlp")


def _residual():
    keras3.utils.set_random_seed(1)
    inputs = keras3.Input((8, 8, 3), name="image")
    x = keras3.layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = keras3.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem",
                             kernel_regularizer=keras3.regularizers.L2(1e-4))(x)
    x = keras3.layers.BatchNormalization(name="stem_bn")(x)
    x = keras3.layers.ReLU(name="stem_relu")(x)
    y = keras3.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras3.layers.BatchNormalization(name="dw_bn")(y)
    y = keras3.layers.ReLU(6.0, name="dw_relu")(y)
    x = keras3.layers.Add(name="residual")([x, y])
    x = keras3.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras3.Model(inputs, keras3.layers.Dense(4, activation="softmax", name="head")(x), name="residual")


def _conv1d():
    keras3.utils.set_random_seed(2)
    inputs = keras3.Input((40, 6), name="mfcc")
    normalization = keras3.layers.Normalization(name="norm")
    normalization.adapt(np.random.default_rng(0).random((64, 40, 6)) * 3)
    x = normalization(inputs)
    x = keras3.layers.Conv1D(12, 5, use_bias=False, name="conv1d")(x)
    x = keras3.layers.BatchNormalization(name="conv1d_bn")(x)
    x = keras3.layers.Activation("relu", name="conv1d_relu")(x)
    x = keras3.layers.MaxPooling1D(name="pool")(x)
    x = keras3.layers.Conv1D(12, 3, padding="same", activation="relu", name="conv1d_2")(x)
    x = keras3.layers.Flatten(name="flatten")(x)
    return keras3.Model(inputs, keras3.layers.Dense(3, activation="softmax", name="keyword")(x), name="kws")


def _renamed_arguments():
    """Layers whose Keras 3 config differs from tf_keras's by more than format: a renamed argument
    (LeakyReLU's negative_slope is tf_keras's alpha) and one read from **kwargs (LayerNormalization's
    rms_scaling); the slope is not the default, so a dropped argument would change the outputs."""
    keras3.utils.set_random_seed(3)
    inputs = keras3.Input((10,), name="features")
    x = keras3.layers.Dense(16, name="fc")(inputs)
    x = keras3.layers.LeakyReLU(negative_slope=0.05, name="leaky")(x)
    x = keras3.layers.LayerNormalization(name="ln")(x)
    return keras3.Model(inputs, keras3.layers.Dense(3, activation="softmax", name="head")(x), name="renamed")


def _hard_swish_fused():
    """`activation="hard_swish"` inside a Conv2D and a Dense: Keras 3 stores it as 'hard_silu', which tf_keras does
    not have (the layer is rebuilt linear, followed by tfjoint's HardSwish)."""
    keras3.utils.set_random_seed(4)
    inputs = keras3.Input((6, 6, 2), name="image")
    x = keras3.layers.Conv2D(8, 3, activation="hard_swish", name="conv")(inputs)
    x = keras3.layers.Flatten(name="flatten")(x)
    x = keras3.layers.Dense(8, activation="hard_swish", name="fc")(x)
    return keras3.Model(inputs, keras3.layers.Dense(3, activation="softmax", name="head")(x), name="hard_swish")


def _hard_sigmoid():
    """Keras 3's hard_sigmoid is relu6(x + 3) / 6, tf_keras's 0.2 x + 0.5 (clipped): the same name, other values."""
    keras3.utils.set_random_seed(5)
    inputs = keras3.Input((6, 6, 2), name="image")
    x = keras3.layers.Conv2D(8, 3, activation="hard_sigmoid", name="conv")(inputs)
    x = keras3.layers.Activation("hard_sigmoid", name="gate")(keras3.layers.Conv2D(8, 1, name="pointwise")(x))
    x = keras3.layers.Dense(8, activation="hard_sigmoid", name="fc")(keras3.layers.Flatten(name="flatten")(x))
    return keras3.Model(inputs, keras3.layers.Dense(3, activation="softmax", name="head")(x), name="hard_sigmoid")


MODELS = {"mlp": (_mlp, (12,)), "hard_sigmoid": (_hard_sigmoid, (6, 6, 2)), "residual": (_residual, (8, 8, 3)),
          "conv1d": (_conv1d, (40, 6)),
          "renamed_arguments": (_renamed_arguments, (10,)), "hard_swish_fused": (_hard_swish_fused, (6, 6, 2))}


def _trained(name):
    build, shape = MODELS[name]
    model = build()
    rng = np.random.default_rng(0)
    x = rng.random((64,) + shape, dtype=np.float32) * (255 if name == "residual" else 1)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, 3, 64), epochs=1, verbose=0)  # moves BN statistics off their defaults
    return model, x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_tf_keras_rebuild_computes_what_the_keras3_model_computes(name):
    model3, x = _trained(name)
    model = tfjoint.from_keras3(model3, sample_inputs=x)
    assert isinstance(model, keras.Model) and type(model).__module__.startswith("tf_keras")
    assert [layer.name for layer in model.layers if layer.weights] == [layer.name for layer in model3.layers
                                                                        if layer.weights]
    for layer3 in model3.layers:
        for a, b in zip(layer3.get_weights(), model.get_layer(layer3.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert max_relative_difference(model3.predict(x, verbose=0), model.predict(x, verbose=0)) <= 1e-5
    if name == "residual":  # the L2 regularizer came across, for fine-tuning
        assert len(model.losses) == 1
    if name == "renamed_arguments":
        assert model.get_layer("leaky").alpha == pytest.approx(0.05)
    if name == "hard_sigmoid":  # as MobileNetV3's raw form: + 3, ReLU(6), / 6 (TFLM has no HARD_SIGMOID)
        assert [type(layer).__name__ for layer in model.layers].count("Affine") == 6


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_files_saved_by_keras3_load_as_tf_keras_models(tmp_path, suffix):
    model3, x = _trained("residual")
    path = tmp_path / f"model{suffix}"
    model3.save(str(path))
    model = tfjoint.load_model(str(path), sample_inputs=x)
    assert type(model).__module__.startswith("tf_keras")
    assert max_relative_difference(model3.predict(x, verbose=0), model.predict(x, verbose=0)) <= 1e-5


def test_a_keras3_model_goes_through_prepare_and_prunes():
    model3, x = _trained("conv1d")
    joint = tfjoint.prepare(model3, tfjoint.JointSchedule(0.5, end_step=4, frequency=2), sample_inputs=x)
    joint.compile("adam", "sparse_categorical_crossentropy")
    joint.fit(x, np.zeros(64), batch_size=16, verbose=0)
    sparsity = tfjoint.inspect.layer_sparsity(joint)
    assert set(sparsity) == {"conv1d", "conv1d_2", "keyword"}
    assert all(value == pytest.approx(0.5, abs=0.02) for value in sparsity.values())


def test_the_first_diverging_layer_is_named():
    model3, x = _trained("residual")
    model = rebuild_in_tf_keras(model3)
    kernel = model.get_layer("dw").get_weights()[0]
    model.get_layer("dw").set_weights([kernel * 1.5])  # as if its translation were wrong
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="layer 'dw' \\(DepthwiseConv2D\\) is the first"):
        check_equivalent(model3, model, [x])


def test_untranslatable_layers_are_all_named_with_what_to_do():
    class Twice(keras3.layers.Layer):  # keras.ops arithmetic alone would be rebuilt; a cumulative sum is not
        def call(self, x):
            return keras3.ops.cumsum(x, axis=-1) * 2

    inputs = keras3.Input((4,))
    x = keras3.layers.Lambda(lambda z: z + 1, name="plus_one")(inputs)
    x = Twice(name="twice")(x)
    model3 = keras3.Model(inputs, keras3.layers.Dense(2)(x))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError) as caught:
        tfjoint.prepare(model3, tfjoint.JointSchedule(0.5, end_step=10))
    message = str(caught.value)
    assert "'plus_one' (Lambda)" in message and "'twice' (Twice)" in message and "keras.ops.cumsum" in message
    assert "built-in layer" in message and "tfjoint.register_layer(YourLayer" in message


def test_a_raw_keras_op_tfjoint_cannot_rebuild_is_named():
    inputs = keras3.Input((4,))
    model3 = keras3.Model(inputs, keras3.layers.Dense(2, name="head")(keras3.ops.sqrt(inputs)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="raw keras.ops.sqrt call.*use a Keras layer"):
        tfjoint.from_keras3(model3)


def _dict_input_encoder():
    """A model of named inputs, as keras_hub's backbones are (`{"token_ids": ..., "padding_mask": ...}`)."""
    ids, weights = keras3.Input((6,), name="token_ids"), keras3.Input((6,), name="padding_mask")
    mixed = keras3.layers.Add()([keras3.layers.Dense(4, name="from_ids")(ids),
                                 keras3.layers.Dense(4, name="from_mask")(weights)])
    return keras3.Model({"token_ids": ids, "padding_mask": weights}, mixed, name="encoder")


def test_a_nested_model_called_with_a_dict_of_its_named_inputs_is_rebuilt():
    """`backbone({"token_ids": t, "padding_mask": m})`, the way keras_hub's docs call a backbone; the dict's order
    is not the model's."""
    keras3.utils.set_random_seed(0)
    encoder = _dict_input_encoder()
    mask, ids = keras3.Input((6,), name="mask"), keras3.Input((6,), name="ids")
    model3 = keras3.Model([mask, ids], keras3.layers.Dense(2)(encoder({"padding_mask": mask, "token_ids": ids})))
    rng = np.random.default_rng(0)
    x = [rng.random((8, 6)).astype(np.float32), rng.random((8, 6)).astype(np.float32)]
    model = tfjoint.from_keras3(model3, x)
    np.testing.assert_allclose(model.predict(x, verbose=0), model3.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_subclassed_keras3_model_is_refused_with_what_to_do():
    class Net(keras3.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras3.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3), np.float32))
    with pytest.raises(tfjoint.errors.ModelTypeError, match="subclassed.*Functional API"):
        tfjoint.prepare(net, tfjoint.JointSchedule(0.5, end_step=10))


def test_an_exported_savedmodel_is_refused_pointing_to_the_keras_file(tmp_path):
    model3, _ = _trained("mlp")
    model3.export(str(tmp_path / "exported"), verbose=False)
    with pytest.raises(tfjoint.errors.ModelStructureError, match="without a Keras model config.*\\.keras file"):
        tfjoint.load_model(str(tmp_path / "exported"))


def test_file_messages_name_the_real_cause(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(tfjoint.errors.ModelStructureError, match="unknown model file type"):
        tfjoint.load_model(str(tmp_path / "notes.txt"))
    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(tfjoint.errors.ModelStructureError, match="not a Keras .keras file"):
        tfjoint.load_model(str(tmp_path / "broken.keras"))
    model3, _ = _trained("mlp")
    model3.save_weights(str(tmp_path / "only.weights.h5"))
    with pytest.raises(tfjoint.errors.ModelStructureError, match="weights only"):
        tfjoint.load_model(str(tmp_path / "only.weights.h5"))
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        tfjoint.load_model(str(tmp_path / "nope.keras"))


def test_float_tf_keras_files_of_every_format_load(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    x = np.ones((2, 5), np.float32)
    for name in ("m.keras", "m.h5", "m_dir"):
        model.save(str(tmp_path / name))
        loaded = tfjoint.load_model(str(tmp_path / name))
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
