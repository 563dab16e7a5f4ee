"""tfjoint: magnitude pruning and quantization-aware training in one Keras fit.

    joint = tfjoint.prepare(model, target_sparsity=0.8, end_step=2000)
    joint.compile(...); joint.fit(..., callbacks=tfjoint.callbacks())
    deployable = tfjoint.strip(joint)
    report = tfjoint.export_tflite(deployable, "model.tflite", representative_data=x)

Importing tfjoint sets `TF_USE_LEGACY_KERAS=1` (if unset) so that TensorFlow,
imported afterwards, uses Keras 2 (`tf_keras`), which TF-MOT needs. TensorFlow
itself is imported on first use of a public name, so the `tfjoint` command can
quiet TensorFlow's logging before it loads.
"""

import importlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"

_EXPORTS = {
    "keras": "tfjoint._keras",
    "prepare": "tfjoint.preparation",
    "callbacks": "tfjoint.training_callbacks",
    "strip": "tfjoint.stripping",
    "load_model": "tfjoint.saving",
    "export_tflite": "tfjoint.export",
    "ExportReport": "tfjoint.report",
    "JointConfig": "tfjoint.config",
    "TfjointError": "tfjoint.errors",
    "ConfigError": "tfjoint.errors",
    "DataError": "tfjoint.errors",
    "ExportError": "tfjoint.errors",
    "ModelStructureError": "tfjoint.errors",
    "ModelTypeError": "tfjoint.errors",
    "UnsupportedLayerError": "tfjoint.errors",
    "ValidationError": "tfjoint.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfjoint' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
