"""tfjoint: magnitude pruning and quantization-aware training in one Keras fit, exported to a validated int8 file.

    import tfjoint
    import tf_keras as keras

    joint = tfjoint.prepare(model, 0.8)                  # 80% of every kernel pruned, by the middle of the fit
    joint.compile(...); joint.fit(..., callbacks=tfjoint.callbacks())
    report = tfjoint.export_tflite(tfjoint.strip(joint), "model.tflite",
                                   representative_data=x_train, validation_data=(x_val, y_val))

Importing tfjoint sets `TF_USE_LEGACY_KERAS=1` (if unset) so that TensorFlow,
imported afterwards, uses Keras 2 (`tf_keras`), which TF-MOT needs. TensorFlow
itself is imported on first use of a public name, so the `tfjoint` command can
quiet TensorFlow's logging before it loads.

The public names are below; `tfjoint.inspect` reads models and files back,
`tfjoint.registry` says how each kind of layer is pruned and quantized, and
`tfjoint.errors` holds every error class.
"""

import importlib
import os
import warnings
from typing import TYPE_CHECKING

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.4.0"

_EXPORTS = {
    # Models in.
    "load_model": "tfjoint.loading.load",
    "from_keras3": "tfjoint.bridge.keras3",
    # Prune and quantize in one fit.
    "prepare": "tfjoint.train.prepare",
    "JointSchedule": "tfjoint.prune.schedule",
    "LayerSelection": "tfjoint.prune.selection",
    "callbacks": "tfjoint.train.callbacks",
    "Distiller": "tfjoint.train.distill",
    "strip": "tfjoint.train.strip",
    # Plans.
    "allocate_sparsity": "tfjoint.prune.allocation",
    "Budget": "tfjoint.plan.budget",
    "CompressionPlan": "tfjoint.plan.budget",
    "plan_for_budget": "tfjoint.plan.for_budget",
    # Export.
    "export_tflite": "tfjoint.export.export_tflite",
    "ExportOptions": "tfjoint.export.options",
    "Tolerances": "tfjoint.export.options",
    "ExportReport": "tfjoint.export.report",
    "write_c_array": "tfjoint.export.micro",
    # Your own layers.
    "register_layer": "tfjoint.registry.table",
    # Errors (every class is in tfjoint.errors).
    "TfjointError": "tfjoint.errors",
    "ConfigError": "tfjoint.errors",
    "UnsafeFileError": "tfjoint.errors",
    "ValidationError": "tfjoint.errors",
}

__all__ = sorted(_EXPORTS)

# Names of tfjoint 0.3 that moved: each still works for one release, with a DeprecationWarning naming where it went.
_MOVED = {
    "keras": ("tfjoint._keras", "import tf_keras as keras"),
    "plan_schedule": ("tfjoint.prune.schedule", "tfjoint.inspect.plan_schedule (or leave end_step to the fit)"),
    "update_channel_masks": ("tfjoint.train.prepared_model", "tfjoint.inspect.update_channel_masks"),
    "prunable_layers": ("tfjoint.registry.table", "tfjoint.inspect.prunable_layers"),
    "LayerKind": ("tfjoint.registry.kind", "tfjoint.registry.LayerKind"),
    "Pruning": ("tfjoint.registry.kind", "tfjoint.registry.Pruning"),
    "Channels": ("tfjoint.registry.channel_rules", "tfjoint.registry.Channels"),
    "Quantization": ("tfjoint.registry.kind", "tfjoint.registry.Quantization"),
    "Keras3": ("tfjoint.registry.kind", "tfjoint.registry.Keras3"),
    "kind_of": ("tfjoint.registry.table", "tfjoint.registry.kind_of"),
    "pruned_kernels": ("tfjoint.train.readback", "tfjoint.inspect.pruned_kernels"),
    "training_step": ("tfjoint.train.readback", "tfjoint.inspect.training_step"),
    "layer_sparsity": ("tfjoint.train.readback", "tfjoint.inspect.layer_sparsity"),
    "schedule_of": ("tfjoint.train.readback", "tfjoint.inspect.schedule_of"),
    "is_prepared": ("tfjoint.train.readback", "tfjoint.inspect.is_prepared"),
    "PreparedModel": ("tfjoint.train.prepared_model", "tfjoint.inspect.PreparedModel"),
    "read_flatbuffer": ("tfjoint.tflite.flatbuffer", "tfjoint.inspect.read_flatbuffer"),
    "TFLiteModel": ("tfjoint.tflite.runtimes", "tfjoint.inspect.TFLiteModel"),
    "TFLMModel": ("tfjoint.tflite.tflm", "tfjoint.inspect.TFLMModel"),
    "RUNTIMES": ("tfjoint.tflite.runtimes", "tfjoint.inspect.RUNTIMES"),
    "DataError": ("tfjoint.errors", "tfjoint.errors.DataError"),
    "ExportError": ("tfjoint.errors", "tfjoint.errors.ExportError"),
    "ModelStructureError": ("tfjoint.errors", "tfjoint.errors.ModelStructureError"),
    "ModelTypeError": ("tfjoint.errors", "tfjoint.errors.ModelTypeError"),
    "UnsupportedLayerError": ("tfjoint.errors", "tfjoint.errors.UnsupportedLayerError"),
}
_SUBMODULES = ("inspect", "registry", "errors", "findings")

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names load on first use
    from tfjoint.bridge.keras3 import from_keras3
    from tfjoint.errors import ConfigError, TfjointError, UnsafeFileError, ValidationError
    from tfjoint.export.export_tflite import export_tflite
    from tfjoint.export.micro import write_c_array
    from tfjoint.export.options import ExportOptions, Tolerances
    from tfjoint.export.report import ExportReport
    from tfjoint.loading.load import load_model
    from tfjoint.plan.budget import Budget, CompressionPlan
    from tfjoint.plan.for_budget import plan_for_budget
    from tfjoint.prune.allocation import allocate_sparsity
    from tfjoint.prune.schedule import JointSchedule
    from tfjoint.prune.selection import LayerSelection
    from tfjoint.registry.table import register_layer
    from tfjoint.train.callbacks import callbacks
    from tfjoint.train.distill import Distiller
    from tfjoint.train.prepare import prepare
    from tfjoint.train.strip import strip


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        module, where = _MOVED[name]
        warnings.warn(f"tfjoint.{name} is deprecated and will be removed in tfjoint 0.5: use {where}.",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfjoint.{name}")
    raise AttributeError(f"module 'tfjoint' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + __all__ + list(_SUBMODULES))
