"""strip leaves TF-MOT's QAT model with exact zeros; prepared models save, load and resume."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from conftest import compile_joint, image_data, small_cnn

import tfjoint
from tfjoint import pruned_kernels, training_step
from tfjoint.quantize.config import JointQuantizeConfig
from tfjoint.train.strip import strips_cleanly


@pytest.fixture(scope="module")
def trained_joint():
    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.75, end_step=8, frequency=2)))
    joint.fit(*image_data(n=64), batch_size=8, epochs=2, verbose=0)
    return joint


def test_strip_bakes_zeros_into_kernels_and_removes_pruning_state(trained_joint):
    stripped = tfjoint.strip(trained_joint)
    assert strips_cleanly(stripped)
    assert not any("tfjoint" in w.name for w in stripped.weights)
    for pk in pruned_kernels(trained_joint):
        wrapper = stripped.get_layer(f"quant_{pk.layer_name}")
        kernel = next(w for w in wrapper.weights if w.name.endswith("/kernel:0")).numpy()
        np.testing.assert_array_equal(kernel == 0, pk.mask.numpy() == 0)
        assert np.mean(kernel == 0) >= 0.74


def test_stripped_model_predicts_like_the_prepared_one(trained_joint):
    x, _ = image_data(n=16, seed=5)
    np.testing.assert_allclose(tfjoint.strip(trained_joint).predict(x, verbose=0), trained_joint.predict(x, verbose=0),
                               atol=1e-6)


def test_stripped_configs_are_tfmot_default_8bit(trained_joint):
    stripped = tfjoint.strip(trained_joint)
    reference = tfmot.quantization.keras.quantize_model(small_cnn())
    def configs(model):
        return {layer.name: type(layer.quantize_config).__name__ for layer in model.layers
                if hasattr(layer, "quantize_config")}

    assert configs(stripped) == configs(reference)
    assert not any(isinstance(getattr(layer, "quantize_config", None), JointQuantizeConfig)
                   for layer in stripped.layers)


def test_strip_refuses_an_unprepared_model():
    with pytest.raises(tfjoint.errors.ModelStructureError, match="not prepared with tfjoint.prepare"):
        tfjoint.strip(small_cnn())


def _run(steps_first, steps_then, save_path=None):
    joint = compile_joint(tfjoint.prepare(small_cnn(),
                                          tfjoint.JointSchedule(0.6, end_step=12, frequency=3, quant_start_step=5)))
    x, y = image_data(n=8 * max(steps_first, 1))
    joint.fit(x[: 8 * steps_first], y[: 8 * steps_first], batch_size=8, verbose=0)
    if save_path is not None:
        joint.save(save_path)
        joint = tfjoint.load_model(save_path)
    x2, y2 = image_data(n=8 * steps_then, seed=9)
    history = joint.fit(x2, y2, batch_size=8, verbose=0, callbacks=tfjoint.callbacks())
    return joint, history


@pytest.mark.parametrize("suffix", ["model.h5", pytest.param("model.keras", marks=pytest.mark.slow),
                                    pytest.param("saved_model_dir", marks=pytest.mark.slow)])
def test_save_load_resume_matches_an_uninterrupted_run(tmp_path, suffix):
    resumed, resumed_history = _run(4, 6, str(tmp_path / suffix))
    straight, straight_history = _run(4, 6)
    assert training_step(resumed) == training_step(straight) == 10
    assert resumed_history.history["tfjoint/qat_active"] == straight_history.history["tfjoint/qat_active"] == [1.0]
    for a, b in zip(pruned_kernels(resumed), pruned_kernels(straight)):
        assert a.layer_name == b.layer_name
        assert int(a.step.numpy()) == 10
        assert np.mean(a.mask.numpy() == 0) == pytest.approx(np.mean(b.mask.numpy() == 0))
        if suffix != "saved_model_dir":  # tf_keras 2.21 does not restore optimizer state from a SavedModel,
            # so there the kernels (and the masks ranked on them) drift apart; elsewhere everything resumes exactly.
            np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
            np.testing.assert_allclose(a.kernel.numpy(), b.kernel.numpy(), atol=1e-5)


def test_loaded_model_keeps_its_schedule_after_recompiling(tmp_path):
    joint, _ = _run(2, 1)
    path = str(tmp_path / "m.h5")
    joint.save(path)
    loaded = tfjoint.load_model(path, compile=False)
    compile_joint(loaded)  # a fresh optimizer: iterations restart at 0, the schedule must not
    loaded.fit(*image_data(n=8 * 9), batch_size=8, verbose=0)
    assert training_step(loaded) == 12
    for pk in pruned_kernels(loaded):
        assert np.mean(pk.mask.numpy() == 0) == pytest.approx(0.6, abs=1.01 / pk.mask.numpy().size)


def test_a_prepared_model_round_trips_through_the_keras_format(tmp_path):
    """TF-MOT's own QAT models do not load from .keras on this stack; prepared models do, exactly."""
    joint, _ = _run(3, 1)
    path = str(tmp_path / "joint.keras")
    joint.save(path)
    loaded = tfjoint.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in joint.layers]
    for a, b in zip(joint.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert training_step(loaded) == training_step(joint) == 4
    x, _ = image_data(n=8, seed=2)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), joint.predict(x, verbose=0))


