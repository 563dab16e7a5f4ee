"""How much memory and compute a flatbuffer needs: weights, the activation arena TFLM plans, MACs, peak RSS.

* `weights_bytes`: the constant tensors (weights, biases, constants) of the file.
* `planned_head_bytes`: an *estimate* of TensorFlow Lite Micro's planned
  activations ("head"), following its `GreedyMemoryPlanner` exactly: every
  non-constant tensor, its size rounded up to 16 bytes, lives from the
  operator that writes it to the last one that reads it (TFLM's allocation
  scopes: model inputs from scope 0, operator i at scope i + 1); tensors are
  placed largest first, equal sizes in reverse tensor order (TFLM fills its
  sort buffer from the tail and bubble-sorts it), each at the lowest offset
  where it overlaps no tensor alive at the same time. What the file alone
  cannot show is left out: operator scratch buffers (reference kernels
  request few; optimized kernels such as CMSIS-NN request more) and TFLM's
  persistent "tail". `tfjoint.tflite.tflm.measure_arena` measures both in
  TFLM itself.
* `macs`: multiply-accumulates per weight operator (CONV_2D,
  DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV, and an LSTM's gates),
  from the tensor shapes: the cost device latency follows.
* `peak_rss_bytes` is measured: the peak resident memory of a fresh Python
  process that imports LiteRT, loads the file and runs it once. It includes
  the interpreter's own footprint (tens of MB), so compare the int8 and
  float32 figures with each other rather than reading either alone.
"""

import bisect
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Mapping

from tfjoint import errors
from tfjoint.findings import Finding, Kind, note
from tfjoint.tflite import tflm
from tfjoint.tflite.flatbuffer import FlatbufferSummary, read_flatbuffer
from tfjoint.tflite.operators import op_macs

__all__ = ["MemoryUse", "MemoryFigures", "memory_use", "measure_memory", "planned_head_bytes", "tflm_buffers",
           "peak_rss_bytes", "aligned", "ALIGNMENT"]

ALIGNMENT = 16  # TFLM's MicroArenaBufferAlignment()


@dataclasses.dataclass(frozen=True)
class MemoryUse:
    """What a file needs, read from its tensors alone (no runtime)."""

    weights_bytes: int
    planned_head_bytes: int
    macs: int


