"""`tfjoint.load_model`: any model file a user is likely to hold, as a tf_keras model, and no code from it.

* tf_keras (Keras 2) `.keras`, `.h5` and SavedModel directories, float or
  prepared by tfjoint (prepared models continue their schedule: the step
  counters, masks and quantizer ranges are model weights);
* Keras 3 `.keras` and `.h5` files (the default `tf.keras` since TF 2.16): loaded
  with Keras 3, rebuilt in tf_keras and checked (`tfjoint.from_keras3`).

A model file is data. With `safe_mode=True` (the default), before anything is
deserialized, the file's config is read as JSON and every class or function it
names is resolved against an allowlist (`tfjoint.loading.allowlist`): what a
model is made of, from Keras, tf_keras, keras_hub, TF-MOT and tfjoint, or
what the user registered in this process. Anything else (a function of another
module, Python bytecode, a TFOpLambda outside tensor math, a layer that runs
another program) is refused with `UnsafeFileError`, naming the file, the layer
and the reference. The declared Keras version only picks the loader; both
loaders then run in their own safe mode, and a SavedModel is rebuilt from its
configs and its variables (never revived from its graph functions).

The checks are thread-safe: nothing process-global is patched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile

import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint._keras import decoded_metadata, keras, safe_mode_scope
from tfjoint.bridge.keras3 import from_keras3
from tfjoint.loading.allowlist import KERAS3, Refusal, Scan, check_config, substituted
from tfjoint.loading.model_files import FileFormat, ModelFile, read_model_file
from tfjoint.quantize import config as _config  # noqa: F401  (registers tfjoint's Keras objects)
from tfjoint.quantize import wrappers as _wrappers  # noqa: F401  (registers tfjoint's Keras objects)
from tfjoint.train.prepared_model import PreparedModel
from tfjoint.train.stripped_model import StrippedModel

__all__ = ["load_model", "scan_file"]


def scan_file(model_file: ModelFile) -> Scan:
    """Every reference in the file's config(s) that is not allowed, and the registered Lambdas to load by name."""
    refusals: list[Refusal] = []
    substitutions: list = []
    for index, config in enumerate(model_file.configs):
        scan = check_config(config, model_file.loader, _OWN_OBJECTS)
        refusals += scan.refusals
        if index == 0 or model_file.format is not FileFormat.SAVED_MODEL:
            substitutions += scan.substitutions
    return Scan(tuple(dict.fromkeys(refusals)), tuple(substitutions))


def _where(refusal: Refusal) -> str:
    reference = refusal.reference
    layer = f"layer '{reference.layer}'" if reference.layer else "the model"
    owner = f" ({reference.layer_class})" if reference.layer_class else ""
    return f"{layer}{owner}: '{reference.dotted}': {refusal.reason}"


def _advice(model_file: ModelFile, refusals: tuple[Refusal, ...]) -> str:
    lambdas = [r for r in refusals if r.bytecode]
    if model_file.loader == KERAS3 and lambdas:
        return ("tfjoint cannot bring a Keras 3 Lambda into tf_keras, whatever safe_mode says: replace it by built-in "
                "layers, or by a custom layer registered with keras.saving.register_keras_serializable (and "
                "tfjoint.register_layer to say how it is quantized).")
    if model_file.loader == KERAS3:
        return ("If the file is yours, import and register what it names (keras.saving.register_keras_serializable) "
                "before loading (the tfjoint command: --imports=your_module); Keras 3 itself loads no other module's "
                "code.")
    advice = []
    if lambdas:
        advice.append("register the Lambda's function with @keras.utils.register_keras_serializable before loading "
                      "(it then loads by name, from your code), or replace the Lambda by built-in layers")
    if len(lambdas) < len(refusals):
        advice.append("register each class or function it names (keras.utils.register_keras_serializable) before "
                      "loading, if it is yours (the tfjoint command: --imports=your_module)")
    return ("To load it: " + "; ".join(advice) + ". If you trust the file as a program, "
            "tfjoint.load_model(path, safe_mode=False) (or `tfjoint --unsafe_load`) loads it as tf_keras would, "
            "running what it names.")


