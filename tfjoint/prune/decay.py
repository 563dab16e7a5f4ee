"""`JointPolynomialDecay`: TF-MOT's PolynomialDecay that always reaches its target at `end_step`.

TF-MOT updates masks only where `(step - begin_step) % frequency == 0`, so an
`end_step` off that grid is never reached: the masks stop at the last grid
step below it, at less than the target, silently. This subclass keeps every
grid value of TF-MOT's schedule exactly (tested against it) and adds one mask
update at `end_step` itself.
"""

import tensorflow_model_optimization as tfmot

from tfjoint._keras import tf

__all__ = ["JointPolynomialDecay"]


class JointPolynomialDecay(tfmot.sparsity.keras.PolynomialDecay):
    """PolynomialDecay with a final mask update at `end_step`, on or off the frequency grid."""

    def _should_prune_in_step(self, step, begin_step, end_step, frequency):
        on_grid = super()._should_prune_in_step(step, begin_step, end_step, frequency)
        return tf.math.logical_or(on_grid, tf.math.equal(step, tf.cast(end_step, step.dtype)))
