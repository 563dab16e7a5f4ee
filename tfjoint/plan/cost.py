"""What a channel plan costs on the device, predicted without training: flash, TFLM arena and MACs.

The model is prepared (nothing pruned) and converted once to the int8 file
`export_tflite` would write; its tensors are read back and each tensor axis
that carries channels is tied to the channel groups of the layer it comes
from (`tfjoint.prune.channel_groups`). A plan that keeps `k` of a group's `C`
channels shrinks every axis the group spans accordingly; the prediction
replays, on the shrunk tensors:

* flash: the file's bytes minus the weights, biases and per-channel
  quantization parameters that go;
* RAM (`ram_bytes`): the arena, plus for LUT-compressed kernels the
  alternate memory DECODE writes the largest of them into (`alt_bytes`);
* arena: TFLM's planner on the shrunk activations (`export.memory`, the
  planner followed exactly), but never below `head_floor_bytes`, the head
  TFLM needed for a plan whose activations needed less (TFLM's planning
  memory and the kernels' temporaries set a floor that no activation size
  shows; measured on the smallest plan, or set by the planner from a plan it
  measured; for attention, plus the scratch memory TFLM's head for the full
  file has beyond the replay, which removing heads does not shrink), plus
  TFLM's persistent tail, measured on the full
  file and reduced by the per-channel operator data of the removed filters (an
  estimate when tflite-micro is not installed);
* MACs: per weight operator, from the shrunk shapes;
* with weight bits (`bits={layer: 4}`): the layer's kernel as TFLM's LUT
  compression stores it, `2**bits` values per table
  (`export.compression.lut_bytes`), where that saves bytes at all.

Everything here is a prediction. `measure_plan` builds the file a plan gives
(the masks set where the schedule ends, untrained) and measures it, so the
planner can check its prediction in TFLM; `export_tflite(budget=...)` measures
the real file and refuses one that misses a budget.
"""

import dataclasses

import numpy as np

from tfjoint._keras import keras
from tfjoint._names import float_layer_name
from tfjoint.data import sample_inputs_of
from tfjoint.export import memory
from tfjoint.export.candidates import Candidate
from tfjoint.export.compression import MIN_SAVING_BYTES, compress_candidate, lut_bytes
from tfjoint.plan.budget import CompressionPlan
from tfjoint.prune.channel_groups import ChannelPlan, Layout
from tfjoint.prune.schedule import JointSchedule, kept_channels
from tfjoint.quantize.clusters import along_range, shares_one_table
from tfjoint.quantize.substitution import substituted
from tfjoint.registry import pruned_variable, pruned_weight_name
from tfjoint.registry.table import channel_axis
from tfjoint.tflite import convert, tflm
from tfjoint.tflite.flatbuffer import FlatbufferSummary, layer_of, read_flatbuffer
from tfjoint.tflite.operators import op_macs, operator
from tfjoint.train.conversion_check import ranges_initialized
from tfjoint.train.prepare import prepare
from tfjoint.train.prepared_model import finish_channel_pruning
from tfjoint.train.strip import strip

__all__ = ["CostModel", "Kernel", "build_cost_model", "measure_plan", "ONE_CHANNEL", "PER_CHANNEL_QUANTIZATION_BYTES",
           "PER_CHANNEL_OP_DATA_BYTES"]

# The channel fraction that leaves one channel in any group (TF-MOT's rounding keeps at least one).
ONE_CHANNEL = 1.0 - 1e-9

# The least a kernel's LUT compression must save for the planner to count on it (the export compresses a tensor
# that saves MIN_SAVING_BYTES, by its own estimate; planning well above that leaves room for the difference).
PLANNED_LUT_SAVING_BYTES = 4 * MIN_SAVING_BYTES
# A per-channel quantized tensor stores a float32 scale and an int64 zero point per channel.
PER_CHANNEL_QUANTIZATION_BYTES = 12
# TFLM keeps an int32 multiplier and shift per output channel of a convolution (`Operator.per_channel_op_data`).
PER_CHANNEL_OP_DATA_BYTES = 8


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A layer's weight tensor in the int8 file: what LUT compression of it would cost (`CostModel.predict`)."""

    index: int  # tensor index
    name_length: int
    per_channel: bool
    # Its channels are its quantizer's range axis, so they may share one table (`clusters.shares_one_table`);
    # not a depthwise kernel's, whose range runs along its multiplier.
    shareable: bool = False