def aligned(size: int) -> int:
    """`size` rounded up to TFLM's 16-byte buffer alignment."""
    return -(-int(size) // ALIGNMENT) * ALIGNMENT


def planned_head_bytes(buffers: list[tuple[int, int, int]]) -> int:
    """Peak of TFLM's GreedyMemoryPlanner for buffers `(size, first scope, last scope)` in TFLM's add order.

    Sizes are aligned to 16 bytes as TFLM does before planning.
    """
    if not buffers:
        return 0
    sizes = [aligned(size) for size, _, _ in buffers]
    # TFLM writes the buffers into its sort arrays from the tail, then bubble-sorts by size (stable, descending).
    order = sorted(reversed(range(len(buffers))), key=lambda i: -sizes[i])
    placed_offsets: list[int] = []  # sorted by offset; equal offsets in insertion order
    placed: list[int] = []  # buffer ids, parallel to placed_offsets
    offsets: dict[int, int] = {}

    def overlaps(other: int, first: int, last: int) -> bool:
        return not (buffers[other][1] > last or first > buffers[other][2])

    for buffer in order:
        size, first, last = sizes[buffer], buffers[buffer][1], buffers[buffer][2]
        candidate = 0
        if placed:
            position = -1  # index in `placed` of the prior simultaneously active entry
            while True:
                following = next((j for j in range(position + 1, len(placed))
                                  if overlaps(placed[j], first, last)), None)
                if position >= 0:
                    prior = placed[position]
                    candidate = max(candidate, offsets[prior] + sizes[prior])
                if following is None:
                    break
                if offsets[placed[following]] - candidate >= size:
                    break
                position = following
        offsets[buffer] = candidate
        index = bisect.bisect_right(placed_offsets, candidate)
        placed_offsets.insert(index, candidate)
        placed.insert(index, buffer)
    return max(offsets[b] + sizes[b] for b in offsets)


def tflm_buffers(summary: FlatbufferSummary, with_index: bool = False) -> list[tuple]:
    """Every tensor TFLM plans into its arena, in tensor order: (bytes, first scope, last scope[, tensor index])."""
    constants = {t.index for t in summary.constant_tensors}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for tensor in summary.inputs:
        first.setdefault(tensor.index, 0)
        last[tensor.index] = 0
    for position, op in enumerate(summary.ops):
        scope = position + 1
        for index in op.outputs:
            first.setdefault(index, scope)
        for index in op.inputs:
            last[index] = scope
        for index in op.outputs:
            last[index] = scope
    end = len(summary.ops)
    for tensor in summary.outputs:
        first.setdefault(tensor.index, end)
        last[tensor.index] = end
    buffers = []
    for info in summary.tensors:  # TFLM adds them in tensor index order
        if info.index in constants or info.nbytes == 0 or info.index not in first:
            continue
        lifetime = (info.nbytes, first[info.index], last.get(info.index, first[info.index]))
        buffers.append(lifetime + (info.index,) if with_index else lifetime)
    return buffers


def memory_use(summary: FlatbufferSummary) -> MemoryUse:
    """Weights, TFLM's planned activations (an estimate) and the MACs of a flatbuffer, from its tensors."""
    weights = sum(t.nbytes for t in summary.constant_tensors)
    shapes = {t.index: t.shape for t in summary.tensors}
    macs = sum(op_macs(op.name, [shapes.get(i, ()) for i in op.inputs], shapes.get(op.outputs[0], ()) if op.outputs
                       else ()) for op in summary.ops)
    return MemoryUse(weights_bytes=int(weights), planned_head_bytes=int(planned_head_bytes(tflm_buffers(summary))),
                     macs=int(macs))


def peak_rss_bytes(model_content: bytes) -> int | None:
    """Peak resident memory of a fresh process loading and running the model once (None on failure).

    The probe (`tfjoint._probes.rss`) reads its own VmHWM, not ru_maxrss, which Linux carries over from the
    parent process across fork and exec.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.tflite")
        with open(path, "wb") as handle:
            handle.write(model_content)
        try:
            result = subprocess.run([sys.executable, "-m", "tfjoint._probes.rss", path], capture_output=True,
                                    text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return int(json.loads(result.stdout.strip().splitlines()[-1])["kib"]) * 1024


@dataclasses.dataclass(frozen=True)
class MemoryFigures:
    """What a file needs: the report's `memory` section (`figures`), and what measuring it had to say."""

    figures: Mapping[str, Any]
    notes: tuple[Finding, ...] = ()

    @property
    def ram_bytes(self) -> int | None:
        """The RAM the device must provide for the model, measured in TFLM (None if not measured)."""
        return self.figures.get("ram_bytes")


_ARENA_MEASURED_BY = "TensorFlow Lite Micro on this 64-bit host (the tail is smaller on a 32-bit MCU)"


def _ram(figures: dict, shipped: bytes, alt_decompression_bytes: int, phases) -> None:
    """The RAM the device needs: the arena, plus DECODE's alternate memory for a LUT-compressed file, or that file's
    arena alone (DECODE then writes into it) where that is smaller. Sets `ram_bytes` and how it is laid out."""
    arena = figures["tflm_arena_bytes"]
    if not alt_decompression_bytes:
        figures.update(ram_bytes=arena, ram_layout="arena")
        return
    with phases.run("TFLM arena", "without the alternate decompression memory"):
        alone = tflm.measure_arena(shipped).total_bytes
    figures["tflm_arena_bytes_without_alt_memory"] = alone
    if alone <= arena + alt_decompression_bytes:
        figures.update(ram_bytes=alone, ram_layout="arena alone (DECODE writes the weights into it)",
                       ram_uses_alt_memory=False)
    else:
        figures.update(ram_bytes=arena + alt_decompression_bytes,
                       ram_layout="arena + alternate decompression memory", ram_uses_alt_memory=True)


def measure_memory(summary: FlatbufferSummary, content: bytes, float_content: bytes | None, measure_rss: bool,
                   phases, shipped_content: bytes | None = None, alt_decompression_bytes: int = 0) -> MemoryFigures:
    """Flash, weights, the TFLM arena and the RAM (measured when tflite-micro is installed, else the planner's
    estimate), RSS.

    `content` is the int8 file (`summary` read from it); `shipped_content`
    the file written, where it differs (LUT-compressed: flash, the arena and
    the RAM are its, with DECODE's alternate buffer of
    `alt_decompression_bytes`, or without it where one arena is smaller).
    """
    int8 = memory_use(summary)
    shipped = shipped_content if shipped_content is not None else content
    figures: dict[str, Any] = {
        "flash_bytes": len(shipped), "weights_bytes": int8.weights_bytes, "activation_bytes": int8.planned_head_bytes,
        "tflm_arena_bytes": None, "tflm_arena_head_bytes": None, "tflm_arena_tail_bytes": None,
        "tflm_arena_measured_by": None, "ram_bytes": None, "float_weights_bytes": None,
        "float_activation_bytes": None, "int8_peak_rss_bytes": None, "float_peak_rss_bytes": None,
    }
    if shipped_content is not None:
        figures["alt_decompression_bytes"] = int(alt_decompression_bytes)
    notes = []
    if tflm.tflm_available():
        with phases.run("TFLM arena"):
            try:
                arena = tflm.measure_arena(shipped, alt_decompression_bytes=alt_decompression_bytes)
                figures.update(tflm_arena_bytes=arena.total_bytes, tflm_arena_head_bytes=arena.head_bytes,
                               tflm_arena_tail_bytes=arena.tail_bytes, tflm_arena_measured_by=_ARENA_MEASURED_BY)
                _ram(figures, shipped, alt_decompression_bytes if shipped_content is not None else 0, phases)
            except errors.DeviceError as error:
                notes.append(note(Kind.TFLM, f"TensorFlow Lite Micro could not run this file: {error}",
                                  runtime="tflm", subject=error.operator))
    else:
        notes.append(note(Kind.MEMORY, "memory['activation_bytes'] is an estimate (TFLM's planner, followed exactly, "
                                       "without scratch buffers or TFLM's own persistent memory): install tflite-micro "
                                       f"to measure the arena and the RAM in TFLM ({tflm.INSTALL_HINT})"))
    if float_content is not None:
        float32 = memory_use(read_flatbuffer(float_content))
        figures.update(float_weights_bytes=float32.weights_bytes, float_activation_bytes=float32.planned_head_bytes)
    if measure_rss:
        figures["int8_peak_rss_bytes"] = peak_rss_bytes(content)
        if float_content is not None:
            figures["float_peak_rss_bytes"] = peak_rss_bytes(float_content)
    return MemoryFigures(figures, tuple(notes))
