"""Keras 3 users meet no tf_keras wall after training: their float model, their own layers, their registrations."""

import numpy as np
import pytest

import tfjoint


def _keras3_scale_class():
    import keras

    @keras.saving.register_keras_serializable(package="test_keras3_all_the_way")
    class Scale(keras.layers.Layer):
        """A user's Keras 3 layer: twice its input (maps 0 to 0, keeps the channels)."""

        def call(self, x):
            return 2.0 * x

    return Scale


def _model(scale_class):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = scale_class(name="scale")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(x))


def test_an_unregistered_keras3_layer_is_refused_pointing_to_register_layer():
    import keras

    class Scale(keras.layers.Layer):
        """Twice its input's cumulative sum: keras.ops arithmetic alone would be rebuilt from call(); cumsum is not."""

        def call(self, x):
            return keras.ops.cumsum(x, axis=-1) * 2.0

    model = _model(Scale)
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match="'scale' \\(Scale\\).*tfjoint.register_layer\\(YourLayer"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))


def test_a_keras3_layer_class_cannot_register_weights_tfjoint_would_prune():
    scale = _keras3_scale_class()
    with tfjoint.registry.scoped(), pytest.raises(tfjoint.ConfigError, match="Scale is a Keras 3 layer.*tf_keras twin"):
        tfjoint.register_layer(scale, channels="follows", pruned_weight="kernel")


@pytest.mark.slow
def test_the_readme_registration_with_import_keras_prunes_channels_through_the_layer_and_exports(tmp_path):
    scale = _keras3_scale_class()
    model = _model(scale)
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 96)
    with tfjoint.registry.scoped():
        tfjoint.register_layer(scale, channels="follows", tflite_ops=("MUL",),
                               quantization=tfjoint.registry.Quantization.output_only())
        joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=4, frequency=1, channel_sparsity=0.5))
        joint.compile("adam", "sparse_categorical_crossentropy")
        joint.fit(x, y, batch_size=16, epochs=1, verbose=0)
        report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"), validation_data=(x, y),
                                       float_model=model,
                                       # float_model: Keras 3
                                       options=tfjoint.ExportOptions(runtimes=("litert", "tflm")))
    assert report.passed and report.fully_int8 and report.operator_counts["MUL"] == 1
    # followed through the scale layer
    assert report.per_layer_channels["conv"] == {"original": 8, "keras": 4, "tflite": 4, "unit": "channels"}
    assert report.float_accuracy is not None and report.per_runtime["tflm"]["int8_accuracy"] is not None


