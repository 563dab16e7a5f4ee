"""The channels facet of a layer kind: how its output channels relate to its inputs', as behaviour objects.

A `Layout` says which channel group each channel (last axis) of a tensor
belongs to. A `ChannelRule` computes a layer's output layout from its inputs'
layouts: a producer (Conv, Dense) starts a group, a BatchNorm follows its
input, an Add merges its inputs' groups, a Concatenate lays them side by
side, a Flatten spreads them over positions. Attention (`HEADS`) starts a
group inside itself, its heads, and leaves its output's channels whole: a
layer's *own* layout is the one its channel masks and `strip` follow. `tfjoint.prune.channel_groups` walks a
model's graph once and asks each layer's rule (through a `ChannelWalk`); a
kind whose rule is `OPAQUE` keeps the channels around it whole.

`Channels` is the facet a `LayerKind` holds: the rule, what blocks it for a
particular layer, which weights carry the channel masks, which axes `strip`
slices, which weights a removal zeroes (for the planner's sensitivity scan),
and how the layer is rebuilt smaller.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Mapping, Protocol

from tfjoint import errors

__all__ = ["Layout", "ChannelWalk", "ChannelRule", "Channels", "NEW", "FOLLOWS", "CONCATENATES", "MERGES",
           "FLATTENS", "RESHAPES", "HEADS", "OPAQUE", "CHANNEL_RULES", "OUTPUT", "rule_named", "fixed_layout",
           "spatial_positions"]

OUTPUT = "__output__"  # in `Channels.axes`: mask the layer's output instead of a weight


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which group each channel (last axis) of a tensor belongs to.

    `segments` are (group, size) runs in channel order; group None means
    channels that are never removed. With `positions` > 0 the tensor is a
    Flatten of `positions` spatial positions of those channels (feature
    p * channels + c is channel c at position p).
    """

    segments: tuple[tuple[str | None, int], ...]
    positions: int = 0

    @property
    def channels(self) -> int:
        return sum(size for _, size in self.segments)

    def groups(self) -> set[str]:
        return {group for group, _ in self.segments if group is not None}

    def renamed(self, find: Callable[[str], str]) -> "Layout":
        return Layout(tuple((find(g) if g is not None else None, n) for g, n in self.segments), self.positions)


def fixed_layout(channels: int) -> Layout:
    """The layout of channels that are never removed."""
    return Layout(((None, int(channels)),))


def spatial_positions(layer) -> int:
    """Positions per channel in the layer's input (0 if any dimension is unknown)."""
    positions = 1
    for dim in layer.input_shape[1:-1]:
        positions *= dim if dim is not None else 0
    return positions


class ChannelWalk(Protocol):
    """What a rule may ask of the graph walk (`tfjoint.prune.channel_groups`) for one layer call."""

    def producer_group(self, layer) -> str | None:
        """The group `layer` starts, if it is a producer the plan prunes."""

    def freeze(self, groups: set[str], reason: str) -> None:
        """Keeps every channel of `groups`, for `reason`."""

    def merge(self, groups: list[str]) -> str:
        """Couples `groups` (an elementwise merge); returns the merged group's name."""

    def zero_preserving(self, activation) -> bool:
        """Whether `activation` maps 0 to 0 (a removed channel stays zero after it)."""


def _activation_name(activation) -> str:
    return getattr(activation, "__name__", type(activation).__name__)


@dataclasses.dataclass(frozen=True)
class _Call:
    """One layer call as a rule sees it: the layer (wrapped or not), its inputs' layouts, its output shape."""

    walk: Any
    layer: Any
    inner: Any
    inputs: list
    channels: int

    @property
    def first(self) -> Layout:
        return self.inputs[0] if self.inputs else fixed_layout(self.channels)

    def opaque(self, reason: str) -> Layout:
        for layout in self.inputs:
            self.walk.freeze(layout.groups(), f"layer '{self.inner.name}' ({type(self.inner).__name__}) {reason}")
        return fixed_layout(self.channels)


