"""tfjoint: magnitude pruning and quantization-aware training in one Keras fit.

    joint = tfjoint.prepare(model, target_sparsity=0.8, end_step=2000)
    joint.compile(...); joint.fit(..., callbacks=tfjoint.callbacks())
    deployable = tfjoint.strip(joint)
    report = tfjoint.export_tflite(deployable, "model.tflite", representative_data=x)
"""

from tfjoint._keras import keras
from tfjoint.callbacks import callbacks
from tfjoint.config import JointConfig
from tfjoint.errors import (
    ConfigError,
    DataError,
    ExportError,
    ModelStructureError,
    ModelTypeError,
    TfjointError,
    UnsupportedLayerError,
    ValidationError,
)
from tfjoint.export import export_tflite
from tfjoint.prepare import prepare
from tfjoint.report import ExportReport
from tfjoint.saving import load_model
from tfjoint.strip import strip

__all__ = [
    "keras",
    "prepare",
    "callbacks",
    "strip",
    "load_model",
    "export_tflite",
    "ExportReport",
    "JointConfig",
    "TfjointError",
    "ConfigError",
    "DataError",
    "ExportError",
    "ModelStructureError",
    "ModelTypeError",
    "UnsupportedLayerError",
    "ValidationError",
]

__version__ = "0.1.0"
