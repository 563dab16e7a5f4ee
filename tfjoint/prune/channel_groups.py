"""Channel groups: which output channels of which layers must be removed together.

Removing output channel c of a convolution removes input c of every layer
that reads it. Layers between them (BatchNormalization, activations, pooling,
DepthwiseConv2D) carry the channel along and must drop the same index; an Add
(or Multiply, ...) couples the channels of its inputs, so the producers of
both branches must drop the same indices; a Concatenate lays its inputs'
channels side by side; a Flatten spreads each channel over the spatial
positions of the Dense layer that reads it.

`channel_layouts` walks a model's graph once, in graph order, and says for
every tensor which group each of its channels belongs to (a `Layout`): a
*group* is a set of channels that must be kept or removed together, named
after the first layer that produces it. The same walk serves twice:

* on the float model (`plan_channel_groups`), to find the groups, merge the
  coupled ones, and freeze (keep whole) the groups that must not shrink:
  those reaching a model output, an activation that does not map 0 to 0
  (sigmoid: a removed channel would still feed 0.5 onward), a softmax over
  channels, or a layer whose channels cannot follow (unknown layers,
  grouped convolutions, depth multipliers > 1, reshapes that move the
  channel axis). The frozen ones are reported with the layer that froze them.
* on the prepared model (`tfjoint.strip`), to say which input and output
  channels of every layer the masks kept, so the layers can be rebuilt
  smaller.

Plain Python over Keras layer objects and configs: no TensorFlow ops.
"""

import dataclasses
from typing import Any, Callable, Hashable

from tfjoint import errors
from tfjoint._keras import keras_history, nodes_in_graph_order, tf
from tfjoint.registry import Layout, is_input_layer, kind_of, unwrapped
from tfjoint.registry.channel_rules import Channels, fixed_layout

__all__ = ["Layout", "LayerChannels", "ChannelGroup", "ChannelPlan", "UnionFind", "channel_layouts",
           "plan_channel_groups", "zero_preserving"]

# Activations f with f(0) = 0: a removed (all-zero) channel stays zero after them.
_ZERO_PRESERVING = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "tanh", "swish", "silu", "gelu", "hard_swish", "hard_silu",
    "leaky_relu", "softsign", "mish",
})
_OPAQUE = Channels()  # a layer kind tfjoint does not know


@dataclasses.dataclass
class LayerChannels:
    """One layer's channel layouts: of each input, of its output, and of a group inside it (attention's heads).

    `own` is what the layer's channel masks follow and `strip` removes: its
    output's layout, or the layout of the group inside it.
    """

    inputs: list[Layout]
    output: Layout
    inside: Layout | None = None

    @property
    def own(self) -> Layout:
        return self.inside if self.inside is not None else self.output


@dataclasses.dataclass
class ChannelGroup:
    """A set of channels removed together: the producers scored for it, and every member."""

    name: str
    channels: int
    producers: list[str]
    frozen_by: str | None = None  # why it keeps every channel, or None
    reaches_output: bool = False


@dataclasses.dataclass
class ChannelPlan:
    """The channel groups of a float model, and what each layer's channels belong to."""

    groups: dict[str, ChannelGroup]
    layers: dict[str, LayerChannels]

    @property
    def prunable_groups(self) -> dict[str, ChannelGroup]:
        return {name: group for name, group in self.groups.items() if group.frozen_by is None}

    @property
    def inside_groups(self) -> list[str]:
        """The prunable groups whose channels are inside a layer, not its output (attention's heads), sorted."""
        return sorted({group for entry in self.layers.values() if entry.inside is not None
                       for group in entry.inside.groups() if group in self.prunable_groups})

    def frozen_notes(self, include_outputs: bool = True) -> list[str]:
        """Why each frozen group keeps every channel (the model's own outputs left out on request)."""
        return [f"channels of {', '.join(repr(p) for p in g.producers)} kept whole: {g.frozen_by}"
                for g in self.groups.values() if g.frozen_by is not None
                and (include_outputs or not g.reaches_output)]

    def layer_segments(self, layer_name: str) -> tuple[tuple[str | None, int], ...]:
        """The (group, size) runs of a layer's channels (its output; for a producer, its own group)."""
        return self.layers[layer_name].own.segments


def zero_preserving(activation) -> bool:
    """Whether an activation (function or name) maps 0 to 0."""
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", "")
    return name in _ZERO_PRESERVING


class UnionFind:
    """Disjoint sets of hashable keys (`add` a key before `find` or `union` it)."""

    def __init__(self):
        self.parent: dict[Hashable, Hashable] = {}

    def add(self, name: Hashable) -> None:
        self.parent.setdefault(name, name)

    def find(self, name: Hashable) -> Any:
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: Hashable, b: Hashable) -> Any:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
        return a


def _input_keys(node) -> list[tuple[str, int, int]]:
    keys = []
    for tensor in tf.nest.flatten(node.input_tensors):
        history = keras_history(tensor)
        keys.append((history.layer.name, history.node_index, history.tensor_index))
    return keys


