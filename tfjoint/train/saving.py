"""`tfjoint.load_model`: any model file a user is likely to hold, as a tf_keras model.

* tf_keras (Keras 2) `.keras`, `.h5` and SavedModel directories, float or
  prepared by tfjoint (prepared models continue their schedule: the step
  counters, masks and quantizer ranges are model weights);
* Keras 3 `.keras` and `.h5` files (the default `tf.keras` since TF 2.16): loaded
  with Keras 3, rebuilt in tf_keras and checked (`tfjoint.from_keras3`).

Every failure names the file and the real cause.
"""

import json
import os
import zipfile

import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint._keras import keras
from tfjoint.bridge.keras3 import from_keras3
from tfjoint.quantize import config as _config  # noqa: F401  (registers tfjoint's Keras objects)
from tfjoint.quantize import wrappers as _wrappers  # noqa: F401  (registers tfjoint's Keras objects)
from tfjoint.train.prepared_model import PreparedModel

__all__ = ["load_model", "saved_keras_version"]

_FORMATS = "a .keras file, an .h5 file or a SavedModel directory"


def _version_of_keras_zip(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise errors.ModelStructureError(
            f"'{path}' is not a Keras .keras file (a zip archive with metadata.json): {error}. "
            "Save the model with model.save('model.keras')."
        ) from error


def _version_of_h5(path: str) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise errors.ModelStructureError(
                    f"'{path}' holds weights only (no model_config): it was written by save_weights. Load the "
                    "model file instead (model.save('model.h5') or 'model.keras')."
                )
            version = handle.attrs.get("keras_version")
    except OSError as error:
        raise errors.ModelStructureError(f"'{path}' is not an HDF5 file: {error}.") from error
    return version.decode() if isinstance(version, bytes) else version


def saved_keras_version(path: str) -> str:
    """The Keras version that wrote `path` ("2.x" for tf_keras, "3.x" for Keras 3)."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "keras_metadata.pb")):
            return "2"
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            raise errors.ModelStructureError(
                f"'{path}' is a SavedModel without a Keras model config (as Keras 3's model.export() or "
                "tf.saved_model.save write): there is no model to rebuild and fine-tune. Pass the model's .keras "
                "file instead (model.save('model.keras'))."
            )
        raise errors.ModelStructureError(f"'{path}' is a directory but not a SavedModel; expected {_FORMATS}.")
    if path.endswith(".keras"):
        version = _version_of_keras_zip(path)
    elif path.endswith((".h5", ".hdf5")):
        version = _version_of_h5(path)
    else:
        raise errors.ModelStructureError(f"'{path}': unknown model file type; expected {_FORMATS}.")
    return str(version or "2")


def _load_tf_keras(path: str, compile: bool):
    try:
        with tfmot.quantization.keras.quantize_scope():
            # .h5 files name a model class by its bare class name, not its registered one.
            return keras.models.load_model(path, compile=compile, custom_objects={"PreparedModel": PreparedModel})
    except errors.TfjointError:
        raise
    except Exception as error:  # tf_keras raises ValueError, KeyError, TypeError ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise errors.ModelStructureError(
            f"could not load '{path}' with tf_keras: {first_line}. If it holds custom layers, register them with "
            "@keras.utils.register_keras_serializable before loading."
        ) from error


def load_model(path: str | os.PathLike, *, compile: bool = True, sample_inputs=None) -> keras.Model:
    """Loads a model saved by tf_keras or Keras 3, float or prepared by tfjoint, as a tf_keras model.

    Args:
      path: a `.keras` file, an `.h5` file or a SavedModel directory.
      compile: restore the optimizer and loss saved with a tf_keras model
        (Keras 3 models are always returned uncompiled: their training
        configuration does not carry over).
      sample_inputs: for a Keras 3 file, inputs to check the tf_keras rebuild
        on (see `tfjoint.from_keras3`); default: seeded random values.

    Raises:
      FileNotFoundError: nothing at `path`.
      errors.ModelStructureError: not a model file, weights only, a SavedModel
        without a Keras config, or a file tf_keras cannot load (the message
        says why).
      errors.UnsupportedLayerError: a Keras 3 model with layers that cannot be
        rebuilt in tf_keras.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model at '{path}': expected {_FORMATS}.")
    if saved_keras_version(path).startswith("3"):
        import keras as keras3

        try:
            model3 = keras3.saving.load_model(path, compile=False)
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise errors.ModelStructureError(
                f"could not load Keras 3 file '{path}': {first_line}. If it holds custom layers, they cannot be "
                "rebuilt in tf_keras anyway: use built-in layers."
            ) from error
        return from_keras3(model3, sample_inputs)
    return _load_tf_keras(path, compile)