def test_float_keras_file_loads_with_its_weights_and_computes_the_same(tmp_path):
    path = str(tmp_path / "float.keras")
    model = small_cnn()
    model.save(path)
    loaded = tfjoint.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    x, _ = image_data(n=8, seed=3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.slow
def test_a_prepared_model_stores_its_schedule_through_save_and_load_and_strip_carries_it(tmp_path):
    schedule = tfjoint.JointSchedule(target_sparsity={"conv": 0.6, "fc": 0.3}, end_step=12, frequency=3,
                                     quant_start_step=2)
    joint = compile_joint(tfjoint.prepare(small_cnn(), schedule, check=False))
    assert tfjoint.inspect.schedule_of(joint) == schedule
    for suffix in (".keras", ".h5"):
        path = str(tmp_path / f"joint{suffix}")
        joint.save(path)
        assert tfjoint.inspect.schedule_of(tfjoint.load_model(path)) == schedule, suffix
    joint.fit(*image_data(n=32), batch_size=8, verbose=0)  # past quant_start_step: the ranges trained
    stripped = tfjoint.strip(joint)
    assert tfjoint.inspect.schedule_of(stripped) == schedule  # export_tflite(tfjoint.strip(joint)) reports it
    report = tfjoint.export_tflite(stripped, str(tmp_path / "m.tflite"),
                                   options=tfjoint.ExportOptions(quantization="qat"))
    assert report.schedule == schedule.to_dict()
    assert {name: entry["planned"] for name, entry in report.per_layer_sparsity.items()} == {"conv": 0.6, "fc": 0.3}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        tfjoint.load_model(str(tmp_path / "nope.h5"))


def test_a_frozen_layer_stays_frozen_and_saves(tmp_path):
    """TF-MOT's wrapper trains a frozen layer's kernel anyway and cannot save it to .h5; prepared models can."""
    model = small_cnn()
    model.get_layer("conv").trainable = False
    joint = compile_joint(tfjoint.prepare(model,
                                          tfjoint.JointSchedule(0.5, end_step=2, frequency=1)), learning_rate=0.1)
    conv = next(pk for pk in pruned_kernels(joint) if pk.layer_name == "conv")
    before = conv.kernel.numpy().copy()
    joint.fit(*image_data(n=16), batch_size=8, verbose=0)
    np.testing.assert_array_equal(conv.kernel.numpy(), before)  # masked, never trained
    assert np.mean(conv.mask.numpy() == 0) == pytest.approx(0.5, abs=0.02)
    joint.save(str(tmp_path / "frozen.h5"))
    assert training_step(tfjoint.load_model(str(tmp_path / "frozen.h5"))) == 2
