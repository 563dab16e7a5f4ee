"""What tf_keras creates on a train function's first call, created before it: the first epoch traces once, not twice.

Why this module exists: `tf.function` traces a function a second time when
its first trace created variables. tf_keras's train function creates them on
its first call: the optimizer's slots (`apply_gradients` builds the optimizer
then) and the compiled metrics (`"accuracy"` becomes a metric object once
the labels' shape is known). So every `fit` traced the whole training step
twice; on MobileNetV2 that is about 10 s of the first epoch, on a small CNN
half of it. Keras 3 builds both before tracing; this does the same for
tf_keras, with tf_keras's own `build` methods and the labels' spec from what
`fit` was given.

Where the labels' structure cannot be read from `fit`'s arguments (a
generator, a `keras.utils.Sequence`) or is not one label array per output
(a dict, which tf_keras matches to the outputs by name), the metrics are left
to the first trace, as tf_keras does: that costs the second trace and nothing
else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfjoint._keras import tf

__all__ = ["build_before_tracing"]


def build_before_tracing(model, x: Any, y: Any, variables, outputs) -> None:
    """Builds `model`'s optimizer and compiled metrics now, as its first training step would.

    Args:
      model: a compiled, built tf_keras model about to be fit.
      x, y: `fit`'s data (arrays, tensors, or a `tf.data.Dataset` of
        `(x, y[, sample_weight])`).
      variables: the variables the train step optimizes, all of them built.
      outputs: the structure of (symbolic) tensors the train step passes to
        the compiled loss and metrics as predictions, or None if unknown.
    """
    if getattr(model, "optimizer", None) is None:
        return
    with model.distribute_strategy.scope():
        _build_optimizer(model.optimizer, variables)
        labels = _label_spec(x, y)
        if labels is not None and outputs is not None:
            _build_metrics(model, outputs, labels)


def _build_optimizer(optimizer, variables) -> None:
    from tf_keras.src.optimizers import optimizer as optimizer_module

    # The optimizers tf_keras's compile makes (and LossScaleOptimizer, one of them); a legacy optimizer creates its
    # slots on the first step, as before.
    if isinstance(optimizer, optimizer_module.Optimizer) and not getattr(optimizer, "_built", False):
        optimizer.build(list(variables))


def _spec(value) -> tf.TensorSpec | None:
    if isinstance(value, tf.TensorSpec):
        return value
    if isinstance(value, (np.ndarray, tf.Tensor)) and len(value.shape) >= 1:
        return tf.TensorSpec([None, *value.shape[1:]], tf.as_dtype(value.dtype))
    return None


def _label_spec(x, y):
    """The labels' structure of specs, or None where it cannot be read from `fit`'s arguments."""
    if y is None and isinstance(x, tf.data.Dataset):
        element = x.element_spec
        if not isinstance(element, tuple) or len(element) < 2:
            return None
        y = element[1]
    if y is None:
        return None
    if isinstance(y, (list, tuple)):
        y = tuple(y)
    specs = tf.nest.map_structure(_spec, y)
    return None if any(s is None for s in tf.nest.flatten(specs)) else specs


def _build_metrics(model, outputs, labels) -> None:
    predictions = tuple(outputs) if isinstance(outputs, (list, tuple)) else outputs
    if not _one_label_per_output(predictions, labels):
        return  # dicts, nested or broadcast labels: tf_keras conforms and builds them in the trace, as before
    losses, metrics = getattr(model, "compiled_loss", None), getattr(model, "compiled_metrics", None)
    if losses is not None and not getattr(losses, "_built", True):
        losses.build(predictions)
    if metrics is not None and not getattr(metrics, "_built", True):
        metrics.build(predictions, labels)


def _one_label_per_output(predictions, labels) -> bool:
    """True for one output and one label array, or equally long tuples of them: the structures tf_keras builds
    from as they are."""
    if isinstance(predictions, tuple):
        return (isinstance(labels, tuple) and len(labels) == len(predictions)
                and all(_is_leaf(p) and isinstance(label, tf.TensorSpec) for p, label in zip(predictions, labels)))
    return _is_leaf(predictions) and isinstance(labels, tf.TensorSpec)


def _is_leaf(value) -> bool:
    return not isinstance(value, (list, tuple, dict))
