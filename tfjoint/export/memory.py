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
  persistent "tail". `tfjoint.export.tflm.measure_arena` measures both in
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

import numpy as np

from tfjoint.tflite.flatbuffer import FlatbufferSummary

__all__ = ["MemoryUse", "memory_use", "planned_head_bytes", "tflm_buffers", "op_macs", "peak_rss_bytes", "ALIGNMENT"]

ALIGNMENT = 16  # TFLM's MicroArenaBufferAlignment()


@dataclasses.dataclass(frozen=True)
class MemoryUse:
    """What a file needs, read from its tensors alone (no runtime)."""

    weights_bytes: int
    planned_head_bytes: int
    macs: int


def _aligned(size: int) -> int:
    return -(-int(size) // ALIGNMENT) * ALIGNMENT


def planned_head_bytes(buffers: list[tuple[int, int, int]]) -> int:
    """Peak of TFLM's GreedyMemoryPlanner for buffers `(size, first scope, last scope)` in TFLM's add order.

    Sizes are aligned to 16 bytes as TFLM does before planning.
    """
    if not buffers:
        return 0
    sizes = [_aligned(size) for size, _, _ in buffers]
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


def op_macs(op_name: str, input_shapes: list[tuple[int, ...]], output_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one weight operator from its shapes (0 for other operators)."""
    if len(input_shapes) < 2 or not output_shape:
        return 0
    outputs = int(np.prod(output_shape, dtype=np.int64))
    weights = input_shapes[1]
    if op_name == "CONV_2D" and len(weights) == 4:  # filter (out, h, w, in)
        return outputs * int(weights[1] * weights[2] * weights[3])
    if op_name == "DEPTHWISE_CONV_2D" and len(weights) == 4:  # filter (1, h, w, channels)
        return outputs * int(weights[1] * weights[2])
    if op_name == "FULLY_CONNECTED" and len(weights) == 2:  # filter (units, features)
        return outputs * int(weights[1])
    if op_name == "TRANSPOSE_CONV" and len(weights) == 4 and len(input_shapes) > 2:  # filter (out, h, w, in)
        return int(np.prod(input_shapes[2], dtype=np.int64)) * int(weights[0] * weights[1] * weights[2])
    if op_name == "UNIDIRECTIONAL_SEQUENCE_LSTM" and len(input_shapes) > 8 and len(input_shapes[0]) == 3:
        steps = int(input_shapes[0][0] * input_shapes[0][1])  # batch x time steps, each through the eight gates
        return steps * sum(int(np.prod(shape, dtype=np.int64)) for shape in input_shapes[1:9] if shape)
    return 0


def memory_use(summary: FlatbufferSummary) -> MemoryUse:
    """Weights, TFLM's planned activations (an estimate) and the MACs of a flatbuffer, from its tensors."""
    weights = sum(t.nbytes for t in summary.constant_tensors)
    shapes = {t.index: t.shape for t in summary.tensors}
    macs = sum(op_macs(op.name, [shapes.get(i, ()) for i in op.inputs], shapes.get(op.outputs[0], ()) if op.outputs
                       else ()) for op in summary.ops)
    return MemoryUse(weights_bytes=int(weights), planned_head_bytes=int(planned_head_bytes(tflm_buffers(summary))),
                     macs=int(macs))


# VmHWM (this process's own high-water mark), not ru_maxrss, which Linux carries over from the parent
# process across fork and exec.
_RSS_PROBE = """
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
interpreter.allocate_tensors()
for details in interpreter.get_input_details():
    interpreter.set_tensor(details["index"], np.zeros(details["shape"], details["dtype"]))
interpreter.invoke()
with open("/proc/self/status") as status:
    kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"kib": kib}))
"""


def peak_rss_bytes(model_content: bytes) -> int | None:
    """Peak resident memory of a fresh process loading and running the model once (None on failure)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.tflite")
        with open(path, "wb") as handle:
            handle.write(model_content)
        try:
            result = subprocess.run([sys.executable, "-c", _RSS_PROBE, path], capture_output=True, text=True,
                                    timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return None
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return int(json.loads(result.stdout.strip().splitlines()[-1])["kib"]) * 1024
