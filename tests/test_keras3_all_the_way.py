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
    model = _model(_keras3_scale_class())
    with pytest.raises(tfjoint.UnsupportedLayerError, match="'scale' \\(Scale\\).*tfjoint.register_layer\\(YourLayer"):
        tfjoint.prepare(model, target_sparsity=0.5, end_step=4)


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
                               quantization=tfjoint.Quantization.output_only())
        joint = tfjoint.prepare(model, target_sparsity=0.0, channel_sparsity=0.5, end_step=4, frequency=1)
        joint.compile("adam", "sparse_categorical_crossentropy")
        joint.fit(x, y, batch_size=16, epochs=1, verbose=0)
        report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"), validation_data=(x, y),
                                       float_model=model, runtimes=("litert", "tflm"))  # float_model: Keras 3
    assert report.passed and report.fully_int8 and report.operator_counts["MUL"] == 1
    assert report.per_layer_channels["conv"] == {"original": 8, "keras": 4, "tflite": 4}  # followed through 'scale'
    assert report.float_accuracy is not None and report.per_runtime["tflm"]["int8_accuracy"] is not None
