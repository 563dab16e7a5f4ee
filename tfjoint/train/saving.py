"""`tfjoint.load_model`: any model file a user is likely to hold, as a tf_keras model.

* tf_keras (Keras 2) `.keras`, `.h5` and SavedModel directories, float or
  prepared by tfjoint (prepared models continue their schedule: the step
  counters, masks and quantizer ranges are model weights);
* Keras 3 `.keras` and `.h5` files (the default `tf.keras` since TF 2.16): loaded
  with Keras 3, rebuilt in tf_keras and checked (`tfjoint.from_keras3`).

A model file is untrusted input. With `safe_mode=True` (the default) the
file's model config is read as JSON first, and a file that would run Python
code on loading (a `Lambda` whose function is bytecode stored in the file,
in any format: `.h5`, `.keras`, SavedModel; tf_keras or Keras 3) is refused
before any of it runs, naming the layer and the file. A `Lambda` of a
registered, importable function (stored by name, not as code) loads.

Every failure names the file and the real cause.
"""

import contextlib
import json
import os
import zipfile

import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint._keras import (
    bytecode_function_name,
    keras,
    registered_function,
    registered_functions_for_bytecode,
    saved_model_metadata,
)
from tfjoint.bridge.keras3 import from_keras3
from tfjoint.quantize import config as _config  # noqa: F401  (registers tfjoint's Keras objects)
from tfjoint.quantize import wrappers as _wrappers  # noqa: F401  (registers tfjoint's Keras objects)
from tfjoint.train.prepared_model import PreparedModel

__all__ = ["load_model", "saved_keras_version", "code_in_file"]

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


def _file_configs(path: str) -> list:
    """The model config(s) a file holds, as JSON (nothing deserialized, no code run)."""
    if os.path.isdir(path):
        return saved_model_metadata(path)
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            return [json.loads(archive.read("config.json"))]
    import h5py

    with h5py.File(path, "r") as handle:
        config = handle.attrs.get("model_config")
    return [json.loads(config.decode() if isinstance(config, bytes) else config)] if config is not None else []


def _code(node, layer: str | None = None, owner: str = "?") -> list[tuple[str, str, str]]:
    """(layer name, class, what) for every place in a config that stores Python code to run on loading."""
    found = []
    if isinstance(node, dict):
        config = node.get("config")
        name = (config.get("name") if isinstance(config, dict) else None) or node.get("name") or layer
        class_name = node.get("class_name")
        if class_name == "__lambda__":  # Keras 3: a lambda's bytecode
            found.append((layer or "?", owner, "a Python lambda stored as bytecode"))
        for key in ("function", "output_shape"):  # tf_keras: a Lambda's function (or output_shape) as bytecode
            if node.get(f"{key}_type") == "lambda" and node.get(key) is not None:
                function = bytecode_function_name(node[key])
                if registered_function(function, node.get(f"{key}_module" if key != "function" else "module")):
                    continue  # a registered function: loaded by name, its bytecode never used
                found.append((node.get("name") or layer or "?", owner, f"its {key}, stored as Python bytecode"))
        for value in node.values():
            found += _code(value, name if class_name else layer, class_name if class_name != "__lambda__" and
                           isinstance(class_name, str) else owner)
    elif isinstance(node, list):
        for value in node:
            found += _code(value, layer, owner)
    return found


def code_in_file(path: str) -> list[tuple[str, str, str]]:
    """(layer, class, what) for every piece of Python code loading `path` would run (empty: safe to load)."""
    found = []
    for config in _file_configs(path):
        found += _code(config)
    return list(dict.fromkeys(found))


def _refuse_code(path: str) -> None:
    found = code_in_file(path)
    if found:
        layers = "; ".join(f"layer '{name}' ({class_name}): {what}" for name, class_name, what in found)
        raise errors.UnsafeFileError(
            f"'{path}' holds code that loading it would run ({layers}). tfjoint does not run code from a model file "
            "unless told to: if you trust the file, load it with tfjoint.load_model(path, safe_mode=False) (or "
            "`tfjoint --unsafe_load`); better, replace the function by a built-in layer, or by a registered function "
            "(keras.utils.register_keras_serializable), which the file stores by name.")


def _load_tf_keras(path: str, compile: bool, safe_mode: bool):
    try:
        # .h5 files name a model class by its bare class name, not its registered one. In safe mode the file was
        # scanned: the Lambdas left are registered functions, which load by name (tf_keras's own safe mode would
        # refuse them: it stores them as bytecode too).
        objects = {"PreparedModel": PreparedModel}
        by_name = registered_functions_for_bytecode() if safe_mode else contextlib.nullcontext()
        with tfmot.quantization.keras.quantize_scope(), by_name:
            if path.endswith(".keras"):
                return keras.models.load_model(path, compile=compile, custom_objects=objects, safe_mode=False)
            return keras.models.load_model(path, compile=compile, custom_objects=objects)
    except errors.TfjointError:
        raise
    except Exception as error:  # tf_keras raises ValueError, KeyError, TypeError ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise errors.ModelStructureError(
            f"could not load '{path}' with tf_keras: {first_line}. If it holds custom layers, register them with "
            "@keras.utils.register_keras_serializable before loading."
        ) from error


def load_model(path: str | os.PathLike, *, compile: bool = True, sample_inputs=None,
               safe_mode: bool = True) -> keras.Model:
    """Loads a model saved by tf_keras or Keras 3, float or prepared by tfjoint, as a tf_keras model.

    Args:
      path: a `.keras` file, an `.h5` file or a SavedModel directory.
      compile: restore the optimizer and loss saved with a tf_keras model
        (Keras 3 models are always returned uncompiled: their training
        configuration does not carry over).
      sample_inputs: for a Keras 3 file, inputs to check the tf_keras rebuild
        on (see `tfjoint.from_keras3`); default: seeded random values.
      safe_mode: refuse a file whose loading would run Python code stored in
        it (a `Lambda` of bytecode), before any of it runs. Pass False only
        for a file you trust.

    Raises:
      FileNotFoundError: nothing at `path`.
      errors.UnsafeFileError: the file holds code to run and `safe_mode` is
        on (the message names the layer).
      errors.ModelStructureError: not a model file, weights only, a SavedModel
        without a Keras config, or a file tf_keras cannot load (the message
        says why).
      errors.UnsupportedLayerError: a Keras 3 model with layers that cannot be
        rebuilt in tf_keras.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model at '{path}': expected {_FORMATS}.")
    if not isinstance(safe_mode, bool):
        raise errors.ConfigError(f"`safe_mode` must be True or False; received {safe_mode!r}.")
    version = saved_keras_version(path)
    if safe_mode:
        _refuse_code(path)
    if version.startswith("3"):
        import keras as keras3

        try:
            model3 = keras3.saving.load_model(path, compile=False, safe_mode=safe_mode)
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise errors.ModelStructureError(
                f"could not load Keras 3 file '{path}': {first_line}. If it holds custom layers, they cannot be "
                "rebuilt in tf_keras anyway: use built-in layers."
            ) from error
        return from_keras3(model3, sample_inputs)
    return _load_tf_keras(path, compile, safe_mode)
