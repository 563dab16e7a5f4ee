"""JointSchedule: TF-MOT's PolynomialDecay on the grid, the target exactly at any end_step, and its checks."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

import tfjoint
from tfjoint._tfmot import JointPolynomialDecay
from tfjoint.prune.schedule import expected_zero_fraction

SCHEDULE = tfjoint.JointSchedule(target_sparsity=0.8, end_step=110, begin_step=10, initial_sparsity=0.1, power=3,
                                 frequency=5)


def _tfmot(schedule, cls=tfmot.sparsity.keras.PolynomialDecay):
    return cls(**schedule.decay_arguments(schedule.target_sparsity))


@pytest.mark.parametrize("step", [0, 9, 10, 11, 35, 60, 109, 110, 111, 500])
def test_sparsity_and_update_steps_match_tfmot_on_the_grid(step):
    should_prune, sparsity = _tfmot(SCHEDULE)(np.int64(step))
    assert SCHEDULE.sparsity_at(step) == pytest.approx(float(sparsity), abs=1e-6)
    assert SCHEDULE.is_update_step(step) == bool(should_prune)


def test_closed_form_endpoints_and_midpoint():
    assert SCHEDULE.sparsity_at(10) == pytest.approx(0.1)
    assert SCHEDULE.sparsity_at(110) == pytest.approx(0.8)
    assert SCHEDULE.sparsity_at(60) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5**3)


def test_scheduled_sparsity_holds_the_last_update_and_stays_at_target():
    assert SCHEDULE.scheduled_sparsity(9) == 0.0  # no update yet
    assert SCHEDULE.scheduled_sparsity(13) == pytest.approx(SCHEDULE.sparsity_at(10))
    assert SCHEDULE.scheduled_sparsity(110) == pytest.approx(0.8)
    assert SCHEDULE.scheduled_sparsity(10_000) == pytest.approx(0.8)


def test_off_grid_end_step_is_reached_exactly_there_unlike_tfmot():
    off_grid = SCHEDULE.replace(end_step=107)  # 97 steps: not a multiple of 5
    ours, theirs = _tfmot(off_grid, JointPolynomialDecay), _tfmot(off_grid)
    for step in range(0, 130):
        should, value = ours(np.int64(step))
        tf_should, tf_value = theirs(np.int64(step))
        if step != 107:  # everywhere else: exactly TF-MOT's schedule
            assert bool(should) == bool(tf_should) and float(value) == pytest.approx(float(tf_value)), step
    assert bool(ours(np.int64(107))[0]) and not bool(theirs(np.int64(107))[0])
    assert float(ours(np.int64(107))[1]) == pytest.approx(0.8)
    assert off_grid.update_steps()[-2:] == [105, 107]
    assert off_grid.scheduled_sparsity(106) < 0.8 and off_grid.scheduled_sparsity(107) == pytest.approx(0.8)


def test_per_layer_targets_share_the_timing():
    plan = tfjoint.JointSchedule(target_sparsity={"a": 0.5, "b": 0.9}, end_step=100, frequency=10)
    assert plan.target_for("a") == 0.5 and plan.target_for("b") == 0.9 and plan.target_for("c") is None
    assert plan.scheduled_sparsity(100, plan.target_for("b")) == pytest.approx(0.9)
    assert plan.mean_target({"a": 100, "b": 300}) == pytest.approx((0.5 * 100 + 0.9 * 300) / 400)
    assert tfjoint.JointSchedule.from_dict(plan.to_dict()) == plan
    assert plan.to_dict()["target_sparsity"] == {"a": 0.5, "b": 0.9}


def test_plan_schedule_reaches_the_target_at_prune_end():
    plan = tfjoint.inspect.plan_schedule(431, 0.8, prune_end=0.5, quant_start=0.25)
    assert plan.end_step == 216 and plan.frequency == 13 and plan.quant_start_step == 107
    assert plan.update_steps()[-1] == 216 and plan.scheduled_sparsity(216) == pytest.approx(0.8)
    assert len(plan.update_steps()) in (17, 18)  # about 16 updates on the way
    assert tfjoint.inspect.plan_schedule(3, 0.5).end_step == 2  # tiny runs still get a schedule
    with pytest.raises(tfjoint.ConfigError, match="`prune_end`.*received 0"):
        tfjoint.inspect.plan_schedule(100, 0.5, prune_end=0)
    with pytest.raises(tfjoint.ConfigError, match="`total_steps`.*received 0"):
        tfjoint.inspect.plan_schedule(0, 0.5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(target_sparsity=1.0, end_step=100), "`target_sparsity` must be in \\[0, 1\\).*1.0"),
        (dict(target_sparsity=-0.1, end_step=100), "target_sparsity"),
        (dict(target_sparsity="0.5", end_step=100), "target_sparsity"),
        (dict(target_sparsity={"fc": 1.2}, end_step=100), "target_sparsity\\['fc'\\]"),
        (dict(target_sparsity=0.5, end_step=100, begin_step=100), "`end_step` must be > begin_step=100"),
        (dict(target_sparsity=0.5, end_step=100, begin_step=-10), "begin_step"),
        (dict(target_sparsity=0.5, end_step=100, frequency=0), "frequency"),
        (dict(target_sparsity=0.5, end_step=100, quant_start_step=-1), "quant_start_step"),
        (dict(target_sparsity=0.5, end_step=100, initial_sparsity=0.6), "initial_sparsity"),
        (dict(target_sparsity=0.5, end_step=100, channel_sparsity=1.0), "channel_sparsity"),
        (dict(target_sparsity=0.5, end_step=10.5), "`end_step` must be an int"),
    ],
)
def test_bad_schedules_are_refused_naming_the_argument(kwargs, match):
    with pytest.raises(tfjoint.ConfigError, match=match):
        tfjoint.JointSchedule(**kwargs)


def test_unknown_fields_are_refused():
    with pytest.raises(tfjoint.ConfigError, match="unknown JointSchedule fields \\['sparsity'\\]"):
        tfjoint.JointSchedule.from_dict({"target_sparsity": 0.5, "end_step": 100, "sparsity": 0.3})


@pytest.mark.parametrize("size,sparsity",
                         [(72, 0.8), (2880, 0.8), (2880, 0.7888888), (10, 0.55), (7, 0.99), (1001, 0.4995)])
def test_expected_zero_fraction_matches_tfmot_rounding(size, sparsity):
    import tensorflow as tf

    kept = int(tf.maximum(tf.math.round(tf.cast(size, tf.float32) * (1 - tf.constant(sparsity, tf.float32))), 1))
    assert expected_zero_fraction(size, sparsity) == pytest.approx(1 - kept / size)
