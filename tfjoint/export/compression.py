"""Stage 2b of `export_tflite(compression="lut" or "tflm")`: the file for TFLM only, smaller, computing the same.

`compression="tflm"`: TFLM's flatbuffer reduction (`tflite.tflm_reduction`:
one zero point per weight tensor, no names), nothing else. `compression="lut"`:
TFLM's look-up-table compression of the int8 weights, then that reduction.

A kernel trained with `prepare(clusters=k)` holds at most `k` distinct int8
values per table. TFLM's compression tooling (`tflite_micro...compression`,
used here as it is: its LUT compressor, its spec, its DECODE insertion) then
stores each weight as a `ceil(log2(values))`-bit index into a value table,
and inserts a `TFLM_DECODE` operator that rebuilds the int8 tensor just
before the operator that reads it. The file (flash) shrinks; the decoded
tensor needs RAM while its operator runs: in an alternate buffer outside the
arena (`alt_decompression_bytes`; DECODE reuses it from one operator to the
next), or in the arena when that buffer is absent or too small.

Which tensors, and how (`plan_tables`):

* every weight tensor of a weight operator (convolution filters,
  fully-connected weights) with int8 values;
* one value table per channel where the tensor is quantized per channel, on
  its quantized axis (TFLM's DECODE supports axis 0 and the last); one table
  where it is quantized per tensor, or where one table holds every channel's
  values (a kernel trained with shared tables, `JointSchedule.shared_tables`:
  its channels then read that table with a stride of 0,
  `_one_table_for_every_channel`). A per-channel table on a tensor quantized
  per tensor would run and decode every channel with the first table
  (silently wrong): such a table is refused (`lut_spec`), never written;
* left uncompressed, with the reason in the report: more than 128 values in a
  table (LUT indices are 1 to 7 bits), or too small to pay (indices, tables
  and DECODE's metadata would not save `MIN_SAVING_BYTES`).

Decoding takes RAM: with a RAM budget, a tensor whose decoding would take the
file past it is split into groups of output channels first
(`tflite.split_weights`), each decoded on its own, or left uncompressed where
no split fits; the report lists what was split or left, and why.

The compressed file is validated in TFLM against the uncompressed one: the
outputs must be identical (`export.validation`).
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from typing import Any

import numpy as np

from tfjoint import errors
from tfjoint._names import float_layer_name
from tfjoint.export.candidates import Candidate, Candidates
from tfjoint.quantize.clusters import DCM_BYTES, MIN_SAVING_BYTES, index_bits, lut_bytes
from tfjoint.tflite import tflm
from tfjoint.tflite.flatbuffer import layer_of, read_flatbuffer
from tfjoint.tflite.split_weights import WeightSplit, split_output_channels, splittable
from tfjoint.tflite.tflm_reduction import Reduction, reduce_for_tflm

__all__ = ["Left", "LutTable", "LutFile", "ReducedFile", "plan_tables", "lut_ram", "lut_spec", "lut_bytes",
           "compress_candidate", "compress_candidates", "decoded_tables", "MIN_SAVING_BYTES", "MAX_LUT_VALUES",
           "MAX_GROUPS", "DEFAULT_RAM_GROWTH"]

MAX_LUT_VALUES = 128  # 7-bit indices: the widest TFLM's LUT format holds
_ALIGNMENT = 16  # TFLM aligns each decoded tensor in the alternate buffer
_INT8 = 9  # tflite.TensorType.INT8
_ONE_TABLE_AXIS = 0xF  # the DCM's axis field (byte 5, high bits) for one table (TFLM's per-tensor mode)
_DCM_STRIDE_BYTE = 6  # the DCM's byte holding the value tables' stride


class Left(str, enum.Enum):
    """Why a weight tensor was left uncompressed."""

    AXIS = "axis"  # quantized per channel along an axis DECODE has no tables for
    TOO_MANY_VALUES = "too_many_values"  # more distinct values in a table than LUT indices hold
    TOO_SMALL = "too_small"  # the indices, tables and DECODE's tensors would not save enough
    RAM_BUDGET = "ram_budget"  # decoding it would take the RAM past the budget
    SHARED_BUFFER = "shared_buffer"  # its buffer is shared with a tensor left uncompressed


@dataclasses.dataclass(frozen=True)
class LutTable:
    """One weight tensor's compression decision: compressed (bits, axis) or left as it is (reason)."""

    tensor_index: int
    tensor: str
    layer: str | None
    op: str
    shape: tuple[int, ...]
    tables: int  # value tables (channels for per-channel tables)
    values: int  # the most distinct values in one table, read from the int8 file
    bits: int | None  # index width; None: left uncompressed
    axis: int | None  # per-channel tables' axis; None: one table
    bytes_before: int
    bytes_after: int | None
    reason: str | None = None  # why it was left uncompressed, in words
    left: Left | None = None  # why it was left uncompressed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LutFile:
    """A LUT-compressed file: its bytes, each weight tensor's decision, and the alternate buffer DECODE needs.

    `alt_decompression_bytes` is computed from the DECODE operators: each
    one's decoded outputs side by side (16-byte aligned), the largest of
    them (TFLM's DECODE reuses the buffer from one operator to the next).
    The arena it leaves is measured in TFLM (`export.memory`).
    """

    content: bytes
    uncompressed_bytes: int
    tables: tuple[LutTable, ...]
    alt_decompression_bytes: int
    splits: tuple[dict[str, Any], ...] = ()
    reduction: Reduction | None = None  # TFLM's flatbuffer reduction, applied after the compression
    method = "lut"

    @property
    def compressed(self) -> tuple[LutTable, ...]:
        return tuple(table for table in self.tables if table.bits is not None)

    @property
    def left_uncompressed(self) -> tuple[LutTable, ...]:
        return tuple(table for table in self.tables if table.bits is None)

    def to_dict(self) -> dict[str, Any]:
        """The report's `compression` section (sizes from the files, values read from the int8 weights)."""
        return {"method": "lut", "flash_bytes": len(self.content), "uncompressed_flash_bytes": self.uncompressed_bytes,
                "alt_decompression_bytes": self.alt_decompression_bytes,
                "tensors": [t.to_dict() for t in self.compressed], "split": [dict(split) for split in self.splits],
                "uncompressed": [{"tensor": t.tensor, "layer": t.layer, "op": t.op, "bytes": t.bytes_before,
                                  "reason": t.reason, "left": t.left} for t in self.left_uncompressed],
                "reduction": self.reduction.to_dict() if self.reduction is not None else None}


