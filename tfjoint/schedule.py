"""Schedule arithmetic as plain functions over numbers (numpy, no TensorFlow).

These mirror `tfmot.sparsity.keras.PolynomialDecay` and TF-MOT's mask update
(`pruning_impl.Pruning._update_mask`) so that tests, reports and plots can say
what the graph *should* have done at a step without running it. The graph
itself runs TF-MOT's own code; tests check the two agree.
"""

import math

import numpy as np

__all__ = [
    "polynomial_sparsity",
    "is_mask_update_step",
    "last_update_step",
    "scheduled_sparsity",
    "expected_zero_fraction",
]


def polynomial_sparsity(
    step: int,
    *,
    initial_sparsity: float,
    target_sparsity: float,
    begin_step: int,
    end_step: int,
    power: float,
) -> float:
    """TF-MOT's PolynomialDecay sparsity at `step` (whether or not masks update then)."""
    progress = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return target_sparsity + (initial_sparsity - target_sparsity) * (1.0 - progress) ** power


def is_mask_update_step(step: int, *, begin_step: int, end_step: int, frequency: int) -> bool:
    """True if TF-MOT's PolynomialDecay updates masks at `step`."""
    return begin_step <= step <= end_step and (step - begin_step) % frequency == 0


def last_update_step(step: int, *, begin_step: int, end_step: int, frequency: int) -> int | None:
    """The most recent mask-update step at or before `step`, or None if none yet."""
    if step < begin_step:
        return None
    capped = min(step, end_step)
    return begin_step + ((capped - begin_step) // frequency) * frequency


def scheduled_sparsity(
    steps_taken: int,
    *,
    initial_sparsity: float,
    target_sparsity: float,
    begin_step: int,
    end_step: int,
    power: float,
    frequency: int,
) -> float:
    """Sparsity the masks hold after `steps_taken` training steps (0 if never updated).

    As in TF-MOT, the n-th training step (counting from 1) is step n of the
    schedule, so after `steps_taken` steps the last step run was `steps_taken`.
    """
    last = last_update_step(steps_taken, begin_step=begin_step, end_step=end_step, frequency=frequency)
    if last is None:
        return 0.0
    return polynomial_sparsity(
        last,
        initial_sparsity=initial_sparsity,
        target_sparsity=target_sparsity,
        begin_step=begin_step,
        end_step=end_step,
        power=power,
    )


def expected_zero_fraction(size: int, sparsity: float) -> float:
    """Fraction of zeros TF-MOT's mask update leaves in a tensor of `size` elements.

    TF-MOT keeps `max(round(size * (1 - sparsity)), 1)` weights, computed in
    float32 and rounded half to even (`tf.math.round`); float64 arithmetic
    would differ by one weight in some cases.
    """
    one = np.float32(1.0)
    kept = max(int(np.round(np.float32(size) * (one - np.float32(sparsity)))), 1)
    return 1.0 - kept / size


def steps_for(epochs: int, samples: int, batch_size: int) -> int:
    """Training steps `fit` runs for `epochs` over `samples` examples."""
    return epochs * math.ceil(samples / batch_size)
