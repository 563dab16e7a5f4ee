"""`fit` traces one train function for the float steps and one for the quantized steps (tfjoint.train.phases)."""

import collections
import importlib.util
import os

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from conftest import ROOT, compile_joint, image_data, small_cnn

import tfjoint
from tfjoint._keras import tf
from tfjoint.inspect import training_step


def _op_counts(function) -> collections.Counter:
    """Op types in every concrete function of a tf.function, branch and gradient functions included."""
    counts: collections.Counter = collections.Counter()
    for concrete in function._list_all_concrete_functions_for_serialization():
        graph = concrete.graph.as_graph_def()
        counts.update(node.op for node in graph.node)
        for library_function in graph.library.function:
            counts.update(node.op for node in library_function.node_def)
    return counts


def _fake_quant_ops(counts) -> int:
    return sum(n for op, n in counts.items() if op.startswith("FakeQuant"))


def _relu_range(model, layer: str = "quant_relu") -> tuple[float, float]:
    values = {w.name: float(w.numpy()) for w in model.weights if w.name.startswith(f"{layer}/output_m")}
    return values[f"{layer}/output_min:0"], values[f"{layer}/output_max:0"]


def test_float_steps_trace_no_fake_quant_and_quantized_steps_no_gate():
    joint = compile_joint(tfjoint.prepare(small_cnn(),
                                          tfjoint.JointSchedule(0.5, end_step=4, frequency=2, quant_start_step=3)))
    x, y = image_data(n=16)
    joint.fit(x, y, batch_size=8, verbose=0)  # steps 1, 2: float
    dispatch = joint.train_function
    assert list(dispatch._functions) == [False]
    assert _relu_range(joint) == (-6.0, 6.0)  # the activation quantizers did not run
    joint.fit(x, y, batch_size=8, verbose=0)  # step 3 float, step 4 quantized (the count continues across fits)
    assert joint.train_function is dispatch and set(dispatch._functions) == {False, True}
    assert training_step(joint) == 4
    assert _relu_range(joint) != (-6.0, 6.0)  # warm-started on step 4
    float_ops, quantized_ops = _op_counts(dispatch._functions[False]), _op_counts(dispatch._functions[True])
    assert _fake_quant_ops(float_ops) == 0 and _fake_quant_ops(quantized_ops) > 0
    # Only the two kernels' mask updates branch: no tf.cond per quantizer in either phase.
    assert float_ops["If"] == quantized_ops["If"] == 2
    assert quantized_ops["OptionalFromValue"] == 0  # no cond gradient keeping branch intermediates


def test_phase_switched_fit_trains_as_the_in_graph_gates_do():
    """fit (one function per phase) and a custom loop (a tf.cond per quantizer) give the same model."""
    x, y = image_data(n=48)
    schedule = dict(target_sparsity=0.5, end_step=4, frequency=2, quant_start_step=3)
    fitted = compile_joint(tfjoint.prepare(small_cnn(), **schedule))
    fitted.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    looped = tfjoint.prepare(small_cnn(), **schedule)
    optimizer = keras.optimizers.Adam(1e-3)
    loss = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            value = loss(yb, looped(xb, training=True))
        optimizer.apply_gradients(zip(tape.gradient(value, looped.trainable_variables), looped.trainable_variables))

    for start in range(0, len(x), 8):
        step(x[start:start + 8], y[start:start + 8])
    assert training_step(fitted) == training_step(looped) == 6
    for ours, theirs in zip(fitted.weights, looped.weights):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5, err_msg=ours.name)


def test_several_steps_per_call_keep_the_in_graph_gates():
    joint = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2, quant_start_step=3))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", steps_per_execution=2)
    joint.fit(*image_data(n=32), batch_size=8, verbose=0)
    assert not hasattr(joint.train_function, "_functions")  # tf_keras's own function
    assert training_step(joint) == 4 and _relu_range(joint) != (-6.0, 6.0)


def test_distiller_switches_phases_on_its_students_schedule():
    model = small_cnn()
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2, quant_start_step=100))
    distiller = tfjoint.Distiller(joint, teacher=model)
    distiller.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    distiller.fit(*image_data(n=16), batch_size=8, verbose=0)
    assert list(distiller.train_function._functions) == [False]
    assert _fake_quant_ops(_op_counts(distiller.train_function._functions[False])) == 0
    assert training_step(joint) == 2