@dataclasses.dataclass(frozen=True)
class ReducedFile:
    """`compression`="tflm": the int8 file after TFLM's flatbuffer reduction alone (`tflite.tflm_reduction`)."""

    content: bytes
    uncompressed_bytes: int
    reduction: Reduction
    alt_decompression_bytes = 0  # nothing to decode
    method = "tflm"

    def to_dict(self) -> dict[str, Any]:
        """The report's `compression` section (sizes from the files, what was removed counted in the file)."""
        return {"method": "tflm", "flash_bytes": len(self.content), "uncompressed_flash_bytes": self.uncompressed_bytes,
                "alt_decompression_bytes": 0, "tensors": [], "split": [], "uncompressed": [],
                "reduction": self.reduction.to_dict()}


def _compression_modules():
    try:
        from tflite_micro.tensorflow.lite.micro.compression import model_editor, spec
        from tflite_micro.tensorflow.lite.micro.compression.compress import compress
    except ImportError as error:
        raise errors.ConfigError(f"`compression`='lut' needs TensorFlow Lite Micro's compression tooling, which is "
                                 f"not installed here ({error}): pip install \"tfjoint[micro]\".") from error
    return model_editor, spec, compress


def _quantized_axis(tensor) -> int | None:
    """The axis a tensor is quantized per channel along, or None (per tensor)."""
    quantization = tensor.quantization
    scales = getattr(quantization, "scales", None)
    if isinstance(scales, (list, tuple, np.ndarray)) and len(scales) > 1:
        return int(quantization.axis or 0)
    return None


def _rows(values: np.ndarray, axis: int | None) -> np.ndarray:
    return values.reshape(1, -1) if axis is None else np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)


