"""A standalone int8 RELU6 computed alike in LiteRT and TensorFlow Lite Micro.

TFLM's int8 RELU6 kernel clamps its input between the input's zero point and
6 on the input's scale, and writes that as the output: it assumes the output
tensor has the input's scale and zero point (`activations_common.cc`).
LiteRT's kernel rescales to the output's. Where the converter fuses the
activation into the operator before it (a convolution, a Dense, an ADD) the
two agree; after an operator that cannot fuse it (MAXIMUM, CONCATENATION,
...), quantization-aware training gives the RELU6 its own output range, and
TFLM then computes something else (measured: 4–13 dB SQNR against LiteRT's
reference kernels).

`rescaled_relu6` rewrites each such RELU6 as RELU6 on its input's scale
followed by a QUANTIZE (int8 to int8) to the output's: what QAT trained (a
clamp of an int8 value, then the output's fake quantization), and what both
runtimes compute the same way.
"""

from __future__ import annotations

import copy

import flatbuffers

__all__ = ["rescaled_relu6"]

_FILE_IDENTIFIER = b"TFL3"


def _code(operator_code) -> int:
    return max(operator_code.builtinCode, operator_code.deprecatedBuiltinCode)


def _same_quantization(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return (list(a.scale if a.scale is not None else []) == list(b.scale if b.scale is not None else [])
            and list(a.zeroPoint if a.zeroPoint is not None else []) ==
            list(b.zeroPoint if b.zeroPoint is not None else []))


def _opcode_index(model, schema, builtin: int, version: int) -> int:
    for index, operator_code in enumerate(model.operatorCodes):
        if _code(operator_code) == builtin:
            return index
    operator_code = schema.OperatorCodeT()
    operator_code.builtinCode = builtin
    operator_code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    operator_code.version = version
    model.operatorCodes.append(operator_code)
    return len(model.operatorCodes) - 1


def rescaled_relu6(content: bytes) -> bytes:
    """`content` with every int8 RELU6 whose output is quantized unlike its input followed by a requantizing
    QUANTIZE instead (the RELU6 then writes on its input's scale); the same bytes where there is none."""
    from tensorflow.lite.python import schema_py_generated as schema

    packed = schema.Model.GetRootAs(content, 0)  # read in place: most files have no RELU6 operator at all
    relu6 = {i for i in range(packed.OperatorCodesLength())
             if _code(schema.OperatorCodeT.InitFromObj(packed.OperatorCodes(i))) == schema.BuiltinOperator.RELU6}
    if not relu6:
        return content
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    changed = False
    for graph in model.subgraphs or []:
        operators = []
        for operator in graph.operators or []:
            operators.append(operator)
            if operator.opcodeIndex not in relu6:
                continue
            source, target = graph.tensors[operator.inputs[0]], graph.tensors[operator.outputs[0]]
            if source.type != schema.TensorType.INT8 or _same_quantization(source.quantization, target.quantization):
                continue
            on_input_scale = copy.deepcopy(target)
            on_input_scale.quantization = copy.deepcopy(source.quantization)
            on_input_scale.name = (target.name or b"relu6") + b"_on_input_scale"
            model.buffers.append(schema.BufferT())
            on_input_scale.buffer = len(model.buffers) - 1
            graph.tensors.append(on_input_scale)
            requantize = schema.OperatorT()
            requantize.opcodeIndex = _opcode_index(model, schema, schema.BuiltinOperator.QUANTIZE, 2)
            requantize.inputs = [len(graph.tensors) - 1]
            requantize.outputs = [operator.outputs[0]]
            operator.outputs = [len(graph.tensors) - 1]
            operators.append(requantize)
            changed = True
        graph.operators = operators
    if not changed:
        return content
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())
