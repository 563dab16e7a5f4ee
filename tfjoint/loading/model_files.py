"""A model file read as data: its format, the loader that reads it, and its model config(s) as JSON.

Nothing here deserializes: a `.keras` file is a zip (`config.json`,
`metadata.json`), an `.h5` file keeps its config in an attribute, and a
tf_keras SavedModel keeps one JSON document per object in
`keras_metadata.pb` (a protocol buffer, parsed as data).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import zipfile
from typing import Any

from tfjoint import errors
from tfjoint._keras import saved_model_metadata
from tfjoint.loading.allowlist import KERAS3, TF_KERAS

__all__ = ["FileFormat", "ModelFile", "read_model_file", "FORMATS"]

FORMATS = "a .keras file, an .h5 file or a SavedModel directory"


class FileFormat(enum.Enum):
    KERAS = ".keras"
    H5 = ".h5"
    SAVED_MODEL = "SavedModel"


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A model file, read as data.

    Attributes:
      path: where it is.
      format: `.keras` zip, HDF5, or SavedModel directory.
      loader: `TF_KERAS` or `KERAS3`, from the Keras version the file
        declares (which only picks the loader: every file is checked alike).
      configs: the model config(s): one for `.keras` and `.h5`; one per
        saved object of a SavedModel (its root first).
    """

    path: str
    format: FileFormat
    loader: str
    configs: tuple[Any, ...]

    @property
    def config(self) -> Any:
        """The model's own config (a SavedModel's root object's)."""
        root = self.configs[0] if self.configs else {}
        if self.format is FileFormat.SAVED_MODEL:
            return root.get("config") if isinstance(root, dict) else None
        return root


def _json(text, path: str, what: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError) as error:
        raise errors.ModelStructureError(f"'{path}': its {what} is not valid JSON ({error}); the file is damaged "
                                         "or not a Keras model file.") from error


def _read_keras_zip(path: str) -> ModelFile:
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = _json(archive.read("metadata.json"), path, "metadata.json")
            config = _json(archive.read("config.json"), path, "config.json")
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise errors.ModelStructureError(
            f"'{path}' is not a Keras .keras file (a zip archive with config.json and metadata.json): {error}. "
            "Save the model with model.save('model.keras').") from error
    version = str(metadata.get("keras_version", "2")) if isinstance(metadata, dict) else "2"
    return ModelFile(path, FileFormat.KERAS, KERAS3 if version.startswith("3") else TF_KERAS, (config,))


def _read_h5(path: str) -> ModelFile:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise errors.ModelStructureError(
                    f"'{path}' holds weights only (no model_config): it was written by save_weights. Load the "
                    "model file instead (model.save('model.h5') or 'model.keras').")
            config, version = handle.attrs["model_config"], handle.attrs.get("keras_version")
    except OSError as error:
        raise errors.ModelStructureError(f"'{path}' is not an HDF5 file: {error}.") from error
    version = version.decode() if isinstance(version, bytes) else str(version or "2")
    config = config.decode() if isinstance(config, bytes) else config
    return ModelFile(path, FileFormat.H5, KERAS3 if version.startswith("3") else TF_KERAS,
                     (_json(config, path, "model_config"),))


def _read_saved_model(path: str) -> ModelFile:
    if os.path.exists(os.path.join(path, "keras_metadata.pb")):
        try:
            configs = tuple(saved_model_metadata(path))
        except Exception as error:  # noqa: BLE001  (a damaged protocol buffer)
            raise errors.ModelStructureError(f"'{path}': its keras_metadata.pb cannot be read ({error}).") from error
        return ModelFile(path, FileFormat.SAVED_MODEL, TF_KERAS, configs)
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        raise errors.ModelStructureError(
            f"'{path}' is a SavedModel without a Keras model config (as Keras 3's model.export() or "
            "tf.saved_model.save write): there is no model to rebuild and fine-tune. Pass the model's .keras "
            "file instead (model.save('model.keras')).")
    raise errors.ModelStructureError(f"'{path}' is a directory but not a SavedModel; expected {FORMATS}.")


def read_model_file(path: str) -> ModelFile:
    """The file at `path`, read as data.

    Raises:
      FileNotFoundError: nothing at `path`.
      errors.ModelStructureError: not a model file (or a damaged one), weights
        only, or a SavedModel without a Keras config.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model at '{path}': expected {FORMATS}.")
    if os.path.isdir(path):
        return _read_saved_model(path)
    if path.endswith(".keras"):
        return _read_keras_zip(path)
    if path.endswith((".h5", ".hdf5")):
        return _read_h5(path)
    raise errors.ModelStructureError(f"'{path}': unknown model file type; expected {FORMATS}.")
