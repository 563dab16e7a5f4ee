"""A weight operator split into groups of output channels, joined again by CONCATENATION: the same results.

TFLM's DECODE rebuilds a LUT-compressed tensor whole, in RAM, just before its
operator: the largest compressed tensor sets the decode buffer. Split into
`k` groups of output channels, a FULLY_CONNECTED or CONV_2D becomes `k`
operators of the same kind, each with its rows of the weights and the bias
(and their per-channel scales), writing its channels on the output's
quantization, and one CONCATENATION along the channel axis joins them into
the original output tensor. Every output channel is computed exactly as
before (the same weights, bias, scales and requantization; CONCATENATION of
tensors on the output's own scale copies bytes), so the file computes the
same; each group decodes on its own, and the buffer is the largest group's.

Edited with TFLM's own flatbuffer editor (`tflite_micro...model_editor`).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from tfjoint import errors

__all__ = ["SPLITTABLE_OPS", "WeightSplit", "split_output_channels", "splittable"]

SPLITTABLE_OPS = ("FULLY_CONNECTED", "CONV_2D")


@dataclasses.dataclass(frozen=True)
class WeightSplit:
    """One weight tensor to split: its index in the file and the number of output-channel groups."""

    tensor_index: int
    groups: int


def _editor():
    try:
        from tflite_micro.tensorflow.lite.micro.compression import model_editor
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    except ImportError as error:
        raise errors.ConfigError(f"splitting weights needs TensorFlow Lite Micro's tooling ({error}): pip install "
                                 "\"tfjoint[micro]\".") from error
    return model_editor, schema


def splittable(operator, weight) -> bool:
    """Whether `operator` (model_editor) can be split along its weight `weight`'s output channels: a
    FULLY_CONNECTED or CONV_2D whose weight is its input 1, quantized per tensor or along axis 0."""
    axis = getattr(weight.quantization, "axis", None) if weight.quantization is not None else None
    return (operator.opcode_name in SPLITTABLE_OPS and len(operator.inputs) >= 2 and operator.inputs[1] is weight
            and len(operator.outputs) == 1 and axis in (None, 0) and weight.shape and weight.shape[0] > 1)


def _group_name(name: str | None, number: int) -> str:
    """A short name for a group's tensor: the first of the converter's ';'-joined names (the layer's path stays
    in it), and the group number. Each name is stored in the file: long ones cost flash."""
    return f"{(name or 'weights').split(';')[0]}/g{number}"


def _groups_of(tensor, groups: list[np.ndarray], editor, model) -> list:
    """`tensor` cut into `groups` of rows of its first axis (with their per-channel scales), each with a buffer of
    its own in `model`; the first group is `tensor` itself, changed in place (so the file keeps no copy of the
    whole tensor, and its index and name stay)."""
    values, quantization = np.array(tensor.array), tensor.quantization
    per_channel = quantization is not None and quantization.axis == 0 and len(quantization.scales) > 1
    parts = []
    for number, rows in enumerate(groups):
        part = tensor if number == 0 else tensor.copy(name=_group_name(tensor.name, number))
        part.shape = values[rows].shape
        part.buffer = editor.Buffer(data=np.ascontiguousarray(values[rows]).tobytes())
        model.buffers.append(part.buffer)
        if per_channel:
            zeros = list(quantization.zero_points)
            part.quantization = editor.Quantization(
                scales=[quantization.scales[i] for i in rows],
                zero_points=[zeros[i] if len(zeros) > 1 else zeros[0] for i in rows], axis=0)
        parts.append(part)
    return parts


MAX_CONCAT_INPUTS = 10  # TFLM's CONCATENATION takes at most 10 inputs (kMaxInputNum)


def _joined(parts: list, output, editor, schema) -> list:
    """CONCATENATION operators joining `parts` (channel groups, in order) into `output` along its last axis: one,
    or a tree of them, none with more than `MAX_CONCAT_INPUTS` inputs."""

    def concatenation(inputs, into):
        options = schema.ConcatenationOptionsT()
        options.axis = len(into.shape) - 1
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
        fb = schema.OperatorT()
        fb.builtinOptionsType, fb.builtinOptions = schema.BuiltinOptions.ConcatenationOptions, options
        return editor.Operator(opcode=schema.BuiltinOperator.CONCATENATION, inputs=inputs, outputs=[into], _fb=fb)

    operators, level = [], 0
    while len(parts) > MAX_CONCAT_INPUTS:
        level += 1
        merged = []
        for number, start in enumerate(range(0, len(parts), MAX_CONCAT_INPUTS)):
            chunk = parts[start:start + MAX_CONCAT_INPUTS]
            if len(chunk) == 1:
                merged.append(chunk[0])
                continue
            into = output.copy(name=f"{(output.name or 'output').split(';')[0]}/j{level}_{number}")
            into.buffer = None
            into.shape = tuple(output.shape[:-1]) + (sum(int(t.shape[-1]) for t in chunk),)
            operators.append(concatenation(chunk, into))
            merged.append(into)
        parts = merged
    return operators + [concatenation(parts, output)]


def split_output_channels(content: bytes, splits: list[WeightSplit]) -> bytes:
    """`content` with each named weight's operator split into its groups of output channels (see the module).

    Raises:
      errors.ExportError: a tensor that is not the weight of exactly one
        splittable operator.
    """
    editor, schema = _editor()
    model = editor.read(content)
    graph = model.subgraphs[0]
    # Each operator's builtin options (padding, strides, fused activation), read from the file as it is.
    parsed = schema.ModelT.InitFromPackedBuf(content, 0).subgraphs[0].operators
    options_of = {id(operator): parsed[position] for position, operator in enumerate(graph.operators)}

    def same_options(operator):
        source, fb = options_of[id(operator)], schema.OperatorT()
        fb.builtinOptionsType, fb.builtinOptions = source.builtinOptionsType, copy.deepcopy(source.builtinOptions)
        return fb

    for split in splits:
        weight = graph.tensors[split.tensor_index]
        users = graph.consumers_of(weight)
        if len(users) != 1 or not splittable(users[0], weight):
            raise errors.ExportError(f"tensor '{weight.name}' cannot be split into groups of output channels: it is "
                                     "not the weights of one FULLY_CONNECTED or CONV_2D operator.")
        operator = users[0]
        bias = operator.inputs[2] if len(operator.inputs) > 2 else None
        output = operator.outputs[0]
        groups = np.array_split(np.arange(weight.shape[0]), max(1, min(split.groups, weight.shape[0])))
        weights = _groups_of(weight, groups, editor, model)
        biases = _groups_of(bias, groups, editor, model) if bias is not None else [None] * len(groups)
        parts, outputs = [], []
        for number, rows in enumerate(groups):
            part_output = output.copy(name=_group_name(output.name, number))
            part_output.buffer = None
            part_output.shape = tuple(output.shape[:-1]) + (len(rows),)
            inputs = [operator.inputs[0], weights[number]] + ([biases[number]] if bias is not None else [])
            inputs += list(operator.inputs[3:])
            parts.append(editor.Operator(opcode=operator.opcode, inputs=inputs, outputs=[part_output],
                                         _fb=same_options(operator)))
            outputs.append(part_output)
        joins = _joined(outputs, output, editor, schema)
        position = graph.operators.index(operator)
        graph.operators[position:position + 1] = parts + joins
        for tensor in [t for op in parts + joins for t in op.inputs[1:] + op.outputs if t is not None]:
            if tensor not in graph.tensors:
                graph.tensors.append(tensor)
    for tensor in graph.tensors:  # the converter gives activations empty buffers of their own: keep them bufferless
        if tensor.buffer is not None and not tensor.buffer.data:
            tensor.buffer = None
    editor.prune_buffers(model)
    return bytes(model.build())