class _Walk:
    """One pass over a model's graph computing every tensor's Layout (see `channel_layouts`): the `ChannelWalk`
    each layer's channel rule talks to.

    `check_activations=False` (for a prepared model, whose activations TF-MOT
    has wrapped) trusts the plan made on the float model.
    """

    def __init__(self, producer_group: Callable, freeze: Callable[[set[str], str], None], merge: Callable,
                 check_activations: bool = True):
        self.producer_group = producer_group
        self.freeze = freeze
        self.merge = merge
        self.check_activations = check_activations

    def zero_preserving(self, activation) -> bool:
        return not self.check_activations or zero_preserving(activation)

    def layouts(self, layer, inputs: list[Layout], output_shape) -> tuple[Layout, Layout | None]:
        """The layout of `layer`'s output (and of a group inside it), from its inputs' layouts and its kind's
        channel rule."""
        inner = unwrapped(layer)
        kind = kind_of(inner)
        channels = kind.channels if kind is not None else _OPAQUE
        return channels.layouts(self, layer, inner, inputs, output_shape)


def channel_layouts(model, producer_group: Callable, freeze: Callable[[set[str], str], None],
                    merge: Callable[[list[str]], str], check_activations: bool = True) -> dict[str, LayerChannels]:
    """The `Layout` of every layer's inputs and output, in graph order.

    Args:
      model: a Functional or Sequential model (float or prepared).
      producer_group: layer -> the group its output channels start, or None.
      freeze: called with groups that must keep every channel, and why.
      merge: called with groups an elementwise merge couples; returns the
        name of the merged group.
      check_activations: freeze groups behind activations that do not map 0
        to 0 (off for a prepared model, planned when it was a float model).

    Raises:
      errors.UnsupportedLayerError: a layer shared between several calls
        (its channels cannot be rebuilt once per call).
    """
    walk = _Walk(producer_group, freeze, merge, check_activations)
    layouts: dict[tuple[str, int, int], Layout] = {}
    found: dict[str, LayerChannels] = {}
    for node in nodes_in_graph_order(model):
        layer = node.layer
        if is_input_layer(layer):
            shape = layer.output_shape[0] if isinstance(layer.output_shape, list) else layer.output_shape
            layouts[(layer.name, 0, 0)] = fixed_layout(shape[-1] or 0)
            continue
        inputs = [layouts[key] for key in _input_keys(node)]
        node_index = layer.inbound_nodes.index(node) if len(layer.inbound_nodes) > 1 else 0
        if node_index and layer.name in found:
            # A layer called again (e.g. the input QuantizeLayer TF-MOT calls once per consumer) is
            # fine when the call changes no channels and sees the channels the first call saw.
            first_call = found[layer.name]
            if not _shares_cleanly(layer, first_call, inputs, producer_group):
                raise errors.UnsupportedLayerError(
                    f"layer '{layer.name}' ({type(layer).__name__}) is called more than once (a shared layer) on "
                    "inputs whose channels are pruned differently, or it removes channels itself: channel pruning "
                    "cannot rebuild its channels for each call. Use channel_sparsity=0 for this model, or unshare "
                    "the layer (one layer per call)."
                )
            layouts[(layer.name, node_index, 0)] = first_call.output
            continue
        output_shape = layer.output_shape[0] if isinstance(layer.output_shape, list) else layer.output_shape
        output, inside = walk.layouts(layer, inputs, tuple(output_shape))
        layouts[(layer.name, node_index, 0)] = output
        found[layer.name] = LayerChannels(inputs, output, inside)
    return found


def _shares_cleanly(layer, first_call: "LayerChannels", inputs: list, producer_group: Callable) -> bool:
    """Whether a second call of `layer` on `inputs` can share the first call's channels."""
    return (list(inputs) == list(first_call.inputs) and producer_group(layer) is None
            and first_call.output == (first_call.inputs[0] if first_call.inputs else None))


def plan_channel_groups(model, producers: set[str]) -> ChannelPlan:
    """The channel groups of a float model whose `producers` (layer names) may lose output channels.

    Groups reaching a model output, or anything else that must keep every
    channel, are frozen (see the module docstring); a frozen group is kept
    whole in every layer it touches.
    """
    union = UnionFind()
    frozen: dict[str, str] = {}

    def producer_group(layer):
        if layer.name not in producers:
            return None
        union.add(layer.name)
        return layer.name

    def freeze(groups, reason):
        for group in groups:
            frozen.setdefault(union.find(group), reason)

    def merge(groups):
        root = groups[0]
        for group in groups[1:]:
            before = {union.find(root), union.find(group)}
            root = union.union(root, group)
            reasons = [frozen.pop(g) for g in before if g in frozen]
            if reasons:
                frozen[union.find(root)] = reasons[0]
        return union.find(root)

    layers = channel_layouts(model, producer_group, freeze, merge)
    output_groups = set()
    for output in model.outputs:
        layer = keras_history(output).layer
        reached = layers[layer.name].output.groups() if layer.name in layers else set()
        freeze(reached, f"they reach the model output '{layer.name}'")
        output_groups |= {union.find(g) for g in reached}
    for name in list(layers):  # canonical group names, after every merge
        entry = layers[name]
        layers[name] = LayerChannels([layout.renamed(union.find) for layout in entry.inputs],
                                     entry.output.renamed(union.find),
                                     entry.inside.renamed(union.find) if entry.inside is not None else None)
    groups: dict[str, ChannelGroup] = {}
    for name in producers:
        if name not in union.parent:
            continue
        root = union.find(name)
        group = groups.setdefault(root, ChannelGroup(root, layers[name].own.channels, []))
        group.producers.append(name)
    for root, reason in frozen.items():
        if union.find(root) in groups:
            groups[union.find(root)].frozen_by = groups[union.find(root)].frozen_by or reason
    for group in groups.values():
        group.producers.sort(key=list(layers).index)
        group.reaches_output = group.name in output_groups
    return ChannelPlan(groups, layers)