class ChannelRule:
    """How a layer's output channels relate to its inputs' (subclass and override `output_layout`)."""

    name = "opaque"
    producer = False  # starts channel groups of its own (ranked by its pruned weight)

    def output_layout(self, call: _Call) -> Layout:
        return call.opaque("is a layer whose channels tfjoint cannot follow")

    def own_layout(self, call: _Call) -> Layout | None:
        """The layout of channels inside the layer that its masks follow, where they are not its output's."""
        return None

    def __repr__(self) -> str:
        return f"<channel rule '{self.name}'>"


class _New(ChannelRule):
    """It makes new channels from all of its input (Conv, Dense): a producer."""

    name, producer = "new", True

    def output_layout(self, call: _Call) -> Layout:
        group = call.walk.producer_group(call.layer)
        if group is None:
            return fixed_layout(call.channels)
        activation = getattr(call.inner, "activation", None)
        if activation is not None and not call.walk.zero_preserving(activation):
            call.walk.freeze({group}, f"layer '{call.inner.name}' has activation '{_activation_name(activation)}', "
                                      "which does not map 0 to 0")
        return Layout(((group, call.channels),))


class _Follows(ChannelRule):
    """Output channel c is computed from input channel c only (BatchNorm, pooling, depthwise, activations)."""

    name = "follows"

    def output_layout(self, call: _Call) -> Layout:
        activation = getattr(call.inner, "activation", None)
        if activation is not None and not call.walk.zero_preserving(activation):
            return call.opaque(f"applies '{_activation_name(activation)}', which does not map 0 to 0")
        return call.first


class _Merges(ChannelRule):
    """Elementwise over inputs with the same channels (Add, Multiply): their groups are coupled."""

    name = "merges"

    def output_layout(self, call: _Call) -> Layout:
        shapes = {tuple(size for _, size in layout.segments) for layout in call.inputs}
        if len(shapes) != 1:
            return call.opaque("merges inputs whose channels are grouped differently")
        merged = []
        for segments in zip(*(layout.segments for layout in call.inputs)):
            groups = [group for group, _ in segments]
            if any(group is None for group in groups):
                call.walk.freeze({g for g in groups if g is not None},
                                 f"layer '{call.inner.name}' ({type(call.inner).__name__}) adds them to channels that "
                                 "are never removed")
                merged.append((None, segments[0][1]))
                continue
            merged.append((call.walk.merge(groups), segments[0][1]))
        return Layout(tuple(merged))


class _Concatenates(ChannelRule):
    """Its inputs' channels side by side."""

    name = "concatenates"

    def output_layout(self, call: _Call) -> Layout:
        return Layout(tuple(segment for layout in call.inputs for segment in layout.segments))


class _Flattens(ChannelRule):
    """Every channel spread over the spatial positions (Flatten)."""

    name = "flattens"

    def output_layout(self, call: _Call) -> Layout:
        positions = spatial_positions(call.layer)
        if not positions:
            return call.opaque("flattens a tensor of unknown size")
        return Layout(call.first.segments, positions)


class _Reshapes(ChannelRule):
    """Keeps the channel axis if the last dimension is unchanged; a reshape to one axis flattens (Reshape)."""

    name = "reshapes"

    def output_layout(self, call: _Call) -> Layout:
        target = tuple(call.inner.target_shape)
        if target and target[-1] == call.first.channels:
            return call.first  # the channel axis survives; only spatial axes are regrouped
        if len(target) == 1:
            positions = spatial_positions(call.layer)
            if positions:
                return Layout(call.first.segments, positions)
        return call.opaque("reshapes the channel axis away")


class _Heads(ChannelRule):
    """Multi-head attention: its heads are a group of its own, removed whole; its output channels never are.

    A head's query, key and value projections and its rows of the output
    projection go together (the layer's `num_heads` shrinks). The input
    channels the projections read are kept whole.
    """

    name, producer = "heads", True

    def output_layout(self, call: _Call) -> Layout:
        for layout in call.inputs:
            call.walk.freeze(layout.groups(), f"attention '{call.inner.name}' reads them (its projections keep their "
                                              "input channels)")
        return fixed_layout(call.channels)

    def own_layout(self, call: _Call) -> Layout | None:
        # Heads not pruned (another attention layer's are) are kept whole: its heads, never its output channels.
        group = call.walk.producer_group(call.layer)
        return Layout(((group, int(call.inner.num_heads)),))