def test_a_keras3_model_with_unnamed_inputs_is_the_float_model_of_its_prepared_model():
    """Keras 3 names an unnamed Input's tensor 'keras_tensor_N' and its layer 'input_layer_N'; inputs are keyed by
    the layer's name, as the bridge names the tf_keras input, so export can compare the two (it used to fail)."""
    import keras

    from tfjoint.data import model_inputs
    from tfjoint.export.arguments import _float_model

    inputs = keras.Input((24, 1))  # no name
    x = keras.layers.Conv1D(8, 3, activation="relu")(inputs)
    x = keras.layers.LSTM(8, return_sequences=True)(x)
    x = keras.layers.LSTM(8)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    assert inputs.name != model.layers[0].name  # the two names Keras 3 gives
    assert [name for name, _ in model_inputs(model)] == [model.layers[0].name]
    samples = np.random.default_rng(0).random((8, 24, 1), dtype=np.float32)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), sample_inputs=samples, check=False)
    rebuilt = _float_model(model, tfjoint.strip(joint))  # export_tflite(float_model=model) does this first
    np.testing.assert_allclose(rebuilt.predict(samples, verbose=0), model.predict(samples, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_data_augmentation_inside_the_model_augments_while_training_and_leaves_nothing_in_the_file(tmp_path):
    """keras.io's image classifiers augment inside the model: the joint fit keeps augmenting, the file (TFLM) holds
    only the classifier (a Resizing as int8 RESIZE_BILINEAR, a Rescaling as a depthwise conv), computing what the
    model computes at inference."""
    import keras

    keras.utils.set_random_seed(0)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1),
                                keras.layers.RandomZoom(0.1), keras.layers.RandomContrast(0.2)], name="augment")
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Resizing(10, 10, name="resize")(augment(inputs))  # keras.io's audio classifier resizes too
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(x))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (64, 12, 12, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 64)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2), check="tflm")
    joint.compile("adam", "sparse_categorical_crossentropy")
    joint.fit(images, labels, batch_size=16, epochs=1, verbose=0, callbacks=tfjoint.callbacks())
    inference = joint(images, training=False).numpy()
    np.testing.assert_array_equal(joint(images, training=False).numpy(), inference)  # no augmentation at inference
    assert not np.allclose(joint(images, training=True).numpy(), inference, atol=1e-3)  # augmented while training
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"), validation_data=(images, labels),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",)))
    assert report.passed and report.thresholds == tfjoint.Tolerances().to_dict()
    ops = tfjoint.inspect.read_flatbuffer((tmp_path / "m.tflite").read_bytes()).op_names
    assert set(ops) == {"RESIZE_BILINEAR", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"}, ops


@pytest.mark.parametrize("framework", ["tf_keras", "keras3"])
def test_a_random_crop_which_crops_at_inference_too_is_refused_before_training_with_what_to_do(framework):
    import importlib

    k = importlib.import_module("tf_keras" if framework == "tf_keras" else "keras")
    inputs = k.Input((12, 12, 3))
    x = k.layers.Conv2D(4, 3, name="conv")(k.layers.RandomCrop(8, 8, name="crop")(inputs))
    model = k.Model(inputs, k.layers.Dense(2, name="classes")(k.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match=r"'crop' \(RandomCrop\): RandomCrop crops \(and resizes\) at inference.*pipeline"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))


def test_time_distributed_dense_is_a_dense_on_the_last_axis_and_other_wrapped_layers_are_refused():
    import keras as keras3
    import tf_keras

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((6, 4), name="series")
    steps = keras3.layers.TimeDistributed(keras3.layers.Dense(3, activation="relu"), name="td")(inputs)
    model3 = keras3.Model(inputs, keras3.layers.Dense(2, name="out")(keras3.layers.Flatten()(steps)))
    x = np.random.default_rng(0).normal(size=(8, 6, 4)).astype(np.float32)
    rebuilt = tfjoint.from_keras3(model3)
    assert type(rebuilt.get_layer("td")) is tf_keras.layers.Dense
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model3.predict(x, verbose=0), atol=1e-5)
    # tf_keras: the same, by substitution in prepare (the same weights, the same names).
    tf_inputs = tf_keras.Input((6, 4))
    wrapped = tf_keras.layers.TimeDistributed(tf_keras.layers.Dense(3), name="td")(tf_inputs)
    tf_model = tf_keras.Model(tf_inputs, tf_keras.layers.Dense(2, name="out")(tf_keras.layers.Flatten()(wrapped)))
    joint = tfjoint.prepare(tf_model, tfjoint.JointSchedule(0.5, end_step=4))
    assert {pk.layer_name for pk in tfjoint.inspect.pruned_kernels(joint)} == {"td", "out"}
    conv_inputs = tf_keras.Input((4, 8, 8, 1))
    conv = tf_keras.layers.TimeDistributed(tf_keras.layers.Conv2D(2, 3), name="frames")(conv_inputs)
    conv_model = tf_keras.Model(conv_inputs, tf_keras.layers.Dense(2)(tf_keras.layers.Flatten()(conv)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match=r"'frames' \(TimeDistributed\): it wraps a Conv2D"):
        tfjoint.prepare(conv_model, tfjoint.JointSchedule(0.5, end_step=4))


def test_strings_and_embedding_masks_are_refused_by_the_layer_that_holds_them():
    import keras as keras3

    texts = keras3.Input((1,), dtype="string")
    vectorize = keras3.layers.TextVectorization(max_tokens=20, output_sequence_length=5, name="vectorize")
    vectorize.adapt(np.array(["a b c", "b c d"]))
    pooled = keras3.layers.GlobalAveragePooling1D()(keras3.layers.Embedding(20, 4)(vectorize(texts)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match=r"'vectorize' \(TextVectorization\): it maps "
                                                                   r"strings to token ids.*dtype='int32'"):
        tfjoint.prepare(keras3.Model(texts, keras3.layers.Dense(2)(pooled)), tfjoint.JointSchedule(0.5, end_step=4))
    tokens = keras3.Input((5,), dtype="int32")
    masked = keras3.layers.Embedding(20, 4, mask_zero=True, name="tokens")(tokens)
    pooled = keras3.layers.GlobalAveragePooling1D()(masked)
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match=r"'tokens' \(Embedding\): it has mask_zero=True"):
        tfjoint.prepare(keras3.Model(tokens, keras3.layers.Dense(2)(pooled)), tfjoint.JointSchedule(0.5, end_step=4))


def test_a_layer_norm_over_one_channel_is_refused_before_training_with_why():
    """keras.io's time-series transformer normalizes a univariate series over its one channel: the output is beta
    whatever the input, and no int8 file computes it (float requantization in LiteRT, an abort in TFLM)."""
    import keras as keras3

    inputs = keras3.Input((16, 1))
    normalized = keras3.layers.LayerNormalization(epsilon=1e-6, name="norm")(inputs)
    pooled = keras3.layers.GlobalAveragePooling1D()(keras3.layers.Dense(4, name="mix")(normalized) + inputs)
    model = keras3.Model(inputs, keras3.layers.Dense(2, name="classes")(pooled))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match=r"'norm' \(LayerNormalization\): it normalizes over one channel.*remove it"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))


