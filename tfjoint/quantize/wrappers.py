"""TF-MOT's QuantizeLayer and QuantizeWrapperV2, fixed so that `.keras` files of prepared models load.

TF-MOT's QAT models do not load from `.keras` on tf_keras 2.21 ("Layer
'quantize_layer' expected 7 variables, but received 4"). Two causes, one per
class, both in how variables are listed, not in what they hold:

* `QuantizeLayer.build` never marks the layer built, so `.keras` loading
  (`build_from_config`, then the functional call) creates its variables twice.
  `JointQuantizeLayer.build` is idempotent.
* `QuantizeWrapperV2` lists its own trainable variables in an order (and with
  duplicates) that depends on whether the inner layer was built and called
  before the wrapper was: TF-MOT's quantize config replaces `layer.kernel` by
  a tensor on every call, which drops the variable from the inner layer's
  list. A freshly built wrapper and a loaded one list them differently, and
  `.keras` restores variables by position. `JointQuantizeWrapper` keeps one
  canonical order: the quantized weights, then the inner layer's other
  trainable variables.

It also respects `trainable=False` (a frozen layer): TF-MOT's wrapper lists
a frozen layer's kernel as trainable *and* non-trainable, so it is trained
anyway and `.h5` saving fails on the duplicate.

`tfjoint.prepare` gives every prepared model these two classes
(`adopt_joint_layers`); they are registered under "tfjoint", behave exactly
as TF-MOT's in training and inference, and `tfjoint.strip` returns TF-MOT's
own classes again.
"""

from typing import Any

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot
from tfjoint._keras import (
    own_non_trainable_weights,
    own_trainable_weights,
    serializable,
    set_own_trainable_weights,
)

__all__ = ["JointQuantizeLayer", "JointQuantizeWrapper", "adopt_joint_layers"]


def _unique(variables) -> list:
    seen, unique = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


_QuantizeLayer: Any = _tfmot.QuantizeLayer  # typed as Any: TF-MOT ships no type information


@serializable
class JointQuantizeLayer(_QuantizeLayer):
    """TF-MOT's input QuantizeLayer whose `build` runs once."""

    def build(self, input_shape):
        if self.built:
            return
        super().build(input_shape)
        self.built = True


@serializable
class JointQuantizeWrapper(tfmot.quantization.keras.QuantizeWrapperV2):
    """TF-MOT's QuantizeWrapperV2 with its trainable variables in one canonical order."""

    def build(self, input_shape):
        super().build(input_shape)
        self.canonicalize_variables()

    def canonicalize_variables(self) -> None:
        """Quantized weights first, then the inner layer's remaining trainable variables, each once."""
        quantized = [weight for weight, _, _ in _tfmot.weight_vars(self)]
        set_own_trainable_weights(self, _unique(quantized + list(own_trainable_weights(self.layer))
                                                + own_trainable_weights(self)))

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return _unique(own_trainable_weights(self) + self.layer.trainable_weights)

    @property
    def non_trainable_weights(self):
        trainable = {id(w) for w in self.trainable_weights}
        every = _unique(self.layer.weights + own_trainable_weights(self) + own_non_trainable_weights(self))
        return [w for w in every if id(w) not in trainable]


def adopt_joint_layers(model):
    """Gives a `quantize_apply` model's QuantizeLayers and wrappers the classes above, in place.

    The subclasses add no state, so swapping the class of the built layers is
    exact; it must happen before the first `fit` builds the optimizer.
    """
    for layer in model.layers:
        if type(layer) is _tfmot.QuantizeLayer:
            layer.__class__ = JointQuantizeLayer
        elif type(layer) is tfmot.quantization.keras.QuantizeWrapperV2:
            layer.__class__ = JointQuantizeWrapper
            layer.canonicalize_variables()
    return model
