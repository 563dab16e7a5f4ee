"""`tfjoint.from_keras3`: a Keras 3 model (TF 2.16+'s default `tf.keras`) as a checked tf_keras model.

TF-MOT, and so tfjoint's training, runs on tf_keras (Keras 2) only. A Keras 3
Sequential or Functional float model is rebuilt layer by layer in tf_keras
(`translate`), its weights copied, and the copy's outputs compared with the
original's (`equivalence`) before anything trains on it. The models that come
out of `prepare` and `strip` are tf_keras models; the `.tflite` is the
deliverable and runs the same whichever Keras trained it.
"""

import numpy as np

from tfjoint import errors
from tfjoint._keras import is_keras3_functional, is_keras3_model, keras
from tfjoint.bridge.equivalence import check_equivalent
from tfjoint.bridge.translate import rebuild_in_tf_keras
from tfjoint.data import collect_inputs, model_inputs

__all__ = ["from_keras3", "RTOL"]

RTOL = 1e-5  # relative to the largest output magnitude
_RANDOM_SAMPLES = 16


def _keras3_model_kind(model3) -> str:
    import keras as keras3

    if isinstance(model3, keras3.Sequential):
        return "sequential"
    return "functional" if is_keras3_functional(model3) else "subclassed"


def _random_inputs(model3) -> list[np.ndarray]:
    """Seeded uniform [0, 1) samples for every input; unknown dimensions get 16."""
    rng = np.random.default_rng(0)
    arrays = []
    for tensor in model3.inputs:
        shape = [_RANDOM_SAMPLES] + [d if d is not None else 16 for d in tensor.shape[1:]]
        arrays.append(rng.random(shape, dtype=np.float32))
    return arrays


def from_keras3(model, sample_inputs=None, *, rtol: float = RTOL) -> keras.Model:
    """Rebuilds a Keras 3 Sequential/Functional float model in tf_keras and checks it computes the same.

    Example:
      >>> import keras as keras3, tfjoint
      >>> inputs = keras3.Input((4,))
      >>> model3 = keras3.Model(inputs, keras3.layers.Dense(2, activation="relu")(inputs))
      >>> model = tfjoint.from_keras3(model3)
      >>> type(model).__module__.split(".")[0]
      'tf_keras'

    Args:
      model: a built Keras 3 (`keras` 3.x, or `tf.keras` on TF >= 2.16)
        Sequential or Functional model. A tf_keras model is returned as is.
      sample_inputs: inputs to compare the two models on (an array, a list or
        dict of arrays, a dataset or generator; like `representative_data`).
        Default: seeded random values in [0, 1). Give real data when you have
        it: it exercises the ranges your model sees, and its shapes fix the
        axes the model leaves unknown (a sequence length).
      rtol: largest allowed difference between the two models' outputs,
        relative to the largest output magnitude.

    Returns:
      A tf_keras model with the same layers, names and weights.

    Raises:
      errors.ModelTypeError: a subclassed Keras 3 model, or not a model.
      errors.ModelStructureError: the model is not built.
      errors.UnsupportedLayerError: layers that cannot be rebuilt (custom
        layers, Lambda, nested models, ...), all named; or a rebuild whose
        outputs differ, naming the first diverging layer.
    """
    if not is_keras3_model(model):
        if isinstance(model, keras.Model):
            return model
        raise errors.ModelTypeError(
            f"`model`: expected a Keras 3 model, received {type(model).__module__}.{type(model).__name__}."
        )
    kind = _keras3_model_kind(model)
    if kind == "subclassed":
        raise errors.ModelTypeError(
            f"`model`: Keras 3 model '{model.name}' is a subclassed model ({type(model).__name__}); only "
            "Sequential and Functional models can be rebuilt in tf_keras. Rebuild it with the Functional API "
            "(keras.Input(...) -> layers -> keras.Model(inputs, outputs))."
        )
    if not model.built or not model.inputs:
        raise errors.ModelStructureError(
            f"`model`: Keras 3 model '{model.name}' is not built. Give it an Input (or call model.build(shape))."
        )
    samples = None if sample_inputs is None else collect_inputs(sample_inputs, model, "sample_inputs", max_samples=64)
    # The samples fix the axes the model leaves unknown (a sequence length): an int8 file runs fixed shapes.
    fixed = None if samples is None else {name: array.shape[1:] for (name, _), array in
                                          zip(model_inputs(model), samples)}
    rebuilt = rebuild_in_tf_keras(model, fixed)
    check_equivalent(model, rebuilt, _random_inputs(model) if samples is None else samples, rtol)
    return rebuilt