def test_a_lambda_layer_in_a_tf_keras_model_is_refused_before_training_with_what_to_write_instead():
    """TF-MOT rebuilds the model from its config, where Keras refuses a Python lambda (it raised Keras's own
    "pass safe_mode=False to the loading function", which says nothing about preparing)."""
    import tf_keras

    inputs = tf_keras.Input((8,))
    doubled = tf_keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="classes")(doubled))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match=r"'double' \(Lambda\): it runs a Python function.*Rescaling for a scale"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4))


def test_keras_hub_layers_are_registry_entries_that_rebuild_their_own_class_and_not_a_subclass():
    """keras_hub's layers are entries like any kind (`Keras3.rebuild`); a user's subclass that calls differently is
    not taken for its parent: it is rebuilt from its own call()."""
    import keras
    import keras_hub

    class DoubledEncoder(keras_hub.layers.TransformerEncoder):
        def call(self, inputs):
            return super().call(inputs) * 2.0

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    x = keras_hub.layers.TransformerEncoder(16, 2, name="plain")(inputs)
    model3 = keras.Model(inputs, DoubledEncoder(16, 2, name="doubled")(x))
    x_data = np.random.default_rng(0).normal(size=(4, 6, 8)).astype(np.float32)
    model = tfjoint.from_keras3(model3, x_data)
    np.testing.assert_allclose(model.predict(x_data, verbose=0), model3.predict(x_data, verbose=0),
                               rtol=1e-4, atol=1e-4)
    kind = tfjoint.registry.kind_of(keras_hub.layers.TransformerEncoder)
    assert kind is not None and kind.keras3.rebuild is not None
    assert "plain_attention" in {layer.name for layer in model.layers}  # the entry's layers, named after it


def test_a_keras3_layer_registers_how_the_bridge_rebuilds_it():
    """One way to register a layer: a Keras 3 class with no tf_keras twin says, in its entry, which layers replay
    it (`Keras3(rebuild=...)`), as keras_hub's entries do."""
    import keras

    @keras.saving.register_keras_serializable(package="test_keras3_all_the_way")
    class Halve(keras.layers.Layer):
        def call(self, x):
            return keras.ops.cumsum(x, axis=-1) * 0.0 + x * 0.5  # not rebuildable from its call (cumsum)

    def rebuild(entry, layer3):
        import tf_keras

        layer = tf_keras.layers.Rescaling(0.5, name=entry["config"]["name"])
        return tfjoint.registry.Rebuilt(lambda args, kwargs: layer(args[0]), [])

    inputs = keras.Input((4,))
    model3 = keras.Model(inputs, keras.layers.Dense(2)(Halve(name="halve")(inputs)))
    with tfjoint.registry.scoped():
        tfjoint.register_layer(Halve, keras3=tfjoint.registry.Keras3(rebuild=rebuild))
        model = tfjoint.from_keras3(model3)
    assert type(model.get_layer("halve")).__name__ == "Rescaling"


def test_keras_ops_activations_and_means_in_a_functional_model_are_rebuilt_as_layers():
    """`keras.ops.relu` / `relu6` / `sigmoid` / `tanh` / `silu` and `keras.ops.mean` over a sequence's steps or an
    image's positions, written between layers (as keras.io does), become tf_keras layers computing the same; a mean
    over the channels is refused naming its axes."""
    import keras as keras3
    from keras import layers, ops

    keras3.utils.set_random_seed(0)
    steps = keras3.Input((10, 6), name="steps")
    h = layers.Dense(8)(steps)
    h = ops.relu(h) + ops.relu6(h) + ops.sigmoid(h) + ops.tanh(h) + ops.silu(h)
    image = keras3.Input((6, 6, 3), name="image")
    pooled = ops.mean(layers.Conv2D(8, 3)(image), axis=(1, 2), keepdims=True)
    merged = layers.Concatenate()([ops.mean(h, axis=1), layers.Flatten()(pooled)])
    model3 = keras3.Model([steps, image], layers.Dense(3)(merged))
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(8, 10, 6)).astype(np.float32), rng.normal(size=(8, 6, 6, 3)).astype(np.float32)]
    model = tfjoint.from_keras3(model3, data)
    np.testing.assert_allclose(model.predict(data, verbose=0), model3.predict(data, verbose=0), rtol=1e-4, atol=1e-4)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert {"GlobalAveragePooling1D", "GlobalAveragePooling2D", "ReLU", "Activation"} <= set(kinds), kinds

    over_channels = keras3.Model(steps, layers.Dense(3)(ops.mean(layers.Dense(8)(steps), axis=-1)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError) as caught:
        tfjoint.prepare(over_channels, tfjoint.JointSchedule(0.5), sample_inputs=data[0], check=False)
    assert "keras.ops.mean" in str(caught.value) and "axes [2]" in str(caught.value), str(caught.value)