def lut_spec(spec, tensor_index: int, tensor, bits: int, axis: int | None):
    """TFLM's compression spec for one tensor; refuses tables that do not follow the tensor's quantization.

    Raises:
      errors.ExportError: per-channel tables on a tensor quantized per tensor
        (or along another axis): TFLM would decode every channel with the
        first table and compute a wrong result without an error.

    One table (`axis` None) on a tensor quantized per channel is TFLM's
    per-tensor mode, which its DECODE reads correctly only once the table
    stride is 0 (`_one_table_for_every_channel`, after compression).
    """
    quantized = _quantized_axis(tensor)
    if axis is not None and axis != quantized:
        how = "per tensor" if quantized is None else f"per channel along axis {quantized}"
        raise errors.ExportError(
            f"per-channel LUT tables along axis {axis} for tensor '{tensor.name}', which is quantized {how}: TFLM's "
            "DECODE would decode its channels with the wrong tables (a wrong result, without an error). Its tables "
            "must follow its quantization: one table for a tensor quantized per tensor.")
    mode = spec.PerTensor() if axis is None else spec.PerChannel(axis=axis)
    return spec.Tensor(subgraph=0, tensor=tensor_index, compression=[spec.LookUpTableCompression(bits, mode)])


def plan_tables(candidate: Candidate) -> list[LutTable]:
    """Every int8 weight tensor of the candidate, and whether (and how) it is compressed."""
    model_editor, _, _ = _compression_modules()
    model = model_editor.read(candidate.content)
    tensors = model.subgraphs[0].tensors
    layer_names = [layer.name for layer in candidate.keras_model.layers]
    found = []
    for weight in candidate.summary.weights:
        tensor = tensors[weight.tensor_index]
        if tensor.dtype != _INT8 or tensor.buffer is None or not tensor.buffer.data:
            continue
        values = np.asarray(tensor.array)
        axis = _quantized_axis(tensor)
        most = max(len(np.unique(row)) for row in _rows(values, axis))
        whole = len(np.unique(values))
        if axis is not None and whole <= MAX_LUT_VALUES:
            # One table for every channel where that stores the tensor in fewer bytes than a table per channel
            # (a kernel trained with shared tables: its channels' values are one set, slightly wider than any
            # single channel's): estimated with the scales and name either way.
            scales, name = values.shape[axis], len(tensor.name or "")
            per_channel = lut_bytes(int(values.size), index_bits(most), values.shape[axis], most, name, scales)
            if lut_bytes(int(values.size), index_bits(whole), 1, whole, name, scales) <= per_channel:
                axis, most = None, whole
        tables = 1 if axis is None else values.shape[axis]
        before = int(values.size)
        layer = layer_of(weight.tensor_name, layer_names) or layer_of(weight.output_name, layer_names)
        layer = float_layer_name(layer) if layer is not None else None
        common = dict(tensor_index=weight.tensor_index, tensor=tensor.name, layer=layer, op=weight.op_name,
                      shape=tuple(int(d) for d in values.shape), tables=tables, values=most,
                      bytes_before=before)
        if axis is not None and axis not in (0, values.ndim - 1):
            found.append(LutTable(bits=None, axis=None, bytes_after=None, left=Left.AXIS, reason=(
                f"quantized per channel along axis {axis}; TFLM's DECODE supports tables along axis 0 or the last "
                "axis only"), **common))
            continue
        if most > MAX_LUT_VALUES:
            found.append(LutTable(bits=None, axis=None, bytes_after=None, left=Left.TOO_MANY_VALUES, reason=(
                f"{most} distinct values in a table: LUT indices hold at most {MAX_LUT_VALUES} (7 bits); train it "
                f"with prepare(clusters=...) to share values"), **common))
            continue
        bits = index_bits(most)
        scales = len(getattr(tensor.quantization, "scales", None) or [0]) if tensor.quantization is not None else 0
        after = lut_bytes(int(values.size), bits, tables, _table_length(values, axis), len(tensor.name or ""), scales)
        if before - after < MIN_SAVING_BYTES:
            found.append(LutTable(bits=None, axis=None, bytes_after=None, left=Left.TOO_SMALL, reason=(
                f"too small to pay: {before} bytes would become {after} in the file ({bits}-bit indices, {tables} "
                f"table(s), and what a DECODE adds: its tensors, names and a copy of the quantization parameters), "
                f"less than {MIN_SAVING_BYTES} bytes saved"), **common))
            continue
        found.append(LutTable(bits=bits, axis=axis, bytes_after=after, **common))
    return found