NEW, FOLLOWS, MERGES, CONCATENATES = _New(), _Follows(), _Merges(), _Concatenates()
FLATTENS, RESHAPES, HEADS, OPAQUE = _Flattens(), _Reshapes(), _Heads(), ChannelRule()
CHANNEL_RULES = (NEW, FOLLOWS, CONCATENATES, MERGES, FLATTENS, RESHAPES, HEADS, OPAQUE)


def rule_named(rule) -> ChannelRule:
    """A `ChannelRule` from itself or its name ("follows")."""
    if isinstance(rule, ChannelRule):
        return rule
    for known in CHANNEL_RULES:
        if known.name == rule:
            return known
    raise errors.ConfigError(f"`channels` must be one of {[r.name for r in CHANNEL_RULES]} (or a ChannelRule); "
                             f"received {rule!r}.")


def _frozen(mapping) -> Mapping:
    return types.MappingProxyType(dict(mapping or {}))


@dataclasses.dataclass(frozen=True)
class Channels:
    """How channel pruning treats a layer kind.

    Attributes:
      rule: how its output channels relate to its inputs' (a `ChannelRule`
        or its name: "new", "follows", "concatenates", "merges", "flattens",
        "reshapes", "heads", "opaque"). Defaults to opaque: channel pruning keeps the
        channels around it whole.
      blocker: `(layer, output rank) -> reason or None`: why this particular
        layer cannot be followed (a grouped convolution, a BatchNorm over
        another axis). The reason is shown to the user.
      axes: weights that carry a channel mask, with the axis the mask
        broadcasts along (`OUTPUT` masks the layer's output).
      sliced: when channels go, weight name -> {"in": axis, "out": axis}:
        which axes lose the removed input / output channels.
      zeroed: the weights a channel removal zeroes, along their axis in
        `axes` (the last by default): the planner's sensitivity scan removes
        channels this way, untrained.
      range_channels: whether per-channel quantizer ranges follow the "out"
        channels (a Conv's filters) or the "in" ones (a depthwise conv's).
      resize: `(config, output channels) -> config` of the smaller layer.
      count: `layer -> channels` it outputs, for the report.
      unit: what one channel is called in the report ("channels"; "heads"
        for attention).
      unit_width: `layer -> output channels of its weight tensors per unit`
        (an attention head's key_dim), to count units in the file.
    """

    rule: ChannelRule = OPAQUE
    blocker: Callable[[Any, int], str | None] | None = None
    axes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    sliced: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    zeroed: tuple[str, ...] = ()
    range_channels: str = "out"
    resize: Callable[[dict, int], dict] | None = None
    count: Callable[[Any], int | None] | None = None
    unit: str = "channels"
    unit_width: Callable[[Any], int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "rule", rule_named(self.rule))
        if self.range_channels not in ("in", "out"):
            raise errors.ConfigError(f"`range_channels` must be 'in' or 'out'; received {self.range_channels!r}.")
        for name in ("blocker", "resize", "count", "unit_width"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise errors.ConfigError(f"`{name}` must be a function or None; received {value!r}.")
        object.__setattr__(self, "axes", _frozen(self.axes))
        object.__setattr__(self, "sliced", _frozen({k: _frozen(v) for k, v in dict(self.sliced).items()}))
        object.__setattr__(self, "zeroed", tuple(self.zeroed))

    def layouts(self, walk, layer, inner, inputs: list[Layout], output_shape) -> tuple[Layout, Layout | None]:
        """The layout of `layer`'s output, and of its own channel group where that is inside it (attention's
        heads), else None (`inner` is the layer a quantize wrapper holds, or `layer`)."""
        channels = output_shape[-1] if output_shape and output_shape[-1] is not None else 0
        call = _Call(walk, layer, inner, list(inputs), channels)
        if any(layout.positions for layout in inputs) and not self.rule.producer:
            return call.opaque("reads flattened channels"), None
        blocked = self.blocker(inner, len(output_shape) if output_shape else 0) if self.blocker else None
        if blocked:
            return call.opaque(blocked), None
        return self.rule.output_layout(call), self.rule.own_layout(call)
