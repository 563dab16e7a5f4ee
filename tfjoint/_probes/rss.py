"""The peak resident memory of a fresh process that loads a .tflite in LiteRT and runs it once.

Usage: python -m tfjoint._probes.rss MODEL.tflite  ->  prints {"kib": N}

VmHWM (this process's own high-water mark), not ru_maxrss, which Linux carries
over from the parent process across fork and exec.
"""

import json
import sys

import numpy as np


def peak_rss_kib(model_path: str) -> int:
    """Loads and runs the model once; returns this process's peak resident memory in KiB."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path, num_threads=1)
    interpreter.allocate_tensors()
    for details in interpreter.get_input_details():
        interpreter.set_tensor(details["index"], np.zeros(details["shape"], details["dtype"]))
    interpreter.invoke()
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tfjoint._probes.rss MODEL.tflite", file=sys.stderr)
        return 2
    print(json.dumps({"kib": peak_rss_kib(argv[1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
