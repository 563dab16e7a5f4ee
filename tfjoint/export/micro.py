"""What a microcontroller build needs: the model as a C array, and the operators to register.

TensorFlow Lite Micro links the flatbuffer into the firmware as a byte array
(the `xxd -i model.tflite` step of every TFLM tutorial) that must be 16-byte
aligned, and only registers the operators a `MicroMutableOpResolver` is told
about. `write_c_array` writes `<name>.h` and `<name>.cc` (both written in full to
temporary files first, then renamed into place: never half a file, never a
new header beside an old source); `micro_op_resolver_calls` turns the file's operator list
into the `Add...()` calls, e.g. CONV_2D -> `AddConv2D()`.
"""

import dataclasses
import os
import re

import numpy as np

from tfjoint import errors
from tfjoint._files import atomic_write_texts
from tfjoint.tflite.operators import resolver_method

__all__ = ["write_c_array", "micro_op_resolver_calls", "micro_op_resolver_method", "c_array_source", "CArrayFiles",
           "FileState", "file_states"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BYTES_PER_LINE = 12


@dataclasses.dataclass(frozen=True)
class CArrayFiles:
    """What `write_c_array` wrote: the two files and the symbols they define."""

    header: str
    source: str
    array_symbol: str
    length_symbol: str


def micro_op_resolver_method(op_name: str) -> str:
    """The `MicroMutableOpResolver` method that registers builtin operator `op_name` ("CONV_2D" -> "AddConv2D")."""
    return resolver_method(op_name)


def micro_op_resolver_calls(op_names) -> list[str]:
    """`MicroMutableOpResolver` methods for the operators a model uses, in first-use order ("AddConv2D", ...)."""
    calls: list[str] = []
    for name in op_names:
        call = micro_op_resolver_method(name)
        if call not in calls:
            calls.append(call)
    return calls


@dataclasses.dataclass(frozen=True)
class FileState:
    """A streaming file's state, read from the file: the input it is fed at, the output it comes back at."""

    name: str
    input_index: int
    output_index: int
    bytes: int
    zero_point: int


def file_states(content: bytes) -> list[FileState]:
    """The state tensors of a streaming file (`ExportOptions(streaming=True)`): each input `X` whose output
    `X_next` has the same shape, type and quantization; [] for any other file."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    if not model.signatureDefs or not model.subgraphs:
        return []
    graph, signature = model.subgraphs[0], model.signatureDefs[0]
    inputs = {entry.name.decode(): list(graph.inputs).index(entry.tensorIndex) for entry in signature.inputs}
    outputs = {entry.name.decode(): list(graph.outputs).index(entry.tensorIndex) for entry in signature.outputs}
    found = []
    for name, position in sorted(inputs.items(), key=lambda item: item[1]):
        if f"{name}_next" not in outputs:
            continue
        tensor = graph.tensors[graph.inputs[position]]
        returned = graph.tensors[graph.outputs[outputs[f"{name}_next"]]]
        quantization, back = tensor.quantization, returned.quantization
        same = (list(tensor.shape) == list(returned.shape) and tensor.type == returned.type and quantization
                is not None and back is not None and list(quantization.scale) == list(back.scale)
                and list(quantization.zeroPoint) == list(back.zeroPoint))
        if same and tensor.type == schema.TensorType.INT8:
            found.append(FileState(name, position, outputs[f"{name}_next"], int(np.prod(tensor.shape)),
                                   int(quantization.zeroPoint[0])))
    return found


def _states_text(content: bytes) -> str:
    states = file_states(content)
    if not states:
        return ""
    count = len(states)

    def row(values) -> str:
        return "{" + ", ".join(str(v) for v in values) + "}"

    return (
        "// A streaming file: it runs one hop of frames per Invoke() and carries its state in int8 tensors.\n"
        "// After each Invoke(), read the model's outputs and copy every output kStateOutput[i] (kStateBytes[i]\n"
        "// bytes) to a buffer of your own first, then each into input kStateInput[i] (same scale): TFLM's planner\n"
        "// may place an input where an output lives, so writing an input can overwrite an output. To start a new\n"
        "// sequence, fill every state input with its zero point, kStateZeroPoint[i].\n"
        f"// States: {', '.join(state.name for state in states)}.\n"
        f"constexpr int kStateCount = {count};\n"
        f"constexpr int kStateInput[kStateCount] = {row(s.input_index for s in states)};\n"
        f"constexpr int kStateOutput[kStateCount] = {row(s.output_index for s in states)};\n"
        f"constexpr int kStateBytes[kStateCount] = {row(s.bytes for s in states)};\n"
        f"constexpr int kStateZeroPoint[kStateCount] = {row(s.zero_point for s in states)};\n\n"
    )


def c_array_source(content: bytes, name: str, arena_bytes: int | None = None,
                   alt_decompression_bytes: int | None = None) -> tuple[str, str]:
    """(header, source) text defining `g_<name>` (16-byte aligned) and `g_<name>_len`.

    With `arena_bytes`, the header also defines `constexpr int kTensorArenaSize`;
    with `alt_decompression_bytes` (a LUT-compressed file),
    `constexpr int kAltDecompressionMemorySize`; for a streaming file, the
    state tensors to carry between calls (`kStateInput`, `kStateOutput`,
    `kStateBytes`, `kStateZeroPoint`), read from the file.
    """
    guard = f"TFJOINT_{name.upper()}_H_"
    arena = ""
    if arena_bytes is not None:
        arena = (
            "// The arena TensorFlow Lite Micro needed for this model, measured by TFLM with its reference kernels on\n"
            "// a 64-bit host (its persistent part is smaller on a 32-bit MCU). Optimized kernels (CMSIS-NN, ...)\n"
            "// may request scratch buffers on top: check interpreter.arena_used_bytes() on the device.\n"
            f"constexpr int kTensorArenaSize = {int(-(-int(arena_bytes) // 16) * 16)};\n\n"
        )
    if alt_decompression_bytes is not None:
        arena += (
            "// LUT-compressed weights: TFLM_DECODE (register it: AddDecode()) rebuilds each compressed tensor just\n"
            "// before its operator, into this buffer outside the arena. Give it to the interpreter before\n"
            "// AllocateTensors(): MicroInterpreter::SetDecompressionMemory({{buffer, size}}, 1). Without it the\n"
            "// decoded tensors take arena space (kTensorArenaSize assumes the buffer is given).\n"
            f"constexpr int kAltDecompressionMemorySize = {int(-(-int(alt_decompression_bytes) // 16) * 16)};\n\n"
        )
    arena += _states_text(content)
    header = (
        f"// Generated by tfjoint from a .tflite flatbuffer ({len(content)} bytes).\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char g_{name}[];\nextern const unsigned int g_{name}_len;\n\n"
        f"{arena}#endif  // {guard}\n"
    )
    rows = []
    for start in range(0, len(content), _BYTES_PER_LINE):
        rows.append("    " + ", ".join(f"0x{byte:02x}" for byte in content[start:start + _BYTES_PER_LINE]) + ",")
    source = (
        f"// Generated by tfjoint from a .tflite flatbuffer ({len(content)} bytes).\n"
        f"#include \"{name}.h\"\n\n"
        "// TensorFlow Lite Micro reads the flatbuffer in place: it must be 16-byte aligned.\n"
        f"alignas(16) const unsigned char g_{name}[] = {{\n" + "\n".join(rows) + "\n};\n"
        f"const unsigned int g_{name}_len = {len(content)};\n"
    )
    return header, source


def write_c_array(tflite_path: str | os.PathLike, out_dir: str | os.PathLike, name: str = "model_data",
                  arena_bytes: int | None = None, alt_decompression_bytes: int | None = None) -> CArrayFiles:
    """Writes `<name>.h` and `<name>.cc` holding the bytes of `tflite_path`, for TensorFlow Lite Micro.

    Args:
      tflite_path: the .tflite file.
      out_dir: the directory to write to (created if missing).
      name: the file names and the symbols `g_<name>` / `g_<name>_len`; a C
        identifier.
      arena_bytes: the tensor arena the model needs (the report's
        `memory["tflm_arena_bytes"]`): written as `kTensorArenaSize`.
      alt_decompression_bytes: for a LUT-compressed file, the buffer its
        DECODE operators decompress into (the report's
        `compression["alt_decompression_bytes"]`): written as
        `kAltDecompressionMemorySize`.

    Returns:
      The paths written and the symbols defined (`CArrayFiles`).

    Raises:
      FileNotFoundError: no file at `tflite_path`.
      errors.ConfigError: a name that is not a C identifier, an arena size
        that is not a positive int, or an output directory that is a file or
        not writable.
    """
    tflite_path, out_dir = os.fspath(tflite_path), os.fspath(out_dir)
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise errors.ConfigError(
            f"`name` must be a C identifier (letters, digits, underscores, not starting with a digit); received "
            f"{name!r}. Try 'model_data'."
        )
    if not os.path.isfile(tflite_path):
        raise FileNotFoundError(f"`tflite_path`: no .tflite file at '{tflite_path}'.")
    if arena_bytes is not None and (isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int)
                                    or arena_bytes <= 0):
        raise errors.ConfigError(f"`arena_bytes` must be a positive int (the report's memory['tflm_arena_bytes']); "
                                 f"received {arena_bytes!r}.")
    if alt_decompression_bytes is not None and (isinstance(alt_decompression_bytes, bool)
                                                or not isinstance(alt_decompression_bytes, int)
                                                or alt_decompression_bytes < 0):
        raise errors.ConfigError(f"`alt_decompression_bytes` must be an int >= 0 (the report's "
                                 f"compression['alt_decompression_bytes']); received {alt_decompression_bytes!r}.")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise errors.ConfigError(f"`out_dir` '{out_dir}' is a file; give a directory.")
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise errors.ConfigError(f"`out_dir` '{out_dir}' is not writable; choose a directory you can write to.")
    with open(tflite_path, "rb") as handle:
        content = handle.read()
    header, source = c_array_source(content, name, arena_bytes, alt_decompression_bytes)
    header_path, source_path = os.path.join(out_dir, f"{name}.h"), os.path.join(out_dir, f"{name}.cc")
    atomic_write_texts({header_path: header, source_path: source})
    return CArrayFiles(header=header_path, source=source_path, array_symbol=f"g_{name}",
                       length_symbol=f"g_{name}_len")