def _table_length(values: np.ndarray, axis: int | None) -> int:
    return max(len(np.unique(row)) for row in _rows(values, axis))


def _alt_decompression_bytes(content: bytes) -> int:
    """The alternate buffer TFLM's DECODE operators need: per operator its outputs side by side, the largest."""
    model_editor, _, _ = _compression_modules()
    model = model_editor.read(content)
    need = 0
    for operator in model.subgraphs[0].operators:
        if operator.opcode_name != "TFLM_DECODE":
            continue
        total = 0
        for output in operator.outputs:
            size = int(np.prod(output.shape)) * np.dtype(output.numpy_dtype).itemsize
            total += -(-size // _ALIGNMENT) * _ALIGNMENT
        need = max(need, total)
    return need


def decoded_tables(content: bytes) -> list[dict[str, Any]]:
    """Read back from a LUT-compressed file: per DECODE output, its tensor (its name; None once the file is reduced for
    TFLM), index bits, tables, distinct values.

    The values are decoded as TFLM's DECODE decodes them (its LUT kernel,
    `decode_state_lut.cc`): big-endian packed indices; the DCM's byte 5
    holds the bit width, byte 6 the table stride; the channels are the
    output tensor's quantization channels (whatever the DCM's axis field
    says), channel `c` reading the table at `c * stride`. A stride of 0 is
    one table every channel reads (`_one_table_for_every_channel`).
    """
    model_editor, _, _ = _compression_modules()
    model = model_editor.read(content)
    found = []
    for operator in model.subgraphs[0].operators:
        if operator.opcode_name != "TFLM_DECODE":
            continue
        for position, output in enumerate(operator.outputs):
            encoded, ancillary = operator.inputs[2 * position], operator.inputs[2 * position + 1]
            metadata = bytes(ancillary.buffer.data)
            bits, stride = metadata[5] & 0x07, metadata[6]
            count = int(np.prod(output.shape))
            packed = np.unpackbits(np.frombuffer(bytes(encoded.buffer.data), np.uint8))[:count * bits]
            indices = packed.reshape(count, bits) @ (1 << np.arange(bits - 1, -1, -1))
            region = np.frombuffer(metadata[DCM_BYTES:], np.int8)
            shape = tuple(int(d) for d in output.shape)
            axis = _quantized_axis(output)
            channel = np.zeros(count, np.int64) if axis is None else np.indices(shape)[axis].reshape(-1)
            values = region[channel * stride + indices].reshape(shape)
            channel_axis = None if stride == 0 else axis  # None: every channel reads one table
            per_table = _rows(values, channel_axis)
            found.append({"tensor": encoded.name, "bits": int(bits), "axis": channel_axis,
                          "tables": 1 if channel_axis is None else int(shape[channel_axis]),
                          "values": int(max(len(np.unique(r)) for r in per_table)), "decoded": values})
    return found


def _one_table_for_every_channel(content: bytes) -> bytes:
    """`content` with every one-table LUT tensor quantized per channel given a table stride of 0.

    TFLM's DECODE decodes a tensor quantized per channel with a table per
    channel, channel `c` at `c * stride`, whatever the DCM's axis field says:
    TFLM's compressor writes one table (its per-tensor mode) with the
    table's length as the stride, and every channel but the first would
    read past it. The format's stride field allows 0 (`LutAncillaryData`):
    every channel then reads the one table. The DCM's bytes are patched
    where they are, so the file is otherwise TFLM's compressor's.
    """
    model_editor, _, _ = _compression_modules()
    patched = bytearray(content)
    for operator in model_editor.read(content).subgraphs[0].operators:
        if operator.opcode_name != "TFLM_DECODE":
            continue
        for position, output in enumerate(operator.outputs):
            metadata = bytes(operator.inputs[2 * position + 1].buffer.data)
            if metadata[5] >> 4 != _ONE_TABLE_AXIS or _quantized_axis(output) is None or metadata[6] == 0:
                continue
            at = content.find(metadata)
            while at >= 0:
                patched[at + _DCM_STRIDE_BYTE] = 0
                at = content.find(metadata, at + 1)
    return bytes(patched)


MAX_GROUPS = 64  # output-channel groups one tensor is split into at most (each adds an operator and its tensors)
DEFAULT_RAM_GROWTH = 1.5  # without a RAM budget, the report warns past 1.5x the uncompressed file's RAM


def lut_ram(content: bytes, alt_decompression_bytes: int) -> int:
    """The RAM a LUT-compressed file needs in TFLM: the arena plus the alternate decompression memory, or the
    single arena DECODE then writes into, whichever is smaller (both measured)."""
    with_alt = tflm.measure_arena(content, alt_decompression_bytes=alt_decompression_bytes).total_bytes
    return min(with_alt + alt_decompression_bytes, tflm.measure_arena(content).total_bytes)


def _splits_for(candidate: Candidate, tables: list[LutTable], group_bytes: int) -> list[WeightSplit]:
    """Each compressed, splittable tensor larger than `group_bytes`, in as many output-channel groups as make each
    group at most that (at most `MAX_GROUPS`, at least one channel per group)."""
    model_editor, _, _ = _compression_modules()
    graph = model_editor.read(candidate.content).subgraphs[0]
    found = []
    for table in tables:
        if table.bits is None or table.bytes_before <= group_bytes:
            continue
        weight = graph.tensors[table.tensor_index]
        users = graph.consumers_of(weight)
        if len(users) == 1 and splittable(users[0], weight):
            found.append(WeightSplit(table.tensor_index, min(MAX_GROUPS, table.shape[0],
                                                             -(-table.bytes_before // max(group_bytes, 1)))))
    return found


def compress_candidate(candidate: Candidate, ram_limit: int | None = None) -> LutFile:
    """The candidate's LUT-compressed file (TFLM's own compressor), or an ExportError naming the tensor at fault.

    Decoding takes RAM: each compressed tensor is rebuilt whole before its
    operator. With a RAM budget (`ram_limit`) the compressed file must fit
    it, measured in TFLM: its largest compressed tensors are split into groups
    of output channels (`tflite.split_weights`: the same results), the groups
    halved in size until the RAM fits, as long as the file stays smaller than
    the uncompressed one (each group costs a few hundred bytes of flash).
    Where no split fits, the tensors too large to decode within the budget
    are left uncompressed. The report lists what was split or left, and why.
    Without a budget nothing is split; the report says what decoding costs.
    """
    lut = _compressed(candidate)
    if ram_limit is None:
        return lut
    tables = plan_tables(candidate)
    plain = tflm.measure_arena(candidate.content).total_bytes
    limit = int(ram_limit)
    ram = lut_ram(lut.content, lut.alt_decompression_bytes)
    largest = max((t.bytes_before for t in tables if t.bits is not None), default=0)
    group_bytes = largest
    splits: list[WeightSplit] = []
    least: tuple[int, tuple[WeightSplit, ...]] = (ram, ())  # the least RAM measured, and its splits
    while ram > limit and group_bytes > 1:
        group_bytes //= 2
        trial_splits = _splits_for(candidate, tables, group_bytes)
        if not trial_splits:
            break
        if trial_splits == splits:  # the groups are capped (channels, MAX_GROUPS): this size splits no further
            continue
        split = split_output_channels(candidate.content, trial_splits)
        trial = _compressed(dataclasses.replace(candidate, content=split, summary=read_flatbuffer(split)))
        if len(trial.content) >= len(candidate.content):
            break  # the groups cost more flash than the compression saves
        splits, lut, ram = trial_splits, trial, lut_ram(trial.content, trial.alt_decompression_bytes)
        least = min(least, (ram, tuple(splits)), key=lambda measured: measured[0])
    sizes = {t.tensor_index: t for t in tables}
    if ram > limit:  # no split fits: the tensors too large to decode within the budget stay as they are
        allowance = max(limit - plain, 0)
        kept = [t.tensor_index for t in tables if t.bits is not None and t.bytes_before > allowance]
        if {t.tensor_index for t in tables if t.bits is not None} <= set(kept):
            groups = [f"{sizes[g.tensor_index].layer or sizes[g.tensor_index].tensor} in {g.groups}" for g in least[1]]
            how = f"in output-channel groups ({', '.join(groups)})" if groups else "decoded whole"
            raise errors.ExportError(
                f"`compression`='lut' cannot fit the RAM budget of {limit} bytes (ExportOptions(budget=Budget("
                f"ram_bytes={limit}))): every tensor worth compressing "
                f"({', '.join(repr(sizes[i].layer or sizes[i].tensor) for i in kept)}) is decoded into RAM beside "
                f"the {plain} bytes the uncompressed file needs. The least RAM a compressed file needed, measured in "
                f"TFLM, is {least[0]} bytes, {how}. Raise ram_bytes to at least {least[0]}, or export with "
                "compression='tflm' (no decoding; a split into more groups costs more flash than it saves).")
        lut = _compressed(candidate, leave=frozenset(kept))
        entries = tuple({"tensor": sizes[i].tensor, "layer": sizes[i].layer, "bytes": sizes[i].bytes_before,
                         "groups": 1, "ram_limit": limit, "uncompressed_ram": plain,
                         "reason": f"left uncompressed: decoding it needs {sizes[i].bytes_before} bytes beside the "
                                   f"{plain} the file needs, past the RAM budget of {limit}, and no split into "
                                   "channel groups both fits and keeps the file smaller"} for i in kept)
        return dataclasses.replace(lut, splits=entries)
    entries = tuple({"tensor": sizes[split.tensor_index].tensor, "layer": sizes[split.tensor_index].layer,
                     "bytes": sizes[split.tensor_index].bytes_before, "groups": split.groups, "ram_limit": limit,
                     "uncompressed_ram": plain, "ram": ram,
                     "reason": f"decoded whole it took the RAM past the budget of {limit} bytes (the uncompressed "
                               f"file needs {plain}); in {split.groups} groups of output channels, each decoded on "
                               f"its own, the file needs {ram}"}
                    for split in splits)
    return dataclasses.replace(lut, uncompressed_bytes=len(candidate.content), splits=entries)


def _compressed(candidate: Candidate, leave: frozenset[int] = frozenset()) -> LutFile:
    model_editor, spec, compress = _compression_modules()
    tables = [dataclasses.replace(t, bits=None, axis=None, bytes_after=None, left=Left.RAM_BUDGET, reason=(
        "too large to decode within the RAM budget")) if t.tensor_index in leave else t
        for t in plan_tables(candidate)]
    compressed = [table for table in tables if table.bits is not None]
    if not compressed:
        reasons = "; ".join(f"'{t.layer or t.tensor}': {t.reason}" for t in tables) or "it has no int8 weights"
        causes = {t.left for t in tables}
        advice = ("Train with tfjoint.prepare(..., clusters=16) (or fewer) so weights share values."
                  if Left.TOO_MANY_VALUES in causes or not tables else
                  "Export with compression='tflm' (TFLM's flatbuffer reduction alone): TFLM's DECODE does not pay on "
                  "tensors this small.")
        raise errors.ExportError(f"`compression`='lut' found no weight tensor worth compressing: {reasons}. {advice}")
    tensors = model_editor.read(candidate.content).subgraphs[0].tensors
    # Largest saving first; while the file is not smaller than the int8 file, the smallest saving is given up.
    chosen = sorted(compressed, key=lambda t: t.bytes_before - (t.bytes_after or 0), reverse=True)
    while chosen:
        specs = [lut_spec(spec, t.tensor_index, tensors[t.tensor_index], t.bits or 8, t.axis) for t in chosen]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its expansion warning: tensors that would grow are left out above
                content = _one_table_for_every_channel(bytes(compress(candidate.content, specs)))
        except Exception as error:  # TFLM's CompressionError (or a bug there): name what was being compressed
            raise errors.ExportError(f"TFLM's LUT compression failed on this file ({type(error).__name__}: "
                                     f"{error}); tensors: {[t.layer or t.tensor for t in chosen]}. Export with "
                                     "compression='tflm'.") from error
        if len(content) < len(candidate.content) or len(chosen) == 1:
            break
        chosen = chosen[:-1]
    given_up = {t.tensor_index for t in compressed} - {t.tensor_index for t in chosen}
    tables = [dataclasses.replace(t, bits=None, axis=None, bytes_after=None, left=Left.TOO_SMALL, reason=(
        "too small to pay: with it the compressed file was not smaller")) if t.tensor_index in given_up else t
        for t in tables]
    if len(content) >= len(candidate.content):
        raise errors.ExportError(f"`compression`='lut' would not shrink this file ({len(candidate.content)} bytes "
                                 f"int8, {len(content)} compressed): its weight tensors are too small for TFLM's "
                                 "DECODE to pay. Export with compression='tflm' (TFLM's flatbuffer reduction "
                                 "alone).")
    return LutFile(content, len(candidate.content), _read_back(tables, content, candidate),
                   _alt_decompression_bytes(content))


def _read_back(tables: list[LutTable], content: bytes, candidate: Candidate) -> tuple[LutTable, ...]:
    """The tables as the compressed file holds them: index bits, tables and distinct values decoded from it.

    A tensor the compressor left out (its buffer shared with a tensor that
    stays uncompressed) is listed as uncompressed, with that reason.

    Raises:
      errors.ExportError: a decoded tensor differs from the int8 weights it
        replaced (never shipped: a wrong result without an error on the device).
    """
    decoded = {entry["tensor"]: entry for entry in decoded_tables(content)}
    originals = {w.tensor_index: w.values for w in candidate.summary.weights}
    read = []
    for table in tables:
        if table.bits is None:
            read.append(table)
            continue
        entry = decoded.get(table.tensor)
        if entry is None:
            read.append(dataclasses.replace(
                table, bits=None, axis=None, bytes_after=None, left=Left.SHARED_BUFFER,
                reason=("its buffer is shared with a tensor left uncompressed; TFLM's compressor keeps such a "
                        "buffer whole")))
            continue
        original = originals.get(table.tensor_index)
        if original is not None and not np.array_equal(entry["decoded"], original):
            raise errors.ExportError(f"TFLM's LUT tables for tensor '{table.tensor}' (layer '{table.layer}') decode to "
                                     "other weights than the int8 file's: the compressed file is not written. Export "
                                     "with compression='tflm' and report this.")
        read.append(dataclasses.replace(table, bits=entry["bits"], axis=entry["axis"], tables=entry["tables"],
                                        values=entry["values"]))
    return tuple(read)


def compress_candidates(candidates: Candidates, compression: str, phases, ram_limit: int | None = None) -> Candidates:
    """Each candidate with the file for TFLM attached: LUT-compressed then reduced (`compression`="lut"; `ram_limit`:
    a RAM budget the decoding must fit), or reduced alone ("tflm"); unchanged for "none"."""
    if compression == "none":
        return candidates
    files = []
    for candidate in candidates.files:
        compressed: LutFile | ReducedFile
        if compression == "lut":
            with phases.run("LUT compression", f"{candidate.quantization} file"):
                lut = compress_candidate(candidate, ram_limit)
            with phases.run("TFLM reduction", f"{candidate.quantization} file"):
                reduced = reduce_for_tflm(lut.content)
            compressed = dataclasses.replace(lut, content=reduced.content, reduction=reduced)
        else:
            with phases.run("TFLM reduction", f"{candidate.quantization} file"):
                reduced = reduce_for_tflm(candidate.content)
            compressed = ReducedFile(reduced.content, len(candidate.content), reduced)
        files.append(dataclasses.replace(candidate, compressed=compressed))
    return Candidates(tuple(files), candidates.notes)
