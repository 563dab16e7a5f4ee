"""Read a .tflite flatbuffer back through the LiteRT interpreter, once.

Everything tfjoint reports about an exported model (operators, dtypes, which
weights are zero, the int8 weight values, the input/output quantization, tensor
lifetimes) comes from here, read out of the bytes the converter produced,
never from what the converter was asked to do. The summary keeps what later
stages need (the int8 weight values for the histograms, the tensors for the
memory plan), so nothing parses the file a second time. The interpreter is
created without its default delegate: XNNPACK would otherwise replace the
operators with one opaque DELEGATE node.
"""

import dataclasses

import numpy as np

from tfjoint._litert import Interpreter, OpResolverType, ops_details
from tfjoint._names import float_layer_name
from tfjoint.tflite.operators import operator, runs_in_tflm

__all__ = ["OpInfo", "TensorInfo", "WeightTensor", "IOTensor", "FlatbufferSummary", "read_flatbuffer", "layer_of",
           "name_segments",
           "float_op_problems", "missing_in_tflm"]

_FLOAT_DTYPES = (np.float32, np.float16, np.float64)
_INTEGER_INPUTS = ("int8", "int16", "int32", "int64", "uint8", "bool")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of the flatbuffer, as LiteRT reports it."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class OpInfo:
    index: int
    name: str
    inputs: tuple[int, ...]  # tensor indices (optional inputs left out)
    outputs: tuple[int, ...]
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
    shape: tuple[int, ...] = ()
    values: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    tensor_index: int = -1
    output_name: str = ""  # the operator's output tensor: names the layer when a shared constant's name does not

    @property
    def names(self) -> tuple[str, str]:
        """The tensor's own name, then its operator's output's (either may name the Keras layer)."""
        return (self.tensor_name, self.output_name)

    @property
    def output_channels(self) -> int:
        """Output channels of a filter, on the axis the operator table gives (0: none known)."""
        axis = operator(self.op_name).output_axis
        if not self.shape or axis is None:
            return 0
        return int(self.shape[axis])


@dataclasses.dataclass(frozen=True)
class IOTensor:
    """A model input or output: what a device developer feeds or reads, and how to (de)quantize it.

    `q = round(x / scale) + zero_point` turns a float into the tensor's
    integer type; `x = (q - zero_point) * scale` turns it back.
    """

    index: int
    name: str  # the tensor's name in the file
    signature_name: str | None  # its key in the serving signature (the Keras input/output name)
    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int | None

    @property
    def float_range(self) -> tuple[float, float] | None:
        """The float values the integer type can represent, [(qmin - zp) * s, (qmax - zp) * s]."""
        if self.scale is None or self.zero_point is None or not np.issubdtype(np.dtype(self.dtype), np.integer):
            return None
        info = np.iinfo(np.dtype(self.dtype))
        return (float((info.min - self.zero_point) * self.scale), float((info.max - self.zero_point) * self.scale))

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "signature_name": self.signature_name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "float_range": list(self.float_range) if self.float_range else None,
        }


