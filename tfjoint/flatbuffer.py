"""Read a .tflite flatbuffer back through the LiteRT interpreter.

Everything tfjoint reports about an exported model (operators, dtypes, which
weights are zero) comes from here, read out of the bytes the converter
produced, never from what the converter was asked to do. The interpreter is
created without its default delegate: XNNPACK would otherwise replace the
operators with one opaque DELEGATE node.
"""

import dataclasses

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

__all__ = ["OpInfo", "WeightTensor", "FlatbufferSummary", "read_flatbuffer", "layer_of"]

# Operators whose input 1 is a weight (filter) tensor and input 2 the bias.
WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})
_FLOAT_DTYPES = (np.float32, np.float16, np.float64)


@dataclasses.dataclass(frozen=True)
class OpInfo:
    index: int
    name: str
    float_tensors: tuple[str, ...]  # names of float inputs/outputs (should be none)
    tensor_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class WeightTensor:
    op_index: int
    op_name: str
    tensor_name: str
    dtype: str
    size: int
    zeros: int
    bias_dtype: str | None
    values: np.ndarray = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class FlatbufferSummary:
    ops: tuple[OpInfo, ...]
    weights: tuple[WeightTensor, ...]
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]

    @property
    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]

    @property
    def float_ops(self) -> list[OpInfo]:
        return [op for op in self.ops if op.float_tensors]

    @property
    def fully_int8(self) -> bool:
        """int8 I/O, int8 weights, int32 biases, and no float tensor anywhere."""
        return (
            all(d == "int8" for d in self.input_dtypes)
            and all(d == "int8" for d in self.output_dtypes)
            and all(w.dtype == "int8" and w.bias_dtype in (None, "int32") for w in self.weights)
            and not self.float_ops
        )


def read_flatbuffer(model_content: bytes) -> FlatbufferSummary:
    """Lists operators, their float tensors, and every weight tensor with its zeros."""
    interpreter = Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops, weights = [], []
    for op in interpreter._get_ops_details():  # the only API that lists operators
        used = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        floats = tuple(tensors[i]["name"] for i in used if np.dtype(tensors[i]["dtype"]).type in _FLOAT_DTYPES)
        ops.append(OpInfo(op["index"], op["op_name"], floats, tuple(tensors[i]["name"] for i in used)))
        if op["op_name"] in WEIGHT_OPS and len(op["inputs"]) > 1:
            filter_index = op["inputs"][1]
            values = interpreter.get_tensor(filter_index)
            bias_index = op["inputs"][2] if len(op["inputs"]) > 2 else -1
            weights.append(
                WeightTensor(
                    op_index=op["index"],
                    op_name=op["op_name"],
                    tensor_name=tensors[filter_index]["name"],
                    dtype=np.dtype(tensors[filter_index]["dtype"]).name,
                    size=int(values.size),
                    zeros=int(np.count_nonzero(values == 0)),
                    bias_dtype=np.dtype(tensors[bias_index]["dtype"]).name if bias_index >= 0 else None,
                    values=values,
                )
            )
    return FlatbufferSummary(
        ops=tuple(ops),
        weights=tuple(weights),
        input_dtypes=tuple(np.dtype(d["dtype"]).name for d in interpreter.get_input_details()),
        output_dtypes=tuple(np.dtype(d["dtype"]).name for d in interpreter.get_output_details()),
    )


def layer_of(tensor_name: str, layer_names) -> str | None:
    """The Keras layer a converter tensor name came from ('model/quant_dense/MatMul' -> 'quant_dense')."""
    segments = {part for piece in tensor_name.split(";") for part in piece.split("/")}
    matches = [name for name in layer_names if name in segments]
    return max(matches, key=len) if matches else None