@dataclasses.dataclass(frozen=True)
class _Axis:
    """One tensor axis that carries channels: its layout (groups side by side, maybe flattened positions)."""

    axis: int
    layout: Layout


def _kept(layout: Layout, kept_by_group: dict[str, int]) -> int:
    channels = sum(kept_by_group.get(group, size) if group is not None else size for group, size in layout.segments)
    return channels * max(layout.positions, 1)


class CostModel:
    """Predicts flash bytes, TFLM arena bytes and MACs of the int8 file for a channel plan.

    Attributes:
      groups: channel group -> its channel count (the prunable groups only).
      full: the figures of the unpruned int8 file (flash and MACs read from
        it; the arena measured in TFLM when installed, else estimated).
      head_floor_bytes: the least head any plan needs (TFLM's planning
        memory); 0 until measured.
    """

    def __init__(self, summary: FlatbufferSummary, content: bytes, axes: dict[int, list[_Axis]],
                 groups: dict[str, int], tail_bytes: int | None, arena_measured: bool, head_floor_bytes: int = 0,
                 kernels: dict[str, Kernel] | None = None, head_offset_bytes: int = 0):
        self._summary = summary
        self.kernels = dict(kernels or {})
        self._axes = axes
        self._constants = {t.index for t in summary.constant_tensors}
        self._file_bytes = len(content)
        self._tail = tail_bytes or 0
        self._per_channel = {t.index for t in summary.tensors if len(t.scales) > 1}
        self.groups = dict(groups)
        self.arena_measured = arena_measured
        self.head_floor_bytes = int(head_floor_bytes)
        self.head_offset_bytes = int(head_offset_bytes)
        self.full = self.predict({})

    def _shapes(self, kept_by_group: dict[str, int]) -> dict[int, tuple[int, ...]]:
        shapes = {}
        for tensor in self._summary.tensors:
            shape = list(tensor.shape)
            for axis in self._axes.get(tensor.index, []):
                if shape and -len(shape) <= axis.axis < len(shape):
                    shape[axis.axis] = _kept(axis.layout, kept_by_group)
            shapes[tensor.index] = tuple(shape)
        return shapes

    def kept_channels(self, fractions: dict[str, float]) -> dict[str, int]:
        """Channels each group keeps when `fractions` of them are removed (TF-MOT's rounding, at least one)."""
        return {group: kept_channels(size, fractions.get(group, 0.0)) for group, size in self.groups.items()}

    def predict(self, fractions: dict[str, float], bits: dict[str, int] | None = None) -> dict[str, int]:
        """Flash, arena (and its head) and MACs of the int8 file with `fractions` of each group's channels removed.

        `bits`: layer -> index bits of its kernel under LUT compression (8 or
        absent: stored as int8).
        """
        kept = self.kept_channels(fractions)
        shapes = self._shapes(kept)
        by_index = {t.index: t for t in self._summary.tensors}
        flash = self._file_bytes
        removed_op_channels = 0
        for index in self._constants:
            tensor = by_index[index]
            new_size = int(np.prod(shapes[index], dtype=np.int64)) if shapes[index] else 1
            old_size = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
            itemsize = tensor.nbytes // old_size if old_size else 0
            flash -= (old_size - new_size) * itemsize
            if index in self._per_channel and tensor.shape:
                axis_removed = len(tensor.scales) - self._scaled_channel_count(tensor, shapes[index])
                flash -= axis_removed * PER_CHANNEL_QUANTIZATION_BYTES
        macs = 0
        for op in self._summary.ops:
            inputs = [shapes.get(i, ()) for i in op.inputs]
            output = shapes.get(op.outputs[0], ()) if op.outputs else ()
            macs += op_macs(op.name, inputs, output)
            if operator(op.name).per_channel_op_data and op.outputs:
                original = by_index[op.outputs[0]].shape
                if original and output:
                    removed_op_channels += int(original[-1]) - int(output[-1])
        buffers = []
        for size, first, last, index in self._buffers():
            tensor = by_index[index]
            old = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape else 1
            new = int(np.prod(shapes[index], dtype=np.int64)) if shapes[index] else 1
            buffers.append((size * new // old if old else size, first, last))
        compressed = [(kernel, b) for layer, b in (bits or {}).items()
                      if (kernel := self.kernels.get(layer)) is not None and b < 8
                      and self._lut_saving(kernel, shapes, b) > 0]
        flash -= sum(self._lut_saving(kernel, shapes, b) for kernel, b in compressed)
        head = max(memory.planned_head_bytes(buffers) + self.head_offset_bytes, self.head_floor_bytes)
        tail = max(self._tail - PER_CHANNEL_OP_DATA_BYTES * removed_op_channels, 0)
        # DECODE writes each compressed kernel whole into the alternate memory, one operator at a time.
        alt = max((memory.aligned(int(np.prod(shapes[kernel.index], dtype=np.int64))) for kernel, _ in compressed),
                  default=0)
        return {"flash_bytes": int(flash), "arena_bytes": int(head + tail), "head_bytes": int(head),
                "alt_bytes": int(alt), "ram_bytes": int(head + tail + alt), "macs": int(macs)}

    def lut_saving(self, layer: str, fractions: dict[str, float], bits: int) -> int:
        """Bytes LUT compression at `bits` saves on `layer`'s kernel with `fractions` of the channels removed."""
        kernel = self.kernels.get(layer)
        if kernel is None or bits >= 8:
            return 0
        return self._lut_saving(kernel, self._shapes(self.kept_channels(fractions)), bits)

    def _lut_saving(self, kernel: Kernel, shapes: dict[int, tuple[int, ...]], bits: int) -> int:
        """Bytes LUT compression saves on `kernel` at `bits`; 0 where the saving is too small to plan on (under
        PLANNED_LUT_SAVING_BYTES: the export's estimate might then leave the tensor uncompressed)."""
        tensor = next(t for t in self._summary.tensors if t.index == kernel.index)
        size = int(np.prod(shapes[kernel.index], dtype=np.int64))
        channels = self._scaled_channel_count(tensor, shapes[kernel.index]) if kernel.per_channel else 1
        shared = kernel.shareable and shares_one_table((size // max(channels, 1), channels), -1, 2 ** bits)
        tables = 1 if shared else channels
        saving = size - lut_bytes(size, bits, tables, 2 ** bits, kernel.name_length, channels)
        return saving if saving >= PLANNED_LUT_SAVING_BYTES else 0

    @staticmethod
    def _scaled_channel_count(tensor, shape) -> int:
        """Channels of a per-channel quantized tensor after shrinking (the axis whose length was the scale count)."""
        for axis, length in enumerate(tensor.shape):
            if length == len(tensor.scales):
                return int(shape[axis])
        return len(tensor.scales)

    def _buffers(self) -> list[tuple[int, int, int, int]]:
        """The arena buffers of the full file (size, first, last, tensor index), in TFLM's order."""
        indexed = memory.tflm_buffers(self._summary, with_index=True)
        return [(size, first, last, index) for size, first, last, index in indexed]


def _axes_of(summary: FlatbufferSummary, plan: ChannelPlan, layer_names: list[str]) -> dict[int, list[_Axis]]:
    """For every tensor of the file, which of its axes carry which channel layouts."""
    by_user_name = {float_layer_name(name): name for name in layer_names}
    layers = {name: entry for name, entry in plan.layers.items() if name in by_user_name}
    found: dict[int, list[_Axis]] = {}

    def add(index: int, axis: int, layout: Layout | None):
        if layout is not None and layout.groups():
            found.setdefault(index, []).append(_Axis(axis, layout))

    def layer_for(tensor_name: str):
        layer = layer_of(tensor_name, layer_names)
        return layers.get(float_layer_name(layer)) if layer else None

    names = {t.index: t.name for t in summary.tensors}
    weight_ops = {w.op_index for w in summary.weights}
    for op in summary.ops:
        row = operator(op.name)
        if op.index in weight_ops and row.output_axis is not None and len(op.inputs) > 1:
            entry = layer_for(names[op.inputs[1]])
            if entry is not None:
                add(op.inputs[1], row.output_axis, entry.output)
                if row.input_axis is not None:
                    add(op.inputs[1], row.input_axis, entry.inputs[0] if len(entry.inputs) == 1 else None)
                if row.bias is not None and len(op.inputs) > row.bias:
                    add(op.inputs[row.bias], 0, entry.output)
        for index in op.outputs:
            entry = layer_for(names[index])
            if entry is not None and index not in found:
                add(index, -1, entry.output)
    return found


def _inside_axes(full: FlatbufferSummary, smallest: FlatbufferSummary, plan: ChannelPlan, groups: dict[str, int],
                 layer_names: list[str]) -> dict[int, list[_Axis]]:
    """The tensor axes that carry a group inside a layer (attention's heads), read from two files.

    Inside the layer the heads are spread over reshapes, transposes and
    batched matmuls whose axes no layout walk follows, so the converter
    shows them: `smallest` is the file with each such group down to one
    channel. A tensor of the layer (matched by name) whose axis is C times
    shorter there, for a group of C channels, carries the group on that axis.
    """
    by_name = {tensor.name: tensor for tensor in smallest.tensors}
    found: dict[int, list[_Axis]] = {}
    for tensor in full.tensors:
        other = by_name.get(tensor.name)
        layer = layer_of(tensor.name, layer_names)
        entry = plan.layers.get(float_layer_name(layer)) if layer else None
        if other is None or entry is None or entry.inside is None or len(other.shape) != len(tensor.shape):
            continue
        group = next(iter(entry.inside.groups()), None)
        if group not in groups:
            continue
        for axis, (length, one) in enumerate(zip(tensor.shape, other.shape)):
            if length != one and one * groups[group] == length:
                found.setdefault(tensor.index, []).append(_Axis(axis, Layout(((group, groups[group]),), int(one))))
    return found


def _plan_file(model, fractions: dict[str, float], clusters: dict[str, int] | None = None
               ) -> tuple[bytes, "keras.Model"]:
    """The int8 file (and the stripped model) `model` gives with `fractions` of each group's channels removed.

    The file is the one for TensorFlow Lite Micro (a GELU as its stand-in,
    `quantize.substitution`). Nothing is trained: the masks are set where
    the schedule ends, so the shapes (not the values) are those the trained
    plan will have; the
    ranges get one step and zero biases distinct small values, as the
    conversion check in `prepare` does, so the converter stores what it will
    store for the trained model.
    """
    kept = {group: fraction for group, fraction in fractions.items() if fraction > 0}
    model = substituted(model, ("tflm",))  # budgets are the microcontroller's: GELU as TFLM runs it
    if kept or clusters:
        plan = CompressionPlan(channel_fractions=kept, clusters=clusters or {})
        joint = prepare(model, JointSchedule.from_plan(plan, end_step=1), check=False)
    else:
        joint = prepare(model, JointSchedule(0.0, end_step=1), check=False)
    samples = sample_inputs_of(joint)
    with ranges_initialized(joint, samples):  # as after training: real ranges, no identical zero biases stored once
        finish_channel_pruning(joint)
        stripped = strip(joint)
    return convert.to_int8(stripped), stripped


def _figures(content: bytes, alt_decompression_bytes: int = 0, summary: FlatbufferSummary | None = None
             ) -> dict[str, int]:
    """Flash and MACs read from a file, and the arena TFLM allocates it with (head and tail).

    A LUT-compressed file (which LiteRT cannot open) comes with the summary of
    the int8 file it was compressed from, for the MACs.
    """
    summary = summary or read_flatbuffer(content)
    arena = tflm.measure_arena(content, alt_decompression_bytes=alt_decompression_bytes)
    return {"flash_bytes": len(content), "arena_bytes": arena.total_bytes, "head_bytes": arena.head_bytes,
            "tail_bytes": arena.tail_bytes, "alt_bytes": int(alt_decompression_bytes),
            "ram_bytes": arena.total_bytes + int(alt_decompression_bytes), "macs": memory.memory_use(summary).macs}


def measure_plan(model, fractions: dict[str, float], clusters: dict[str, int] | None = None) -> dict[str, int]:
    """Flash, TFLM arena and MACs of the int8 file a channel plan gives, measured on the built file in TFLM.

    Args:
      model: the tf_keras float model.
      fractions: channel group -> fraction of its channels removed.
      clusters: layer -> shared values of its kernel: the file is then
        LUT-compressed by TFLM's tooling (`export.compression`) and measured
        with the alternate decompression memory it needs (`alt_bytes`).

    Raises:
      errors.ConfigError: tflite-micro is not installed.
    """
    content, stripped = _plan_file(model, fractions, clusters)
    if not clusters:
        return _figures(content)
    candidate = Candidate("qat", stripped, content, read_flatbuffer(content))
    lut = compress_candidate(candidate)
    return _figures(lut.content, lut.alt_decompression_bytes, candidate.summary)


def build_cost_model(model, plan: ChannelPlan, measure_floor: bool = False) -> CostModel:
    """Prepares `model` (nothing pruned), converts it once to int8 and ties its tensors to `plan`'s groups.

    Args:
      model: the tf_keras float model the plan was made on.
      plan: its channel groups (`tfjoint.prune.channel_groups.plan_channel_groups`).
      measure_floor: also build the smallest plan (every group at one
        channel) and measure its arena in TFLM: the floor under every
        predicted head (one more conversion; needs tflite-micro).
    """
    content, qat = _plan_file(model, {})
    summary = read_flatbuffer(content)
    tail, measured, floor, head = None, False, 0, None
    groups = {name: group.channels for name, group in plan.prunable_groups.items()}
    if tflm.tflm_available():
        try:
            arena = tflm.measure_arena(content)
            tail, head, measured = arena.tail_bytes, arena.head_bytes, True
        except Exception:  # a file TFLM cannot run: the arena is the planner's estimate alone
            tail = None
        if measured and measure_floor and groups:
            floor = measure_plan(model, {group: ONE_CHANNEL for group in groups})["head_bytes"]
    layer_names = [layer.name for layer in qat.layers]
    axes = _axes_of(summary, plan, layer_names)
    inside = plan.inside_groups
    offset = 0
    if inside:  # heads: one more conversion, with each down to one, shows which tensor axes carry them
        smallest = read_flatbuffer(_plan_file(model, {group: ONE_CHANNEL for group in inside})[0])
        for index, found in _inside_axes(summary, smallest, plan, groups, layer_names).items():
            axes.setdefault(index, []).extend(found)
        if head is not None:  # attention's kernels take scratch memory no tensor shows, and it does not shrink
            offset = max(int(head) - memory.planned_head_bytes(memory.tflm_buffers(summary)), 0)
    return CostModel(summary, content, axes, groups, tail, measured, head_floor_bytes=floor,
                     kernels=_kernels_of(summary, layer_names, _shareable(model)), head_offset_bytes=offset)


def _shareable(model) -> set[str]:
    """The layers whose pruned kernel's channels are its quantizer's range axis (`clusters.along_range`)."""
    found = set()
    for layer in model.layers:
        variable = pruned_variable(layer)
        if variable is not None and along_range(variable.shape, channel_axis(layer, pruned_weight_name(layer))):
            found.add(layer.name)
    return found


def _kernels_of(summary: FlatbufferSummary, layer_names: list[str], shareable: set[str]) -> dict[str, Kernel]:
    """The user's layer -> its int8 weight tensor in the file (the one LUT compression would encode)."""
    per_channel = {t.index for t in summary.tensors if len(t.scales) > 1}
    found: dict[str, Kernel] = {}
    for weight in summary.weights:
        layer = layer_of(weight.tensor_name, layer_names) or layer_of(weight.output_name, layer_names)
        if layer is not None and weight.dtype == "int8" and weight.tensor_index >= 0:
            name, channels = float_layer_name(layer), weight.tensor_index in per_channel
            found.setdefault(name, Kernel(weight.tensor_index, len(weight.tensor_name), channels,
                                          channels and name in shareable))
    return found
