"""Keras-version handling and MirroredStrategy, each in a fresh interpreter."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, env_extra=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}, **(env_extra or {}))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


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
        from tfjoint.quantizers import pruned_kernels
        print(float(np.mean(pruned_kernels(joint)[0].mask.numpy() == 0)))
    """)
    assert float(out.split()[-1]) == 0.5


def test_mirrored_strategy_with_two_logical_cpus():
    out = _python("""
        import tfjoint, numpy as np
        import tensorflow as tf
        from tfjoint import keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8, 8, 1))
            x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
            x = keras.layers.Flatten()(x)
            model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
            joint = tfjoint.prepare(model, target_sparsity=0.8, end_step=6, frequency=2)
            joint.compile("adam", "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        joint.fit(rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64), batch_size=16, epochs=2, verbose=0)
        from tfjoint.quantizers import pruned_kernels, training_step
        print(training_step(joint))
        for pk in pruned_kernels(joint):
            q = pk.quantizer(pk.kernel, False, pk.quantizer_weights).numpy()
            print(pk.layer_name, float(np.mean(pk.mask.numpy() == 0)), float(np.mean(q == 0)))
    """)
    lines = out.strip().splitlines()
    assert int(lines[0]) == 8
    for line in lines[1:]:
        _, mask_zeros, quantized_zeros = line.split()
        assert abs(float(mask_zeros) - 0.8) < 0.01
        assert float(quantized_zeros) >= float(mask_zeros)
