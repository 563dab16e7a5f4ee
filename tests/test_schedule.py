"""Schedule arithmetic agrees with TF-MOT's PolynomialDecay and mask rounding."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from tfjoint import schedule

ARGS = dict(initial_sparsity=0.1, target_sparsity=0.8, begin_step=10, end_step=110, power=3)


@pytest.mark.parametrize("step", [0, 9, 10, 11, 35, 60, 109, 110, 111, 500])
def test_polynomial_sparsity_matches_tfmot(step):
    tfmot_schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.1, final_sparsity=0.8, begin_step=10, end_step=110, power=3, frequency=5
    )
    should_prune, sparsity = tfmot_schedule(np.int64(step))
    assert schedule.polynomial_sparsity(step, **ARGS) == pytest.approx(float(sparsity), abs=1e-6)
    assert schedule.is_mask_update_step(step, begin_step=10, end_step=110, frequency=5) == bool(should_prune)


def test_closed_form_endpoints_and_midpoint():
    assert schedule.polynomial_sparsity(10, **ARGS) == pytest.approx(0.1)
    assert schedule.polynomial_sparsity(110, **ARGS) == pytest.approx(0.8)
    assert schedule.polynomial_sparsity(60, **ARGS) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5**3)


def test_scheduled_sparsity_holds_the_last_update_and_stays_at_target():
    kwargs = dict(ARGS, frequency=5)
    assert schedule.scheduled_sparsity(9, **kwargs) == 0.0  # no update yet
    assert schedule.scheduled_sparsity(13, **kwargs) == pytest.approx(schedule.polynomial_sparsity(10, **ARGS))
    assert schedule.scheduled_sparsity(110, **kwargs) == pytest.approx(0.8)
    assert schedule.scheduled_sparsity(10_000, **kwargs) == pytest.approx(0.8)


@pytest.mark.parametrize("size,sparsity", [(72, 0.8), (2880, 0.8), (2880, 0.7888888), (10, 0.55), (7, 0.99), (1001, 0.4995)])
def test_expected_zero_fraction_matches_tfmot_rounding(size, sparsity):
    import tensorflow as tf

    kept = int(tf.maximum(tf.math.round(tf.cast(size, tf.float32) * (1 - tf.constant(sparsity, tf.float32))), 1))
    assert schedule.expected_zero_fraction(size, sparsity) == pytest.approx(1 - kept / size)


def test_steps_for():
    assert schedule.steps_for(epochs=3, samples=100, batch_size=32) == 12