@dataclasses.dataclass(frozen=True)
class FlatbufferSummary:
    ops: tuple[OpInfo, ...]
    weights: tuple[WeightTensor, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[IOTensor, ...]
    outputs: tuple[IOTensor, ...]

    @property
    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]

    @property
    def float_ops(self) -> list[OpInfo]:
        return [op for op in self.ops if op.float_tensors]

    @property
    def input_dtypes(self) -> tuple[str, ...]:
        return tuple(t.dtype for t in self.inputs)

    @property
    def output_dtypes(self) -> tuple[str, ...]:
        return tuple(t.dtype for t in self.outputs)

    @property
    def fully_int8(self) -> bool:
        """int8 I/O, int8 weights, int32 biases, and no float tensor anywhere.

        An integer input of the Keras model (token ids, a padding mask) keeps its integer type: it indexes or
        selects, it carries no value to quantize.
        """
        return (
            all(d in _INTEGER_INPUTS for d in self.input_dtypes)
            and all(d == "int8" for d in self.output_dtypes)
            and all(w.dtype == "int8" and w.bias_dtype in (None, "int32") for w in self.weights)
            and not self.float_ops
        )

    @property
    def constant_tensors(self) -> list[TensorInfo]:
        """Tensors no operator produces and the caller does not feed: the weights, biases and constants."""
        produced = {i for op in self.ops for i in op.outputs}
        fed = {t.index for t in self.inputs}
        used = {i for op in self.ops for i in op.inputs}
        by_index = {t.index: t for t in self.tensors}
        return [by_index[i] for i in sorted(used - produced - fed) if i in by_index]

    @property
    def weight_sparsity(self) -> float:
        """Fraction of zeros over every weight (filter) tensor."""
        total = sum(w.size for w in self.weights)
        return sum(w.zeros for w in self.weights) / total if total else 0.0

    @property
    def operator_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts

    def weights_of(self, layer_names, layer_of_op: dict[str, str] | None = None) -> dict[str, list[WeightTensor]]:
        """Weight tensors per Keras layer name, by the names the converter gave them.

        `layer_of_op` attributes weights whose names say nothing (an LSTM's are
        `arith.constant*`) by their operator: {"UNIDIRECTIONAL_SEQUENCE_LSTM": "lstm"}.
        """
        found: dict[str, list[WeightTensor]] = {}
        seen: set[tuple[str, int]] = set()
        for weight in self.weights:
            layer = (layer_of(weight.tensor_name, layer_names) or layer_of(weight.output_name, layer_names)
                     or (layer_of_op or {}).get(weight.op_name))
            if layer is not None and (layer, weight.tensor_index) not in seen:  # a constant shared by several ops once
                seen.add((layer, weight.tensor_index))
                found.setdefault(layer, []).append(weight)
        return found


def _io_tensor(details, signature_names) -> IOTensor:
    scale, zero_point = details["quantization"]
    integer = np.issubdtype(np.dtype(details["dtype"]), np.integer)
    return IOTensor(
        index=int(details["index"]),
        name=details["name"],
        signature_name=signature_names.get(int(details["index"])),
        shape=tuple(int(d) for d in details["shape_signature"]),
        dtype=np.dtype(details["dtype"]).name,
        scale=float(scale) if integer and scale else None,
        zero_point=int(zero_point) if integer and scale else None,
    )


def _signature_names(interpreter) -> tuple[dict[int, str], dict[int, str]]:
    signatures = interpreter.get_signature_list()
    if not signatures:
        return {}, {}
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    inputs = {int(d["index"]): name for name, d in runner.get_input_details().items()}
    outputs = {int(d["index"]): name for name, d in runner.get_output_details().items()}
    return inputs, outputs


def _tensor_info(index: int, t: dict) -> TensorInfo:
    params = t.get("quantization_parameters") or {}
    shape = tuple(int(d) for d in t["shape"])
    dtype = np.dtype(t["dtype"])
    return TensorInfo(
        index=index,
        name=t["name"],
        shape=shape,
        dtype=dtype.name,
        nbytes=int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize,
        scales=tuple(float(s) for s in params.get("scales", ())),
        zero_points=tuple(int(z) for z in params.get("zero_points", ())),
    )


def _op_info(op: dict, details: dict) -> OpInfo:
    inputs = tuple(int(i) for i in op["inputs"] if i >= 0)
    outputs = tuple(int(i) for i in op["outputs"] if i >= 0)
    used = inputs + outputs
    floats = tuple(details[i]["name"] for i in used if np.dtype(details[i]["dtype"]).type in _FLOAT_DTYPES)
    return OpInfo(op["index"], op["op_name"], inputs, outputs, floats, tuple(details[i]["name"] for i in used))


def _weight_positions(op: dict, constants: set[int]) -> list[int]:
    """The input positions of an operator that hold constant weights (a filter, an LSTM's gates, a table)."""
    inputs = op["inputs"]
    return [p for p in operator(op["op_name"]).weights if p < len(inputs) and inputs[p] in constants]


