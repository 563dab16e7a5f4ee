"""The layer registry: what tfjoint knows about each kind of Keras layer, in one entry per kind.

An entry (`LayerKind`) is a composition of facets: `Pruning` (which weight
magnitude pruning zeroes), `Channels` (how channel pruning follows the layer,
as a `ChannelRule` behaviour object, and how `strip` shrinks it),
`Quantization` (TF-MOT's config, a config of tfjoint's, a layout `Rewrite`
class, or refused with the reason) and `Keras3` (what the bridge
translates), plus the TFLite operators it becomes. Entries are keyed by class
and found through the MRO, so a subclass inherits its parent's entry;
`register_layer` adds or overrides one (a user's custom layer, tf_keras or
Keras 3, registers the same way as tfjoint's own), and `scoped()` limits
registrations to a block.

Every stage (prepare, channel planning, strip, the report, explain) asks the
registry; no other module names a Keras layer class or one of its weights.
"""

from tfjoint.registry import builtin as _builtin  # noqa: F401  (registers the built-in kinds)
from tfjoint.registry.channel_rules import CHANNEL_RULES, OUTPUT, ChannelRule, Channels, Layout
from tfjoint.registry.keras3_layers import Arrays, Rebuilt
from tfjoint.registry.kind import Keras3, LayerKind, Pruning, Quantization, Residual, Rewrite
from tfjoint.registry.recurrent import recurrent_layers
from tfjoint.registry.rewrites import identity_layer
from tfjoint.registry.table import (
    class_names,
    int8_kinds_sentence,
    is_input_layer,
    kind_of,
    needs_calibration,
    needs_static_batch,
    offset_variables,
    offset_weight_names,
    output_channels,
    prunable_kinds_sentence,
    prunable_layers,
    pruned_variable,
    pruned_weight_name,
    pruned_weight_names,
    register_layer,
    registered_kinds,
    scoped,
    unwrapped,
    weight_variable,
)

__all__ = ["CHANNEL_RULES", "OUTPUT", "Arrays", "ChannelRule", "Channels", "Layout", "Keras3", "LayerKind",
           "Pruning", "Quantization", "Rebuilt", "Residual", "Rewrite", "class_names", "identity_layer",
           "int8_kinds_sentence",
           "is_input_layer", "kind_of", "needs_calibration", "needs_static_batch", "offset_variables",
           "offset_weight_names", "output_channels", "prunable_kinds_sentence", "prunable_layers", "pruned_variable",
           "pruned_weight_name", "pruned_weight_names", "recurrent_layers", "register_layer", "registered_kinds",
           "scoped", "unwrapped", "weight_variable"]
