"""What tfjoint knows about each TFLite operator, in one table.

One `Operator` row per builtin operator tfjoint writes or reads: where its
data, weights and bias are among its inputs, which axis of its filter holds
the output (and input) channels, how many multiply-accumulates it costs, the
`MicroMutableOpResolver` method that registers it in TensorFlow Lite Micro,
and whether TFLM has a kernel for it. The flatbuffer reader, the memory
figures, the budget cost model, the per-layer error and the C-array writer
all read this table; none keeps a copy.

Plain Python: no TensorFlow here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

__all__ = ["Operator", "operator", "OPERATORS", "WEIGHT_OPS", "TFLM_RESOLVER_METHODS", "resolver_method",
           "runs_in_tflm", "operators_missing_in_tflm", "op_macs"]

Shape = tuple[int, ...]


def _product(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _conv_macs(inputs: list[Shape], output: Shape) -> int:  # filter (out, h, w, in)
    weights = inputs[1]
    return _product(output) * int(weights[1] * weights[2] * weights[3]) if len(weights) == 4 else 0


def _depthwise_macs(inputs: list[Shape], output: Shape) -> int:  # filter (1, h, w, channels)
    weights = inputs[1]
    return _product(output) * int(weights[1] * weights[2]) if len(weights) == 4 else 0


def _fully_connected_macs(inputs: list[Shape], output: Shape) -> int:  # filter (units, features)
    weights = inputs[1]
    return _product(output) * int(weights[1]) if len(weights) == 2 else 0


def _transpose_conv_macs(inputs: list[Shape], output: Shape) -> int:  # (output_shape, filter (out, h, w, in), data)
    weights = inputs[1]
    if len(weights) != 4 or len(inputs) < 3:
        return 0
    return _product(inputs[2]) * int(weights[0] * weights[1] * weights[2])


def _lstm_macs(inputs: list[Shape], output: Shape) -> int:  # (data (batch, time, features), eight gate weights, ...)
    if len(inputs) < 9 or len(inputs[0]) != 3:
        return 0
    steps = int(inputs[0][0] * inputs[0][1])  # batch x time steps, each through the eight gates
    return steps * sum(_product(shape) for shape in inputs[1:9] if shape)


def _batch_matmul_macs(inputs: list[Shape], output: Shape) -> int:  # (..., m, k) x (..., k, n) -> (..., m, n)
    if len(inputs) < 2 or len(inputs[0]) < 2 or not output:
        return 0
    return _product(output) * int(inputs[0][-1])


@dataclasses.dataclass(frozen=True)
class Operator:
    """One builtin TFLite operator, as tfjoint reads and costs it.

    Attributes:
      name: the builtin operator's name ("CONV_2D").
      weights: input positions that hold trained weights (a filter, an
        LSTM's eight gate matrices, an embedding table).
      data: input position of the activations it reads (None if not one).
      bias: input position of its bias (None if it has none).
      output_axis: axis of the filter (`weights[0]`) that holds the output
        channels (0 for CONV_2D and FULLY_CONNECTED, 3 for DEPTHWISE_CONV_2D).
      input_axis: axis of the filter that holds the input channels, if any.
      macs: `(input shapes, output shape) -> multiply-accumulates`.
      per_channel_op_data: TFLM keeps a multiplier and shift per output
        channel for it in persistent memory.
    """

    name: str
    weights: tuple[int, ...] = ()
    data: int | None = 0
    bias: int | None = None
    output_axis: int | None = None
    input_axis: int | None = None
    macs: Callable[[list[Shape], Shape], int] | None = None
    per_channel_op_data: bool = False

    @property
    def has_filter(self) -> bool:
        """Whether input 1 is a filter whose output channels the channel planner follows."""
        return self.output_axis is not None

    @property
    def resolver_method(self) -> str:
        """The `MicroMutableOpResolver` method that registers it ("CONV_2D" -> "AddConv2D")."""
        return resolver_method(self.name)

    @property
    def in_tflm(self) -> bool:
        """Whether TensorFlow Lite Micro registers a kernel for it."""
        return runs_in_tflm(self.name)

    def operand_shapes(self, shapes: list[Shape]) -> Shape | None:
        """The shape of its filter among its inputs' shapes, if it has one."""
        return shapes[self.weights[0]] if self.weights and len(shapes) > self.weights[0] else None


OPERATORS: dict[str, Operator] = {op.name: op for op in (
    Operator("CONV_2D", weights=(1,), bias=2, output_axis=0, input_axis=3, macs=_conv_macs, per_channel_op_data=True),
    Operator("DEPTHWISE_CONV_2D", weights=(1,), bias=2, output_axis=3, macs=_depthwise_macs,
             per_channel_op_data=True),
    Operator("FULLY_CONNECTED", weights=(1,), bias=2, output_axis=0, input_axis=1, macs=_fully_connected_macs),
    Operator("TRANSPOSE_CONV", weights=(1,), data=2, bias=3, macs=_transpose_conv_macs, per_channel_op_data=True),
    # Input-to-{input, forget, cell, output} gates, then recurrent-to-the-same.
    Operator("UNIDIRECTIONAL_SEQUENCE_LSTM", weights=tuple(range(1, 9)), macs=_lstm_macs),
    Operator("BATCH_MATMUL", macs=_batch_matmul_macs),
    Operator("GATHER", weights=(0,), data=1),  # an embedding table, looked up by the token ids
)}

# Operators whose input 1 is a filter: a convolution's or a fully connected layer's weights.
WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})