def _weight_tensor(interpreter, op: dict, position: int, details: dict) -> WeightTensor:
    index = op["inputs"][position]
    values = interpreter.get_tensor(index)
    bias_position = operator(op["op_name"]).bias
    bias_index = op["inputs"][bias_position] if bias_position is not None and len(op["inputs"]) > bias_position else -1
    return WeightTensor(
        op_index=op["index"],
        op_name=op["op_name"],
        tensor_name=details[index]["name"],
        dtype=np.dtype(details[index]["dtype"]).name,
        size=int(values.size),
        zeros=int(np.count_nonzero(values == 0)),
        bias_dtype=np.dtype(details[bias_index]["dtype"]).name if bias_index >= 0 else None,
        shape=tuple(int(d) for d in values.shape),
        values=values,
        tensor_index=int(index),
        output_name=details[op["outputs"][0]]["name"] if len(op["outputs"]) else "",
    )


def read_flatbuffer(model_content: bytes) -> FlatbufferSummary:
    """Operators, tensors, the I/O quantization, and every weight tensor with its int8 values."""
    interpreter = Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    every_op = ops_details(interpreter)
    produced = {int(i) for op in every_op for i in op["outputs"]}
    fed = {int(d["index"]) for d in interpreter.get_input_details()}
    constants = {index for index in details if index not in produced and index not in fed}
    ops, weights = [], []
    for op in every_op:
        ops.append(_op_info(op, details))
        weights += [_weight_tensor(interpreter, op, position, details) for position in _weight_positions(op, constants)]
    input_names, output_names = _signature_names(interpreter)
    return FlatbufferSummary(
        ops=tuple(ops),
        weights=tuple(weights),
        tensors=tuple(_tensor_info(index, t) for index, t in sorted(details.items())),
        inputs=tuple(_io_tensor(d, input_names) for d in interpreter.get_input_details()),
        outputs=tuple(_io_tensor(d, output_names) for d in interpreter.get_output_details()),
    )


def float_op_problems(summary: FlatbufferSummary, layer_names, limit: int = 5) -> list[str]:
    """One sentence per operator left in float (`OP (from layer 'x', float tensor 't')`), or the I/O dtypes."""
    problems = []
    for op in summary.float_ops[:limit]:
        layer = next((layer_of(t, layer_names) for t in op.tensor_names if layer_of(t, layer_names)), None)
        origin = f"from layer '{float_layer_name(layer)}'" if layer else "layer not identifiable from its tensor names"
        problems.append(f"{op.name} ({origin}, float tensor '{op.float_tensors[0]}')")
    if not problems:
        problems.append(f"input dtypes {summary.input_dtypes}, output dtypes {summary.output_dtypes}")
    return problems


def missing_in_tflm(summary: FlatbufferSummary, layer_names) -> list[str]:
    """One sentence per operator TensorFlow Lite Micro has no kernel for (`GELU (layer 'ffn_gelu')`), or []."""
    found: dict[str, list[str]] = {}
    for op in summary.ops:
        if not runs_in_tflm(op.name):
            layer = next((layer_of(t, layer_names) for t in op.tensor_names if layer_of(t, layer_names)), None)
            names = found.setdefault(op.name, [])
            if layer and float_layer_name(layer) not in names:
                names.append(float_layer_name(layer))
    return [f"{op}" + (f" (layer {', '.join(repr(n) for n in names)})" if names else "") for op, names in found.items()]


def name_segments(tensor_name: str) -> set[str]:
    """The path segments of a converter tensor name, without the model's name that leads each path
    ('model/quant_dense/MatMul;model/quant_dense/BiasAdd' -> {'quant_dense', 'MatMul', 'BiasAdd'}): a layer
    named like its model is then not found in every tensor."""
    found = set()
    for piece in tensor_name.split(";"):
        parts = piece.split("/")
        found.update(parts[1:] if len(parts) > 1 else parts)
    return found


def layer_of(tensor_name: str, layer_names) -> str | None:
    """The Keras layer a converter tensor name came from ('model/quant_dense/MatMul' -> 'quant_dense')."""
    segments = name_segments(tensor_name)
    matches = [name for name in layer_names if name in segments]
    return max(matches, key=len) if matches else None
