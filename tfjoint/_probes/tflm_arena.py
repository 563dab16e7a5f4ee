"""The smallest tensor arena TensorFlow Lite Micro allocates a .tflite with, and TFLM's own account of it.

Usage: python -m tfjoint._probes.tflm_arena MODEL.tflite UPPER_BOUND [ALT_DECOMPRESSION_BYTES]
prints {"total": N, "recorded": {"total": .., "head": .., "tail": ..}} or {"error": reason}.

Each size is tried in a forked child: TFLM built on too small an arena can
crash (SIGSEGV, abort) instead of failing. The search doubles from 64 KiB to
a size that allocates, then bisects; one inference then runs at the found
size so the account includes what `Invoke` allocates. With an alternate
decompression buffer (LUT-compressed files), DECODE writes its outputs there,
not into the arena.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile

import numpy as np


def _interpreter(runtime, content: bytes, size: int, alt_bytes: int):
    return runtime.Interpreter.from_bytes(content, arena_size=size, alt_decompression_memory_size=alt_bytes)


def allocates(runtime, content: bytes, size: int, alt_bytes: int = 0) -> bool:
    """Whether TFLM allocates the model with an arena of `size` bytes (tried in a forked child)."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            _interpreter(runtime, content, size, alt_bytes)
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _recorded(interpreter) -> dict[str, int]:
    """TFLM's RecordingMicroAllocator account (written to C-level stderr), parsed."""
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    return {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text)}


def measure(content: bytes, upper: int, alt_bytes: int = 0) -> dict:
    """The smallest arena, and TFLM's account after one inference; {"error": reason} if none up to `upper`."""
    from tflite_micro import runtime

    high = 1 << 16
    while not allocates(runtime, content, high, alt_bytes):
        if high >= upper:
            try:
                _interpreter(runtime, content, high, alt_bytes)
                reason = "unknown"
            except BaseException as error:
                reason = str(error)
            return {"error": reason}
        high *= 2
    low = 0
    while low < high:
        middle = (low + high) // 2
        if allocates(runtime, content, middle, alt_bytes):
            high = middle
        else:
            low = middle + 1
    interpreter = _interpreter(runtime, content, high, alt_bytes)
    index = 0
    while True:  # one inference, so the account includes everything Invoke allocates
        try:
            details = interpreter.get_input_details(index)
        except BaseException:
            break
        interpreter.set_input(np.zeros(details["shape"], details["dtype"]), index)
        index += 1
    interpreter.invoke()
    return {"total": high, "recorded": _recorded(interpreter)}


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print("usage: python -m tfjoint._probes.tflm_arena MODEL.tflite UPPER_BOUND [ALT_DECOMPRESSION_BYTES]",
              file=sys.stderr)
        return 2
    with open(argv[1], "rb") as handle:
        content = handle.read()
    print(json.dumps(measure(content, int(argv[2]), int(argv[3]) if len(argv) == 4 else 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
