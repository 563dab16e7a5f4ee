"""How much memory a flatbuffer needs: its weights, and the peak of its activation arena.

`weights_bytes` sums the constant tensors (weights, biases, constants) of the
file. `activation_bytes` is *computed, not measured*: every other tensor
(inputs, outputs, intermediates) lives from the operator that writes it (the
start, for model inputs) to the last operator that reads it (the end, for
model outputs), and the tensors are placed in one arena with TensorFlow Lite
Micro's greedy-by-size planner (largest first, each at the lowest
16-byte-aligned offset where it overlaps no tensor that is alive at the same
time). The peak offset is the arena an interpreter needs for activations,
without operator scratch buffers (im2col and the like), at batch size 1.

`peak_rss_bytes` is measured: the peak resident memory of a fresh Python
process that imports LiteRT, loads the file and runs it once. It includes the
interpreter's own footprint (tens of MB of Python and LiteRT), so compare the
int8 and float32 figures with each other rather than reading either alone.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from tfjoint.export.inspect import FlatbufferSummary

__all__ = ["MemoryUse", "memory_use", "arena_peak_bytes", "peak_rss_bytes", "ALIGNMENT"]

ALIGNMENT = 16


@dataclasses.dataclass(frozen=True)
class MemoryUse:
    weights_bytes: int
    activation_bytes: int


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def arena_peak_bytes(lifetimes: list[tuple[int, int, int]]) -> int:
    """Peak of a greedy-by-size arena for tensors given as (size, first step, last step)."""
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    peak = 0
    for size, first, last in sorted(lifetimes, key=lambda t: -t[0]):
        size = _aligned(size)
        offset = 0
        for other_offset, other_size, other_first, other_last in sorted(placed):
            overlaps_in_time = not (last < other_first or first > other_last)
            if overlaps_in_time and offset + size > other_offset and offset < other_offset + other_size:
                offset = _aligned(other_offset + other_size)
        placed.append((offset, size, first, last))
        peak = max(peak, offset + size)
    return peak


def memory_use(summary: FlatbufferSummary) -> MemoryUse:
    """Weights and planned activation arena of a flatbuffer, from its tensors and operator order."""
    constants = {t.index for t in summary.constant_tensors}
    weights = sum(t.nbytes for t in summary.constant_tensors)
    end = len(summary.ops)
    first: dict[int, int] = {t.index: 0 for t in summary.inputs}
    last: dict[int, int] = {t.index: end for t in summary.outputs}
    for step, op in enumerate(summary.ops):
        for index in op.outputs:
            first.setdefault(index, step)
            last[index] = max(last.get(index, step), step)
        for index in op.inputs:
            if index not in constants:
                first.setdefault(index, step)
                last[index] = max(last.get(index, step), step)
    sizes = {t.index: t.nbytes for t in summary.tensors}
    lifetimes = [(sizes[i], first[i], last[i]) for i in first if i not in constants and i in sizes]
    return MemoryUse(weights_bytes=int(weights), activation_bytes=int(arena_peak_bytes(lifetimes)))


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
