"""TFLM's flatbuffer reduction: the bytes a TensorFlow Lite Micro file carries that TFLM never reads, removed.

TFLM's own tool (`tflm_model_transforms_lib`, "go/tflm-flatbuffer-reduction";
not in the `tflite-micro` wheel) makes a file smaller without changing what
it computes; two of its transforms apply to every file tfjoint writes:

* one zero point per weight or bias tensor: the converter stores an int64
  zero point beside each per-channel float32 scale, all of them 0 (TFLM's
  int8 weights are symmetric), and TFLM reads one zero point for every
  channel where the list is shorter than the scales (`micro_allocator.cc`:
  "As a space-saving optimization, zero point arrays for weights can be
  reduced to a single value"). 8 of the 12 bytes each channel's
  quantization takes: a fifth of a small convolutional file;
* no min/max arrays and no tensor, subgraph or description strings
  (the input and output names of the signature stay: they name the
  streaming states).

LiteRT refuses such a file ("QuantizationParam has 1 zero_point values and 12
scale values. Must have same number."): it is for TFLM only. The file is
written with the Python flatbuffers library and re-aligned by TFLM's C++
tool (`tflite_flatbuffer_align`), as TFLM's own transforms do: the Python
library does not honour the schema's 16-byte buffer alignment.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

from tfjoint import errors

__all__ = ["Reduction", "reduce_for_tflm"]


@dataclasses.dataclass(frozen=True)
class Reduction:
    """A file after TFLM's flatbuffer reduction, and what was taken out of it (counted in the file's fields)."""

    content: bytes
    original_bytes: int
    zero_points_removed: int  # int64 zero points dropped from per-channel weight and bias tensors
    string_bytes_removed: int  # tensor, subgraph and description strings
    min_max_removed: int  # float32 min/max values (calibration leftovers)

    @property
    def saved_bytes(self) -> int:
        return self.original_bytes - len(self.content)

    def to_dict(self) -> dict[str, int]:
        return {"original_bytes": self.original_bytes, "bytes": len(self.content), "saved_bytes": self.saved_bytes,
                "zero_points_removed": self.zero_points_removed, "string_bytes_removed": self.string_bytes_removed,
                "min_max_removed": self.min_max_removed}


def _modules():
    try:
        import flatbuffers
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
        from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper as align
    except ImportError as error:
        raise errors.ConfigError(f"a file for TFLM only needs TensorFlow Lite Micro's tooling, which is not installed "
                                 f"here ({error}): pip install \"tfjoint[micro]\".") from error
    return flatbuffers, schema, align


def _aligned(content: bytes, align) -> bytes:
    """`content` re-packed by TFLM's C++ flatbuffer tool (it takes paths)."""
    with tempfile.TemporaryDirectory(prefix="tfjoint_align_") as directory:
        source, target = os.path.join(directory, "in.tflite"), os.path.join(directory, "out.tflite")
        with open(source, "wb") as handle:
            handle.write(content)
        align.align_tflite_model(source, target)
        with open(target, "rb") as handle:
            return handle.read()


def _length(values) -> int:
    """The length of a string or array field that may be absent (None)."""
    return len(values) if values is not None else 0


def reduce_for_tflm(content: bytes) -> Reduction:
    """`content` without what TFLM never reads (see the module docstring); the same outputs in TFLM.

    Only a constant tensor (one with data) whose zero points are all 0
    keeps one of them: an activation's zero point, or a nonzero one, is
    left as it is.
    """
    flatbuffers, schema, align = _modules()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    zero_points = strings = min_max = 0
    strings += _length(model.description)
    model.description = None
    for graph in model.subgraphs or []:
        strings += _length(graph.name)
        graph.name = None
        for tensor in graph.tensors or []:
            strings += _length(tensor.name)
            tensor.name = None
            quantization = tensor.quantization
            if quantization is None:
                continue
            min_max += _length(quantization.min) + _length(quantization.max)
            quantization.min = quantization.max = None
            zeros = quantization.zeroPoint
            constant = bool(tensor.buffer) and _length(model.buffers[tensor.buffer].data) > 0
            if _length(zeros) > 1 and constant and not any(int(z) for z in zeros):
                zero_points += len(zeros) - 1
                quantization.zeroPoint = [0]
    builder = flatbuffers.Builder(max(1024, 2 * len(content)))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return Reduction(_aligned(bytes(builder.Output()), align), len(content), zero_points, strings, min_max)