def _refuse(model_file: ModelFile, refusals: tuple[Refusal, ...]) -> None:
    shown = "; ".join(_where(r) for r in refusals[:6]) + (f"; and {len(refusals) - 6} more" if len(refusals) > 6
                                                          else "")
    raise errors.UnsafeFileError(
        f"'{model_file.path}' names code that loading it would run ({shown}). A model file is data: tfjoint "
        f"loads only what a model is made of (Keras, tf_keras, keras_hub, TF-MOT and tfjoint layers, activations, "
        f"initializers, ... and objects registered in this process). {_advice(model_file, refusals)}",
        file=model_file.path, references=tuple(r.reference.dotted for r in refusals))


# What an .h5 file names by its bare class name (tfjoint's models); the loader passes them.
_OWN_OBJECTS = {"PreparedModel": PreparedModel, "StrippedModel": StrippedModel}


def _objects(scan: Scan) -> dict:
    objects = dict(_OWN_OBJECTS)
    registered = keras.utils.get_custom_objects()
    objects.update({s.registered_name: registered[s.registered_name] for s in scan.substitutions})
    return objects


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__


@contextlib.contextmanager
def _as_structure_error(path: str, how: str):
    try:
        yield
    except errors.TfjointError:
        raise
    except Exception as error:  # noqa: BLE001  (tf_keras raises ValueError, KeyError, TypeError, ...)
        raise errors.ModelStructureError(
            f"could not load '{path}' with {how}: {_first_line(error)}. If it holds custom layers, register them "
            "with @keras.utils.register_keras_serializable before loading.") from error


def _rewritten_keras_zip(model_file: ModelFile, config, directory: str) -> str:
    """A copy of the .keras file whose config.json is `config` (the registered Lambdas named by their functions)."""
    import json

    target = os.path.join(directory, os.path.basename(model_file.path))
    with zipfile.ZipFile(model_file.path) as source, zipfile.ZipFile(target, "w") as copy:
        for item in source.infolist():
            data = json.dumps(config).encode() if item.filename == "config.json" else source.read(item.filename)
            copy.writestr(item, data)
    return target


def _compile_from(model, training_config) -> None:
    from tf_keras.src.saving.legacy import saving_utils

    if training_config:
        model.compile(**saving_utils.compile_args_from_training_config(training_config))


def _load_tf_keras(model_file: ModelFile, scan: Scan, compile: bool):
    """A tf_keras file whose config passed the allowlist, in tf_keras's safe mode."""
    objects = _objects(scan)
    with _as_structure_error(model_file.path, "tf_keras"), tfmot.quantization.keras.quantize_scope(objects), \
            safe_mode_scope(True):
        if model_file.format is FileFormat.KERAS:
            with tempfile.TemporaryDirectory() as directory:
                path = model_file.path if not scan.substitutions else _rewritten_keras_zip(
                    model_file, substituted(model_file.config, scan.substitutions), directory)
                return keras.models.load_model(path, compile=compile, safe_mode=True)
        if model_file.format is FileFormat.H5 and not scan.substitutions:
            return keras.models.load_model(model_file.path, compile=compile)
        return _rebuilt(model_file, scan, compile)


def _rebuilt(model_file: ModelFile, scan: Scan, compile: bool):
    """The model rebuilt from its (checked) config, its weights read from the file: a SavedModel is never revived
    from its graph functions, and an .h5 file's registered Lambdas load by name."""
    if model_file.format is FileFormat.SAVED_MODEL:
        root = model_file.configs[0] if model_file.configs else {}
        if not isinstance(root, dict) or not isinstance(root.get("config"), dict) or "layers" not in root["config"]:
            raise errors.UnsafeFileError(
                f"'{model_file.path}' is a SavedModel whose model cannot be rebuilt from its config (a subclassed "
                f"model, class {root.get('class_name') if isinstance(root, dict) else '?'!r}): loading it would "
                "revive the file's own graph functions, which are a program. If you trust the file, "
                "tfjoint.load_model(path, safe_mode=False) (or `tfjoint --unsafe_load`); better, save the model "
                "as .keras.", file=model_file.path, references=())
        config = decoded_metadata({"class_name": root["class_name"], "config": root["config"]})
        weights = os.path.join(model_file.path, "variables", "variables")
        training_config = decoded_metadata(root.get("training_config"))
    else:
        config, weights = model_file.config, model_file.path
        training_config = _h5_training_config(model_file.path)
    model = keras.models.model_from_config(substituted(config, scan.substitutions), custom_objects=_objects(scan))
    status = model.load_weights(weights)
    if status is not None and hasattr(status, "expect_partial"):
        status.expect_partial()  # a SavedModel also holds its functions' and optimizer's objects
    if compile:
        _compile_from(model, training_config)
    return model


