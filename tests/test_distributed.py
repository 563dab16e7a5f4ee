"""tf.distribute: MirroredStrategy on two logical CPUs, and MultiWorkerMirroredStrategy across two processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_python

pytestmark = pytest.mark.slow


def _python(code: str) -> str:
    return run_python(code).stdout


def test_mirrored_strategy_with_two_logical_cpus():
    out = _python("""
        import tfjoint, numpy as np
        import tensorflow as tf
        import tf_keras as keras
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
            # steps 1-4 float, 5-8 quantized: one train function per phase, traced per replica
            joint = tfjoint.prepare(model, target_sparsity=0.8, end_step=6, frequency=2, quant_start_step=4)
            joint.compile("adam", "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        joint.fit(rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64), batch_size=16, epochs=2, verbose=0)
        print(tfjoint.inspect.training_step(joint))
        print(sorted(joint.train_function._functions))
        ranges = [float(w.numpy()) for w in joint.weights if "post_activation_m" in w.name]
        print(len(ranges), all(abs(r) != 6.0 for r in ranges))  # warm-started from a batch
        for pk in tfjoint.inspect.pruned_kernels(joint):
            q = pk.quantizer(pk.kernel, False, pk.quantizer_weights).numpy()
            print(pk.layer_name, float(np.mean(pk.mask.numpy() == 0)), float(np.mean(q == 0)))
        with strategy.scope():  # a transformer block, its heads removed as channels
            inputs = keras.Input((8, 8))
            x = keras.layers.MultiHeadAttention(4, 4, name="attention")(inputs, inputs)
            x = keras.layers.LayerNormalization()(keras.layers.Add()([inputs, x]))
            x = keras.layers.GlobalAveragePooling1D()(x)
            model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
            joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=6, frequency=2, channel_sparsity=0.5)
            joint.compile("adam", "sparse_categorical_crossentropy")
        joint.fit(rng.random((64, 8, 8)), rng.integers(0, 10, 64), batch_size=16, epochs=2, verbose=0)
        heads = tfjoint.strip(joint).get_layer("quant_attention").layer.num_heads
        print("heads", tfjoint.inspect.training_step(joint), heads)
    """)
    lines = out.strip().splitlines()
    assert lines[-1] == "heads 8 2"
    lines = lines[:-1]
    assert int(lines[0]) == 8
    assert lines[1] == "[False, True]" and lines[2] == "2 True"
    for line in lines[3:]:
        _, mask_zeros, quantized_zeros = line.split()
        assert abs(float(mask_zeros) - 0.8) < 0.01
        assert float(quantized_zeros) >= float(mask_zeros)


# One model for both kinds of layer a worker must keep in step: a Conv1D + BatchNorm branch (its filters pruned as
# channels) and an encoder block (attention, its heads pruned as channels; LayerNorm; a GELU FFN).
_MODEL = """
inputs = keras.Input((8, 8), name="image")
conv = keras.layers.Conv1D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
conv = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(conv))
attention = keras.layers.MultiHeadAttention(4, 4, name="attention")(inputs, inputs)
x = keras.layers.LayerNormalization(name="norm")(keras.layers.Add()([inputs, attention]))
x = keras.layers.Dense(16, activation="gelu", name="ffn")(x)
x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling1D()(x), keras.layers.GlobalAveragePooling1D()(conv)])
model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="fc")(x))
joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.75, end_step=6, frequency=2, channel_sparsity=0.5))
"""

_WORKER = """
import json, os, sys
import numpy as np
import tfjoint
import tensorflow as tf
import tf_keras as keras  # noqa: E402

out = sys.argv[1]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
task = json.loads(os.environ["TF_CONFIG"])["task"]
with strategy.scope():
    keras.utils.set_random_seed(0)
    exec(MODEL)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x_train = rng.random((128,) + tuple(joint.input_shape[1:]), dtype=np.float32)
y_train = (x_train[:, :4].mean(axis=tuple(range(1, x_train.ndim))) > 0.5).astype(np.int32)  # brighter top rows
joint.fit(x_train, y_train, batch_size=16, epochs=2, verbose=0)
np.savez(os.path.join(out, f"worker{task['index']}.npz"),
         step=tfjoint.inspect.training_step(joint),
         **{f"{pk.layer_name}/{pk.weight_name}": pk.masked_kernel() for pk in tfjoint.inspect.pruned_kernels(joint)})
if task["index"] == 0:
    try:  # exporting the prepared model on the chief alone would wait forever for the other worker
        tfjoint.export_tflite(joint, os.path.join(out, "never.tflite"))
    except tfjoint.ConfigError as error:
        print("refused:", error)
deployable = tfjoint.strip(joint)  # every worker: reading synchronized variables is collective
if task["index"] == 0:  # the chief exports, with the default tolerances
    report = tfjoint.export_tflite(deployable, os.path.join(out, "model.tflite"), validation_data=x_train[:32],
                                   runtimes=("litert",))
    report.save_json(os.path.join(out, "report.json"))
""".replace("MODEL", repr(_MODEL))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_processes_train_one_model_and_the_chief_exports(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    env = {k: v for k, v in os.environ.items()}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path)], env=dict(
            env, TF_CONFIG=json.dumps(config)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    assert "refused: " in outputs[0] and "tfjoint.strip(model) on every worker" in outputs[0]
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(first["step"]) == int(second["step"]) == 16  # 128 samples / global batch 16, 2 epochs
    names = [name for name in first.files if name != "step"]
    attention = [f"attention/{p}_kernel" for p in ("query", "key", "value", "output")]
    assert sorted(names) == sorted(attention + ["conv/kernel", "ffn/kernel", "fc/kernel"])
    # 75% of the weights go; in the convolution and the FFN, 75% of the half of their channels that stay.
    expected = {"ffn/kernel": 1 - 0.5 * 0.25, "conv/kernel": 1 - 0.5 * 0.25}
    for name in names:
        np.testing.assert_array_equal(first[name], second[name])
        if not name.startswith("attention"):
            assert np.mean(first[name] == 0) == pytest.approx(expected.get(name, 0.75), abs=0.02), name
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fully_int8"] and report["passed"]
    # Read from the file: 75% of the kept weights are zero (the removed channels are gone from it).
    for layer in ("conv", "ffn"):
        assert report["per_layer_sparsity"][layer]["tflite"] == pytest.approx(0.75, abs=0.01), layer
    assert not (tmp_path / "never.tflite").exists()
    # Both workers removed the same two of the four heads (zero in every projection) and the same conv filters.
    heads = [np.flatnonzero(np.abs(first["attention/output_kernel"]).sum(axis=(1, 2)))]
    assert len(heads[0]) == 2
    np.testing.assert_array_equal(np.abs(first["attention/query_kernel"]).sum(axis=(0, 2)) > 0,
                                  np.isin(np.arange(4), heads[0]))
    filters = np.abs(first["conv/kernel"]).reshape(-1, 8).sum(axis=0) > 0
    assert filters.sum() == 4, filters
