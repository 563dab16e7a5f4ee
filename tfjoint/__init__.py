"""tfjoint: magnitude pruning and quantization-aware training in one Keras fit.

    joint = tfjoint.prepare(model, target_sparsity=0.8, end_step=2000)
    joint.compile(...); joint.fit(..., callbacks=tfjoint.callbacks())
    deployable = tfjoint.strip(joint)
    report = tfjoint.export_tflite(deployable, "model.tflite", representative_data=x)

Importing tfjoint sets `TF_USE_LEGACY_KERAS=1` (if unset) so that TensorFlow,
imported afterwards, uses Keras 2 (`tf_keras`), which TF-MOT needs. TensorFlow
itself is imported on first use of a public name, so the `tfjoint` command can
quiet TensorFlow's logging before it loads. This module is the public API and
nothing else: every name below is importable as `tfjoint.<name>`.
"""

import importlib
import os
from typing import TYPE_CHECKING

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.3.0"

_EXPORTS = {
    "keras": "tfjoint._keras",
    # Models in.
    "from_keras3": "tfjoint.bridge.keras3",
    # Prune and quantize in one fit.
    "JointSchedule": "tfjoint.prune.schedule",
    "plan_schedule": "tfjoint.prune.schedule",
    "prepare": "tfjoint.train.prepare",
    "LayerSelection": "tfjoint.prune.selection",
    "callbacks": "tfjoint.train.callbacks",
    "strip": "tfjoint.train.strip",
    "load_model": "tfjoint.train.saving",
    "PreparedModel": "tfjoint.train.prepared_model",
    "Distiller": "tfjoint.train.distill",
    "allocate_sparsity": "tfjoint.prune.allocation",
    "Budget": "tfjoint.prune.budget",
    "plan_for_budget": "tfjoint.plan.for_budget",
    "CompressionPlan": "tfjoint.prune.budget",
    "update_channel_masks": "tfjoint.train.prepared_model",
    "prunable_layers": "tfjoint.registry.table",
    # What tfjoint knows about each kind of layer.
    "LayerKind": "tfjoint.registry.kind",
    "Pruning": "tfjoint.registry.kind",
    "Channels": "tfjoint.registry.channels",
    "Quantization": "tfjoint.registry.kind",
    "Keras3": "tfjoint.registry.kind",
    "register_layer": "tfjoint.registry.table",
    "kind_of": "tfjoint.registry.table",
    # Reading a prepared model back.
    "pruned_kernels": "tfjoint.train.readback",
    "training_step": "tfjoint.train.readback",
    "layer_sparsity": "tfjoint.train.readback",
    "schedule_of": "tfjoint.train.readback",
    "is_prepared": "tfjoint.train.readback",
    # Export.
    "export_tflite": "tfjoint.export.tflite",
    "Tolerances": "tfjoint.export.validate",
    "ExportOptions": "tfjoint.export.options",
    "ExportReport": "tfjoint.export.report",
    "read_flatbuffer": "tfjoint.tflite.flatbuffer",
    "TFLiteModel": "tfjoint.export.runtime",
    "TFLMModel": "tfjoint.export.tflm",
    "RUNTIMES": "tfjoint.export.runtime",
    "write_c_array": "tfjoint.export.micro",
    # Errors.
    "TfjointError": "tfjoint.errors",
    "ConfigError": "tfjoint.errors",
    "DataError": "tfjoint.errors",
    "ExportError": "tfjoint.errors",
    "ModelStructureError": "tfjoint.errors",
    "ModelTypeError": "tfjoint.errors",
    "UnsupportedLayerError": "tfjoint.errors",
    "ValidationError": "tfjoint.errors",
    "UnsafeFileError": "tfjoint.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names load on first use
    from tfjoint._keras import keras
    from tfjoint.bridge.keras3 import from_keras3
    from tfjoint.errors import (
        ConfigError,
        DataError,
        ExportError,
        ModelStructureError,
        ModelTypeError,
        TfjointError,
        UnsafeFileError,
        UnsupportedLayerError,
        ValidationError,
    )
    from tfjoint.export.micro import write_c_array
    from tfjoint.export.options import ExportOptions
    from tfjoint.export.report import ExportReport
    from tfjoint.export.runtime import RUNTIMES, TFLiteModel
    from tfjoint.export.tflite import export_tflite
    from tfjoint.export.tflm import TFLMModel
    from tfjoint.export.validate import Tolerances
    from tfjoint.plan.for_budget import plan_for_budget
    from tfjoint.prune.allocation import allocate_sparsity
    from tfjoint.prune.budget import Budget, CompressionPlan
    from tfjoint.prune.schedule import JointSchedule, plan_schedule
    from tfjoint.prune.selection import LayerSelection
    from tfjoint.registry.channels import Channels
    from tfjoint.registry.kind import Keras3, LayerKind, Pruning, Quantization
    from tfjoint.registry.table import kind_of, prunable_layers, register_layer
    from tfjoint.tflite.flatbuffer import read_flatbuffer
    from tfjoint.train.callbacks import callbacks
    from tfjoint.train.distill import Distiller
    from tfjoint.train.prepare import prepare
    from tfjoint.train.prepared_model import PreparedModel, update_channel_masks
    from tfjoint.train.readback import is_prepared, layer_sparsity, pruned_kernels, schedule_of, training_step
    from tfjoint.train.saving import load_model
    from tfjoint.train.strip import strip


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfjoint' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
