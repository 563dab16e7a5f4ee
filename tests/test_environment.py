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
        from tfjoint import keras
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=2, frequency=1)
        joint.compile("adam", "mse")
        joint.fit(np.ones((8, 6)), np.zeros((8, 3)), batch_size=4, verbose=0)
        print(float(np.mean(tfjoint.pruned_kernels(joint)[0].mask.numpy() == 0)))
    """)
    assert float(out.split()[-1]) == 0.5
