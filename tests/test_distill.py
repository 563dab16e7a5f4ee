"""Distiller: the KL term is the formula, it trains the prepared student only, and strip/save/export take it."""

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from conftest import image_data, small_cnn

import tfjoint


@pytest.fixture(scope="module")
def teacher():
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(*image_data(n=128), epochs=2, verbose=0)
    return model


def _distiller(teacher, **kwargs):
    student = tfjoint.prepare(teacher, tfjoint.JointSchedule(0.5, end_step=4, frequency=2))
    distiller = tfjoint.Distiller(student, teacher, **kwargs)
    distiller.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return distiller


def test_the_distillation_loss_is_temperature_softened_kl_times_t_squared(teacher):
    distiller = _distiller(teacher, temperature=3.0)
    rng = np.random.default_rng(0)
    t_probs = rng.dirichlet(np.ones(10), 4).astype(np.float32)
    s_probs = rng.dirichlet(np.ones(10), 4).astype(np.float32)

    def soften(p, temperature):
        z = np.log(p) / temperature
        return np.exp(z) / np.exp(z).sum(-1, keepdims=True)

    pt, ps = soften(t_probs, 3.0), soften(s_probs, 3.0)
    expected = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), -1)) * 9.0
    actual = float(distiller._distillation_loss([t_probs], [s_probs]))
    assert actual == pytest.approx(expected, rel=1e-4)


def test_training_moves_the_student_and_never_the_teacher(teacher):
    before = [w.copy() for w in teacher.get_weights()]
    distiller = _distiller(teacher, alpha=0.5)
    history = distiller.fit(*image_data(n=64), batch_size=16, epochs=1, verbose=0, callbacks=tfjoint.callbacks())
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert {"loss", "task_loss", "distillation_loss", "tfjoint/weight_sparsity"} <= set(history.history)
    assert tfjoint.inspect.training_step(distiller.student) == 4  # the teacher's forward pass counts no step
    assert history.history["tfjoint/weight_sparsity"][-1] == pytest.approx(0.5, abs=0.02)


def test_alpha_one_is_the_task_loss_alone(teacher):
    distiller = _distiller(teacher, alpha=1.0)
    history = distiller.fit(*image_data(n=16), batch_size=16, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(history.history["task_loss"][0], rel=1e-6)


@pytest.mark.slow
def test_strip_save_and_export_take_the_distiller_or_its_student(teacher, tmp_path):
    distiller = _distiller(teacher)
    x, y = image_data(n=64, seed=3)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    stripped = tfjoint.strip(distiller)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), distiller.student.predict(x, verbose=0), atol=1e-6)
    distiller.student.save(str(tmp_path / "student.h5"))
    resumed = tfjoint.Distiller(tfjoint.load_model(str(tmp_path / "student.h5")), teacher)
    resumed.compile("adam", "sparse_categorical_crossentropy")
    resumed.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert tfjoint.inspect.training_step(resumed.student) == 8
    # Eight steps on random labels leave near-tied outputs (4 of 64 top-1 choices flipped on int8's grid, agreement
    # 0.94, before the gate left out the ties the int8 output cannot order): the default gate passes it now.
    report = tfjoint.export_tflite(distiller, str(tmp_path / "d.tflite"), validation_data=x)
    assert report.fully_int8 and report.passed and report.sqnr_db > 20
    assert report.top1_agreement >= tfjoint.Tolerances().min_agreement


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(temperature=0.0), tfjoint.ConfigError, "`temperature` must be > 0"),
        (dict(alpha=1.5), tfjoint.ConfigError, "`alpha` must be in \\[0, 1\\]"),
    ],
)
def test_bad_distillation_arguments_are_named(teacher, kwargs, error, match):
    with pytest.raises(error, match=match):
        _distiller(teacher, **kwargs)


def test_the_student_must_be_prepared(teacher):
    with pytest.raises(tfjoint.errors.ModelStructureError, match="`student`.*tfjoint.prepare"):
        tfjoint.Distiller(small_cnn(), teacher)
