"""tfjoint.callbacks publishes state to logs and TensorBoard, and refuses unprepared models."""

import glob

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from conftest import compile_joint, image_data, small_cnn

import tfjoint
from tfjoint.train.callbacks import QAT_ACTIVE_KEY, SPARSITY_KEY, STEP_KEY


def test_logs_hold_sparsity_step_and_qat_state_each_epoch(tmp_path):
    joint = compile_joint(tfjoint.prepare(small_cnn(),
                                          tfjoint.JointSchedule(0.5, end_step=4, frequency=2, quant_start_step=6)))
    x, y = image_data(n=32)
    csv = tmp_path / "log.csv"
    history = joint.fit(x, y, batch_size=8, epochs=3, verbose=0,
                        callbacks=tfjoint.callbacks() + [keras.callbacks.CSVLogger(str(csv))])
    assert history.history[STEP_KEY] == [4.0, 8.0, 12.0]
    assert history.history[QAT_ACTIVE_KEY] == [0.0, 1.0, 1.0]
    np.testing.assert_allclose(history.history[SPARSITY_KEY][-1], 0.5, atol=0.01)
    assert SPARSITY_KEY in csv.read_text().splitlines()[0]


def test_log_dir_gets_tensorboard_scalars_per_pruned_layer(tmp_path):
    import tensorflow as tf

    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2)))
    joint.fit(*image_data(n=16), batch_size=8, epochs=2, verbose=0, callbacks=tfjoint.callbacks(log_dir=str(tmp_path)))
    tags = set()
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"tfjoint/zeros/conv", "tfjoint/zeros/fc", SPARSITY_KEY, QAT_ACTIVE_KEY} <= tags


def test_callbacks_returns_a_fresh_list_and_instances_are_reusable():
    first, second = tfjoint.callbacks(), tfjoint.callbacks()
    assert first is not second and first[0] is not second[0]
    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2)))
    for fit in (1, 2):  # the same callback instance, reused: it resets its state on each fit
        history = joint.fit(*image_data(n=16), batch_size=8, verbose=0, callbacks=first)
        assert history.history[STEP_KEY] == [2.0 * fit]  # 2 batches per fit; steps continue across fits
        schedule = tfjoint.inspect.schedule_of(joint)
        assert history.history[SPARSITY_KEY][-1] == pytest.approx(schedule.scheduled_sparsity(2 * fit), abs=0.02)


def test_step_comes_from_the_optimizer_when_nothing_counts_steps():
    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2),
                                          layers=tfjoint.LayerSelection(exclude=["conv", "fc"])))
    history = joint.fit(*image_data(n=16), batch_size=8, epochs=2, verbose=0, callbacks=tfjoint.callbacks())
    assert history.history[STEP_KEY] == [2.0, 4.0]
    assert history.history[QAT_ACTIVE_KEY] == [1.0, 1.0]
    assert history.history[SPARSITY_KEY] == [0.0, 0.0]


def test_callbacks_on_an_unprepared_model_fail_fast():
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(tfjoint.errors.ModelStructureError, match="not prepared with tfjoint.prepare"):
        model.fit(*image_data(n=8), verbose=0, callbacks=tfjoint.callbacks())