@pytest.mark.parametrize("data", ["arrays", "dataset"])
@pytest.mark.parametrize("distilled", [False, True])
def test_each_phase_is_traced_once(data, distilled):
    """tf.function traces a function again when its first trace created variables, and tf_keras's train step creates
    the optimizer's slots and the compiled metrics there: fit built them first (tfjoint.train.first_trace), so each
    phase's step is traced once, with the metric Keras itself would have chosen for the labels."""
    x, y = image_data(n=32)
    model = small_cnn()
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2, quant_start_step=2))
    trained = tfjoint.Distiller(joint, teacher=model) if distilled else joint
    trained.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    traces = []
    step = trained.train_step
    trained.train_step = lambda batch: traces.append(1) or step(batch)
    if data == "arrays":
        history = trained.fit(x, y, batch_size=8, epochs=2, verbose=0)
    else:
        history = trained.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0)
    assert len(traces) == 2 and sorted(trained.train_function._functions) == [False, True]
    assert [m._fn for m in trained.compiled_metrics.metrics] == [keras.metrics.sparse_categorical_accuracy]
    assert len(history.history["accuracy"]) == 2 and training_step(joint) == 8


def test_labels_fit_cannot_read_are_left_to_the_first_trace():
    """A generator's labels are unknown before the first step: the metrics are built there, as tf_keras does."""
    x, y = image_data(n=16)
    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=2, frequency=1)))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = joint.fit((batch for batch in [(x[:8], y[:8]), (x[8:], y[8:])]), steps_per_epoch=2, verbose=0)
    assert joint.optimizer._built and len(joint.optimizer.variables) > 1
    assert [m._fn for m in joint.compiled_metrics.metrics] == [keras.metrics.sparse_categorical_accuracy]
    assert 0 <= history.history["accuracy"][0] <= 1 and training_step(joint) == 2


@pytest.mark.slow
def test_export_of_a_model_whose_fake_quant_never_ran(tmp_path):
    """Stopped before quant_start_step: no QAT file (its ranges are TF-MOT's initial ones); post-training only."""
    joint = compile_joint(tfjoint.prepare(small_cnn(),
                                          tfjoint.JointSchedule(0.5, end_step=4, frequency=2, quant_start_step=50),
                                          check=False))
    x, y = image_data(n=32)
    joint.fit(x, y, batch_size=8, verbose=0)
    stripped = tfjoint.strip(joint)
    with pytest.raises(tfjoint.ConfigError, match=r"never trained with fake quantization.*quant_start_step=50"):
        tfjoint.export_tflite(stripped, str(tmp_path / "qat.tflite"), options=tfjoint.ExportOptions(quantization="qat"))
    assert not (tmp_path / "qat.tflite").exists()
    with pytest.raises(tfjoint.ConfigError, match="representative_data"):
        tfjoint.export_tflite(stripped, str(tmp_path / "auto.tflite"))
    report = tfjoint.export_tflite(stripped, str(tmp_path / "auto.tflite"), representative_data=x,
                                   validation_data=(x, y))
    assert report.quantization == "post_training" and list(report.quantization_candidates) == ["post_training"]
    assert any("never trained with fake quantization" in note for note in report.notes)
    assert tfjoint.inspect.read_flatbuffer((tmp_path / "auto.tflite").read_bytes()).fully_int8


@pytest.mark.slow
def test_a_late_quant_start_passes_the_conversion_check_with_ranges_set_for_it():
    """The check's one step fake-quantizes even before `quant_start_step`: left at TF-MOT's initial ranges, this
    trained Conv1D+BatchNorm model's int8 file read -2.1 dB from the model, and prepare refused it."""
    spec = importlib.util.spec_from_file_location("kws", os.path.join(ROOT, "examples", "keyword_spotting_conv1d.py"))
    kws = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kws)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((kws.FRAMES, kws.FEATURES), name="mfcc")
    x = inputs
    for i in (1, 2):
        x = keras.layers.Conv1D(32, 5, use_bias=False, name=f"conv1d_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(keras.layers.BatchNormalization(name=f"bn_{i}")(x))
    x = keras.layers.Dense(32, activation="relu", name="fc")(keras.layers.GlobalAveragePooling1D(name="pool")(x))
    model = keras.Model(inputs, keras.layers.Dense(kws.KEYWORDS, activation="softmax", name="keyword")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(*kws.make_clips(2000, seed=1), epochs=30, batch_size=64, verbose=0)  # 4 s
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.8, end_step=2, frequency=1, quant_start_step=10 ** 9))
    assert training_step(joint) == 0 and _relu_range(joint, "quant_relu_1") == (-6.0, 6.0)  # all put back
