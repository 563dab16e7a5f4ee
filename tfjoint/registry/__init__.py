"""The layer registry: what tfjoint knows about each kind of Keras layer, in one entry per kind.

An entry (`LayerKind`) says which weight is pruned, how the layer's output
channels relate to its input channels, how `strip` shrinks it when channels
go, how it is quantized (TF-MOT's config, a config of tfjoint's, a tfjoint
rewrite, or refused with the reason), and which TFLite operators it becomes.
Entries are keyed by class and found through the MRO, so a subclass inherits
its parent's entry; `register_layer` adds or overrides one (a user's custom
layer registers the same way as tfjoint's own).

Every stage (prepare, channel planning, strip, the report, explain) asks the
registry; no other module names a Keras layer class.
"""

from tfjoint.registry import builtin as _builtin  # noqa: F401  (registers the built-in kinds)
from tfjoint.registry.table import (
    CHANNEL_RULES,
    LayerKind,
    Quantization,
    class_names,
    is_input_layer,
    kind_of,
    needs_calibration,
    needs_static_batch,
    output_channels,
    prunable_layers,
    pruned_variable,
    pruned_weight_name,
    pruned_weight_names,
    register_layer,
    unwrapped,
)

__all__ = ["CHANNEL_RULES", "LayerKind", "Quantization", "class_names", "is_input_layer", "kind_of",
           "needs_calibration", "needs_static_batch", "output_channels", "prunable_layers", "pruned_variable",
           "pruned_weight_name", "pruned_weight_names", "register_layer", "unwrapped"]