def _h5_training_config(path: str):
    import json

    import h5py

    with h5py.File(path, "r") as handle:
        text = handle.attrs.get("training_config")
    if text is None:
        return None
    return json.loads(text.decode() if isinstance(text, bytes) else text)


def _load_keras3(model_file: ModelFile, sample_inputs, safe_mode: bool):
    import keras as keras3

    try:
        model3 = keras3.saving.load_model(model_file.path, compile=False, safe_mode=safe_mode)
    except Exception as error:  # noqa: BLE001
        raise errors.ModelStructureError(
            f"could not load Keras 3 file '{model_file.path}': {_first_line(error)}. If it holds custom layers, "
            "register them (keras.saving.register_keras_serializable) before loading.") from error
    return from_keras3(model3, sample_inputs)


def _load_trusted(model_file: ModelFile, compile: bool):
    """The file as tf_keras loads it outside safe mode (code from the file may run: the user trusts it)."""
    with _as_structure_error(model_file.path, "tf_keras"), tfmot.quantization.keras.quantize_scope(_OWN_OBJECTS):
        if model_file.format is FileFormat.KERAS:
            return keras.models.load_model(model_file.path, compile=compile, safe_mode=False)
        return keras.models.load_model(model_file.path, compile=compile)


def load_model(path: str | os.PathLike, *, compile: bool = True, sample_inputs=None,
               safe_mode: bool = True) -> keras.Model:
    """Loads a model saved by tf_keras or Keras 3, float or prepared by tfjoint, as a tf_keras model.

    Example:
      model = tfjoint.load_model("float.keras")   # refused if it names code

    Args:
      path: a `.keras` file, an `.h5` file or a SavedModel directory.
      compile: restore the optimizer and loss saved with a tf_keras model
        (Keras 3 models are always returned uncompiled: their training
        configuration does not carry over). Defaults to True.
      sample_inputs: for a Keras 3 file, inputs to check the tf_keras rebuild
        on (see `tfjoint.from_keras3`); default: seeded random values.
      safe_mode: check every class and function the file names against the
        allowlist before anything loads, and refuse the file otherwise
        (defaults to True). Pass False only for a file you trust as a program:
        tf_keras then imports what it names, runs its bytecode and revives a
        SavedModel's graph functions.

    Raises:
      FileNotFoundError: nothing at `path`.
      errors.UnsafeFileError: the file names code loading it would run and
        `safe_mode` is on (the message names the layer and the reference).
      errors.ModelStructureError: not a model file, weights only, a SavedModel
        without a Keras config, or a file tf_keras cannot load (the message
        says why).
      errors.UnsupportedLayerError: a Keras 3 model with layers that cannot be
        rebuilt in tf_keras.
    """
    path = os.fspath(path)
    if not isinstance(safe_mode, bool):
        raise errors.ConfigError(f"`safe_mode` must be True or False; received {safe_mode!r}.")
    model_file = read_model_file(path)
    if not safe_mode:
        if model_file.loader == KERAS3:
            return _load_keras3(model_file, sample_inputs, safe_mode=False)
        return _load_trusted(model_file, compile)
    scan = scan_file(model_file)
    if scan.refusals:
        _refuse(model_file, scan.refusals)
    if model_file.loader == KERAS3:
        return _load_keras3(model_file, sample_inputs, safe_mode=True)
    return _load_tf_keras(model_file, scan, compile)

