"""Run a flatbuffer in TensorFlow Lite Micro (the `tflite-micro` package), and measure the arena it needs.

TFLM is the interpreter microcontrollers run: its reference kernels compute
what LiteRT's `BUILTIN_REF` kernels compute (within a few int8 steps), not what
LiteRT's default XNNPACK delegate computes. `TFLMModel` runs a file one
sample at a time, as a device does; `measure_arena` finds the smallest arena
TFLM accepts, and reads TFLM's own account of it: the planned activations
("head", the same on every platform) and TFLM's persistent structures
("tail": tensor structs, quantization parameters, operator data), which this
64-bit host measures larger than a 32-bit MCU needs (pointers are 8 bytes here).

`tflite-micro` is optional (`pip install "tfjoint[micro]"`); without it,
`require_tflm` raises an error saying what to install.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

from tfjoint import errors
from tfjoint._capture import captured_output

__all__ = ["TFLMModel", "TFLMArena", "measure_arena", "tflm_available", "require_tflm", "INSTALL_HINT"]

INSTALL_HINT = 'pip install "tfjoint[micro]" (the tflite-micro package, TensorFlow Lite Micro\'s interpreter)'
_ALIGNMENT = 16


def tflm_available() -> bool:
    """Whether the TFLM interpreter (`tflite_micro`) can be imported."""
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return False
    return True


def require_tflm(argument: str):
    """The `tflite_micro.runtime` module, or a ConfigError naming `argument` and what to install."""
    try:
        from tflite_micro import runtime
    except ImportError as error:
        raise errors.ConfigError(
            f"`{argument}` asks for TensorFlow Lite Micro, which is not installed here ({error}). Install it with: "
            f"{INSTALL_HINT}.") from error
    return runtime


def _interpreter(runtime, content: bytes, arena_size: int, alt_decompression_bytes: int = 0):
    return runtime.Interpreter.from_bytes(content, arena_size=int(arena_size),
                                          alt_decompression_memory_size=int(alt_decompression_bytes))


@dataclasses.dataclass(frozen=True)
class TFLMArena:
    """The arena TFLM needs for a file, measured by TFLM on this host.

    Attributes:
      total_bytes: the smallest arena with which TFLM allocates the model
        (found by search: a smaller one fails).
      head_bytes: the part that is the same on every platform: planned
        activations and scratch buffers, or the temporary planning memory
        `AllocateTensors` needs, whichever is larger (total minus tail).
      tail_bytes: TFLM's persistent structures (tensor structs, quantization
        parameters, operator data), as its `RecordingMicroAllocator` reports
        them on this 64-bit host; a 32-bit MCU, whose pointers are half as
        wide, needs less.
      planned_bytes: the planned activations and scratch buffers alone.
    """

    total_bytes: int
    head_bytes: int
    tail_bytes: int
    planned_bytes: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def measure_arena(content: bytes, upper_bound: int = 1 << 31, alt_decompression_bytes: int = 0) -> TFLMArena:
    """The smallest arena TFLM allocates `content` with, and TFLM's own account of its parts.

    Searches the arena size in a separate process (`tfjoint._probes.tflm_arena`;
    each size in a forked child: TFLM can crash on too small an arena), then
    reads the `RecordingMicroAllocator`'s account after one inference. With
    `alt_decompression_bytes`, DECODE operators (a LUT-compressed file) write
    the weights they decompress into a buffer of that size outside the arena.

    Raises:
      errors.ConfigError: tflite-micro is not installed.
      errors.DeviceError: TFLM cannot allocate the model at any size (an
        operator it has no kernel for, say); the message has TFLM's reason,
        and the error the operator and tensor it failed at.
    """
    require_tflm("runtimes")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.tflite")
        with open(path, "wb") as handle:
            handle.write(content)
        result = subprocess.run([sys.executable, "-m", "tfjoint._probes.tflm_arena", path, str(upper_bound),
                                 str(int(alt_decompression_bytes))], capture_output=True, text=True, timeout=1800)
    line = next((line for line in reversed(result.stdout.splitlines()) if line.startswith("{")), None)
    if result.returncode != 0 or line is None:
        crashed = (f"TFLM crashed (exit {result.returncode}: an assertion inside its kernels, often a scale it cannot "
                   "represent) while allocating the file; run it with `python -m tfjoint._probes.tflm_arena FILE` to "
                   "see where") if result.returncode in (134, -6, 139, -11) else "no output"
        raise errors.ExportError(f"measuring the arena in TensorFlow Lite Micro failed: "
                                 f"{(result.stderr.strip().splitlines() or [crashed])[-1][:400]}")
    measured = json.loads(line)
    if "error" in measured:
        raise device_error(content, f"{measured['error']}\n{result.stderr}", upper_bound)
    total, recorded = int(measured["total"]), measured["recorded"]
    tail = int(recorded.get("tail", 0))
    return TFLMArena(total_bytes=total, head_bytes=total - tail, tail_bytes=tail,
                     planned_bytes=int(recorded.get("head", 0)))


_NODE = re.compile(r"Node (\S+) \(number (\d+)f?\) failed to (prepare|invoke|allocate)[^\n]*")
_OPCODE = re.compile(r"(?:Didn't find op for builtin opcode|Failed to get registration from op code) '?([A-Z0-9_]+)'?")


def device_error(content: bytes, text: str, upper_bound: int) -> errors.DeviceError:
    """A `DeviceError` naming the operator TFLM failed at (and its output tensor), read from TFLM's own messages."""
    from tfjoint.tflite.flatbuffer import read_flatbuffer

    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("WARNING", "I0000"))]
    reason = "; ".join(dict.fromkeys(lines[-6:])) or "no reason given"
    node, opcode = _NODE.search(text), _OPCODE.search(text)
    operator = tensor = None
    if node is not None:
        index = int(node.group(2))
        try:
            summary = read_flatbuffer(content)
            op = next((op for op in summary.ops if op.index == index), None)
            names = {t.index: t.name for t in summary.tensors}
            tensor = names.get(op.outputs[0]) if op is not None and op.outputs else None
            operator = f"{op.name} #{index}" if op is not None else f"{node.group(1)} #{index}"
        except Exception:  # noqa: BLE001  (a file LiteRT cannot read back: the message still says what TFLM said)
            operator = f"{node.group(1)} #{index}"
    elif opcode is not None:
        operator = opcode.group(1)
    what = {
        "prepare": "its Prepare failed (a shape, a type or a quantization it does not take)",
        "invoke": "it failed when run", "allocate": "its tensors could not be planned"}.get(
        node.group(3) if node is not None else "", "")
    where = (f" at operator {operator}" + (f" (output '{tensor}')" if tensor else "") + (f": {what}" if what else "")
             if operator else "")
    return errors.DeviceError(
        f"TensorFlow Lite Micro cannot run this file{where} (no arena up to {upper_bound} bytes allocates it). "
        f"TFLM said: {reason}. Replace the layer that writes that tensor with one TFLM runs, or deploy on LiteRT.",
        operator=operator, tensor=tensor)


