"""Keras-version handling: tfjoint works whichever was imported first, each case in a fresh interpreter."""

import pytest
from conftest import run_python

pytestmark = pytest.mark.slow  # fresh interpreters


def _python(code: str) -> str:
    return run_python(code, keep_legacy_keras_flag=False).stdout


def test_importing_tfjoint_first_selects_legacy_keras():
    out = _python("""
        import tfjoint, os
        import tensorflow as tf
        print(os.environ["TF_USE_LEGACY_KERAS"], tf.keras.__name__)
    """)
    flag, module = out.split()
    assert flag == "1" and module.startswith("tf_keras")


def test_tensorflow_imported_with_keras3_first_still_works_on_tf_keras_models():
    out = _python("""
        import tensorflow as tf
        assert tf.keras.version().startswith("3."), tf.keras.version()
        import numpy as np, tfjoint
        import tf_keras as keras
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=2, frequency=1)
        joint.compile("adam", "mse")
        joint.fit(np.ones((8, 6)), np.zeros((8, 3)), batch_size=4, verbose=0)
        print(float(np.mean(tfjoint.inspect.pruned_kernels(joint)[0].mask.numpy() == 0)))
    """)
    assert float(out.split()[-1]) == 0.5


def test_a_tf_keras_model_on_tf_2_16_plus_is_keras3_and_goes_through():
    """A user who imported TensorFlow first holds a Keras 3 `tf.keras` model: it is bridged, trained, exported."""
    out = _python("""
        import numpy as np
        import tensorflow as tf
        assert tf.keras.version().startswith("3.")
        inputs = tf.keras.Input((6,))
        hidden = tf.keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
        model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax", name="head")(hidden))
        import tfjoint
        joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=4, frequency=2)
        joint.compile("adam", "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).random((64, 6), dtype=np.float32)
        joint.fit(x, np.argmax(x[:, :3], 1), batch_size=16, verbose=0)
        import tempfile, os
        report = tfjoint.export_tflite(joint, os.path.join(tempfile.mkdtemp(), "m.tflite"), validation_data=x)
        print(isinstance(joint, tfjoint.keras.Model), report.fully_int8, report.per_layer_sparsity["hidden"]["tflite"])
    """)
    module, fully_int8, sparsity = out.split()[-3:]
    assert module == "True" and fully_int8 == "True" and float(sparsity) == 0.5  # a tf_keras model