def operator(name: str) -> Operator:
    """The row of operator `name`; an operator with no special knowledge gets a plain row (data at input 0)."""
    return OPERATORS.get(name) or Operator(name)


def op_macs(op_name: str, input_shapes: list[Shape], output_shape: Shape) -> int:
    """Multiply-accumulates of one operator from its shapes (0 for operators without weights or matmuls)."""
    row = operator(op_name)
    if row.macs is None or len(input_shapes) < 2 or not output_shape:
        return 0
    return int(row.macs(input_shapes, output_shape))


# MicroMutableOpResolver methods whose names are not the CamelCase of the builtin operator's name.
_IRREGULAR_METHODS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "DETECTION_POSTPROCESS": "AddDetectionPostprocess",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
}

# TensorFlow Lite Micro's MicroMutableOpResolver methods for builtin operators (micro_mutable_op_resolver.h of the
# tflite-micro release tfjoint[micro] pins): an operator without one has no TFLM kernel. TFLM_DECODE is TFLM's
# own custom operator that decompresses LUT-compressed tensors.
TFLM_RESOLVER_METHODS = frozenset("""
AddAbs AddAdd AddAddN AddArgMax AddArgMin AddAssignVariable AddAveragePool2D AddBatchMatMul AddBatchToSpaceNd
AddBroadcastArgs AddBroadcastTo AddCallOnce AddCast AddCeil AddConcatenation AddConv2D AddCos AddCumSum
AddDepthToSpace AddDepthwiseConv2D AddDequantize AddDiv AddDynamicUpdateSlice AddElu AddEmbeddingLookup AddEqual
AddExp AddExpandDims AddFill AddFloor AddFloorDiv AddFloorMod AddFullyConnected AddGather AddGatherNd AddGreater
AddGreaterEqual AddHardSwish AddIf AddL2Normalization AddL2Pool2D AddLeakyRelu AddLess AddLessEqual AddLog
AddLogSoftmax AddLogicalAnd AddLogicalNot AddLogicalOr AddLogistic AddMaxPool2D AddMaximum AddMean AddMinimum
AddMirrorPad AddMul AddNeg AddNotEqual AddPack AddPad AddPadV2 AddPrelu AddQuantize AddReadVariable AddReduceAll
AddReduceMax AddReduceMin AddRelu AddRelu6 AddReshape AddResizeBilinear AddResizeNearestNeighbor AddReverseV2
AddRound AddRsqrt AddSelectV2 AddShape AddSin AddSlice AddSoftmax AddSpaceToBatchNd AddSpaceToDepth AddSplit
AddSplitV AddSqrt AddSquare AddSquaredDifference AddSqueeze AddStridedSlice AddSub AddSum AddSvdf AddTanh
AddTranspose AddTransposeConv AddUnidirectionalSequenceLSTM AddUnpack AddVarHandle AddWhile AddZerosLike
AddDecode
""".split())


def resolver_method(op_name: str) -> str:
    """The `MicroMutableOpResolver` method that registers operator `op_name` ("CONV_2D" -> "AddConv2D")."""
    if op_name in _IRREGULAR_METHODS:
        return _IRREGULAR_METHODS[op_name]
    if op_name == "TFLM_DECODE":
        return "AddDecode"
    return "Add" + "".join(part.capitalize() if not part[0].isdigit() else part for part in op_name.split("_") if part)


def runs_in_tflm(op_name: str) -> bool:
    """Whether TensorFlow Lite Micro has a kernel for `op_name`."""
    return resolver_method(op_name) in TFLM_RESOLVER_METHODS


def operators_missing_in_tflm(op_names) -> list[str]:
    """The operators of a file TensorFlow Lite Micro has no kernel for, in first-use order."""
    return list(dict.fromkeys(name for name in op_names if not runs_in_tflm(name)))
