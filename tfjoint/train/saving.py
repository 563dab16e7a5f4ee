"""`tfjoint.load_model`: load a prepared, stripped or float model saved by Keras.

Prepared models save with `model.save("x.h5")` or `model.save("dir")`
(SavedModel) and continue their schedule after loading: the step counters,
masks and quantizer ranges are model weights. `.keras` files of TF-MOT QAT
models do not load on this stack (tf_keras 2.21 / TF-MOT 0.8: the input
QuantizeLayer's variables are restored out of order), so loading one of those
raises an error that says which formats work.
"""

import os

import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint.quantize import config as _config  # noqa: F401  (registers tfjoint's Keras objects)
from tfjoint._keras import keras

__all__ = ["load_model", "WORKING_FORMATS"]

WORKING_FORMATS = "an .h5 file (model.save('model.h5')) or a SavedModel directory (model.save('model_dir'))"


def load_model(path: str | os.PathLike, *, compile: bool = True) -> keras.Model:
    """Loads a tf_keras model that may hold TF-MOT and tfjoint layers.

    Args:
      path: an `.h5` file, a SavedModel directory, or a `.keras` file (float
        models only; see the module docstring).
      compile: restore the optimizer and loss saved with the model.

    Raises:
      FileNotFoundError: nothing at `path`.
      errors.ModelStructureError: a `.keras` file holding a QAT model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model at '{path}': expected {WORKING_FORMATS}, or a float model's .keras file.")
    with tfmot.quantization.keras.quantize_scope():
        if not path.endswith(".keras"):
            return keras.models.load_model(path, compile=compile)
        try:
            return keras.models.load_model(path, compile=compile)
        except Exception as error:  # tf_keras raises ValueError or KeyError here
            raise errors.ModelStructureError(
                f"could not load '{path}': quantization-aware (TF-MOT / tfjoint) models saved as .keras "
                f"do not load back on tf_keras 2.21 with TF-MOT 0.8. Save them as {WORKING_FORMATS}. "
                f"(Keras said: {str(error).splitlines()[0] if str(error) else type(error).__name__})"
            ) from error