class TFLMModel:
    """A flatbuffer in the TFLM interpreter, called like `TFLiteModel`: float arrays in, float arrays out.

    TFLM has no signatures: inputs and outputs are addressed by their position
    in the file, which `input_order` / `output_order` map from the Keras
    names. Samples run one at a time (batch 1), as on a device.

    Args:
      model_content: the flatbuffer bytes.
      input_names: Keras input names, in the file's input order.
      output_names: Keras output names, in the file's output order.
      arena_bytes: the arena to allocate (default: measured).
      alt_decompression_bytes: for a LUT-compressed file, the buffer outside
        the arena that DECODE operators decompress weights into (0: into the
        arena).
    """

    def __init__(self, model_content: bytes, input_names, output_names, arena_bytes: int | None = None,
                 alt_decompression_bytes: int = 0):
        runtime = require_tflm("runtimes")
        self._arena = arena_bytes or measure_arena(model_content,
                                                   alt_decompression_bytes=alt_decompression_bytes).total_bytes
        with captured_output((2,)):
            self._interpreter = _interpreter(runtime, model_content, self._arena, alt_decompression_bytes)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self._inputs = [self._interpreter.get_input_details(i) for i in range(len(self.input_names))]
        self._outputs = [self._interpreter.get_output_details(i) for i in range(len(self.output_names))]

    @staticmethod
    def _scale(details) -> tuple[float, int] | None:
        params = details.get("quantization_parameters") or {}
        scales, zero_points = params.get("scales", []), params.get("zero_points", [])
        if len(scales) == 0 or not np.issubdtype(details["dtype"], np.integer):
            return None
        return float(scales[0]), int(zero_points[0])

    def _quantized(self, details, values: np.ndarray) -> np.ndarray:
        dtype = details["dtype"]
        scale = self._scale(details)
        if scale is not None:
            info = np.iinfo(dtype)
            values = np.clip(np.round(values / scale[0] + scale[1]), info.min, info.max)
        return values.astype(dtype)

    def _dequantized(self, details, values: np.ndarray) -> np.ndarray:
        scale = self._scale(details)
        if scale is None:
            return values.astype(np.float32)
        return (values.astype(np.float32) - scale[1]) * scale[0]

    def predict(self, inputs: list[np.ndarray], batch_size: int = 1, verbose: bool = False) -> list[np.ndarray]:
        """Outputs (dequantized, float32) for every sample, one array per output, in `output_names` order."""
        del batch_size, verbose  # one sample at a time, as on a device
        results: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for sample in range(inputs[0].shape[0]):
            for position, details in enumerate(self._inputs):
                self._interpreter.set_input(self._quantized(details, inputs[position][sample:sample + 1]), position)
            self._interpreter.invoke()
            for position, details in enumerate(self._outputs):
                results[position].append(self._dequantized(details, np.asarray(self._interpreter.get_output(position))))
        return [np.concatenate(parts) for parts in results]
