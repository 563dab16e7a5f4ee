"""What kind of model the user handed in (float, prepared, stripped, or quantization-aware from TF-MOT), found once.

Stages after `prepare` receive a model and must know what it is; they ask
here once and pass the `ModelKind` along instead of asking again.
"""

from __future__ import annotations

import enum

from tfjoint import _tfmot
from tfjoint.train.readback import is_prepared

__all__ = ["ModelKind", "model_kind"]


class ModelKind(enum.Enum):
    FLOAT = "float"  # a float model: post-training quantization
    PREPARED = "prepared"  # from tfjoint.prepare (trained or not, or loaded from a file)
    STRIPPED = "stripped"  # from tfjoint.strip: TF-MOT's QAT layers and the record of their training
    QUANTIZATION_AWARE = "quantization_aware"  # a TF-MOT quantization-aware model made without tfjoint

    @property
    def quantization_aware(self) -> bool:
        """Whether the model has fake quantization (trained int8 ranges, possibly)."""
        return self is not ModelKind.FLOAT


def model_kind(model) -> ModelKind:
    """The kind of a tf_keras model (a `tfjoint.Distiller` must be unwrapped to its student first)."""
    if is_prepared(model):
        return ModelKind.PREPARED
    if getattr(model, "training", None) is not None and hasattr(model, "_tfjoint_training"):
        return ModelKind.STRIPPED
    if any(_tfmot.is_quantize_wrapper(layer) for layer in model.layers):
        return ModelKind.QUANTIZATION_AWARE
    return ModelKind.FLOAT
