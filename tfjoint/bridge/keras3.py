"""`tfjoint.from_keras3`: a Keras 3 model (TF 2.16+'s default `tf.keras`) as a checked tf_keras model.

TF-MOT, and so tfjoint's training, runs on tf_keras (Keras 2) only. A Keras 3
Sequential or Functional float model is rebuilt layer by layer in tf_keras
(`translate`), its weights copied, and the copy's outputs compared with the
original's (`equivalence`) before anything trains on it. The models that come
out of `prepare` and `strip` are tf_keras models; the `.tflite` is the
deliverable and runs the same whichever Keras trained it.
"""

import numpy as np
from absl import logging

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


def _random_inputs(model3, fixed: dict | None = None) -> list[np.ndarray]:
    """Seeded samples for every input, uniform in [0, 1) (0 or 1 for integer inputs: ids, masks); unknown
    dimensions get `fixed`'s, else 16."""
    rng = np.random.default_rng(0)
    arrays = []
    for spec in model_inputs(model3):
        name, dims = spec
        dims = (fixed or {}).get(name) or dims
        shape = [_RANDOM_SAMPLES] + [d if d is not None else 16 for d in dims]
        dtype = np.dtype(getattr(spec, "dtype", np.float32))
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:  # ids and masks: 0 or 1
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            arrays.append(rng.random(shape, dtype=np.float32))
    return arrays


_LENGTH_KEYS = ("max_sequence_length", "sequence_length")


def _declared_length(model3) -> int | None:
    """The sequence length a model declares (a keras_hub backbone's `max_sequence_length`, a position embedding's
    `sequence_length`), or None."""
    configs = [model3.get_config() if hasattr(model3, "get_config") else {}]
    configs += [layer.get_config() for layer in getattr(model3, "layers", [])]
    for config in configs:
        for key in _LENGTH_KEYS:
            if isinstance(config, dict) and isinstance(config.get(key), int):
                return int(config[key])
    return None


def _declared_shapes(model3) -> dict | None:
    """For inputs whose sequence axis is unknown: the length the model declares, logged (None if it declares
    none, or every axis is known)."""
    open_inputs = [(name, shape) for name, shape in model_inputs(model3) if len(shape) >= 1 and shape[0] is None]
    length = _declared_length(model3) if open_inputs else None
    if length is None:
        return None
    logging.warning("tfjoint: Keras 3 model '%s' leaves the sequence length of %s open: using the %d it declares "
                    "(max_sequence_length); pass sample_inputs to prepare for another length", model3.name,
                    ", ".join(f"'{name}'" for name, _ in open_inputs), length)
    return {name: (length,) + tuple(shape[1:]) for name, shape in open_inputs}


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
        axes the model leaves unknown (a sequence length). Without them, a
        sequence length left open is the one the model declares (a keras_hub
        backbone's `max_sequence_length`), with a logged warning.
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
    fixed = _declared_shapes(model) if samples is None else {name: array.shape[1:] for (name, _), array in
                                                              zip(model_inputs(model), samples)}
    rebuilt = rebuild_in_tf_keras(model, fixed)
    check_equivalent(model, rebuilt, _random_inputs(model, fixed) if samples is None else samples, rtol)
    return rebuilt
