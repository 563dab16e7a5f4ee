"""Reading models and files back: what tests, plots and power users need beside the public API.

Everything here is documented and stable, but not in `tfjoint`'s own
namespace, which holds what a training script calls.

Example:
  >>> import tfjoint.inspect
  >>> sorted(tfjoint.inspect.RUNTIMES)
  ['litert', 'litert_reference', 'tflm']
"""

from tfjoint.prune.schedule import plan_schedule
from tfjoint.registry import kind_of, prunable_layers
from tfjoint.tflite.flatbuffer import read_flatbuffer
from tfjoint.tflite.runtimes import RUNTIMES, TFLiteModel
from tfjoint.tflite.tflm import TFLMModel, measure_arena
from tfjoint.train.model_kind import ModelKind, model_kind
from tfjoint.train.prepared_model import PreparedModel, update_channel_masks
from tfjoint.train.readback import (
    channels_removed,
    is_prepared,
    layer_sparsity,
    pruned_kernels,
    schedule_of,
    training_step,
    weight_sparsity,
)
from tfjoint.train.stripped_model import StrippedModel, TrainingRecord

__all__ = ["ModelKind", "PreparedModel", "RUNTIMES", "StrippedModel", "TFLMModel", "TFLiteModel", "TrainingRecord",
           "channels_removed", "is_prepared", "kind_of", "layer_sparsity", "measure_arena", "model_kind",
           "plan_schedule", "prunable_layers", "pruned_kernels", "read_flatbuffer", "schedule_of", "training_step",
           "update_channel_masks", "weight_sparsity"]
