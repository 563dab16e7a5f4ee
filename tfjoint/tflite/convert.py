"""Model -> flatbuffer bytes, with TFLiteConverter: int8 (QAT or post-training) and float32.

A QAT model converts to full int8 from its trained ranges, with no
representative data. A float model needs a representative dataset and
`TFLITE_BUILTINS_INT8` for full-integer post-training quantization. Both get
int8 input and output tensors.

Every conversion goes through a SavedModel that holds only the model's
variables and one `serving_default` function (not `from_keras_model`, which
saves a traced function per layer): about 3x faster, and it works for layers
whose traces tf_keras cannot save (TF-MOT's Conv2DTranspose wrapper, for
which `from_keras_model` silently writes a file with no signature). The
file's inputs and outputs keep the Keras model's order and the user's names
(a prepared model's `quant_classes` output is `classes` in the file): the
converter sorts signature entries by name, so the subgraph's input and
output lists are put back in Keras order afterwards.
"""

import re
import struct
import tempfile
import warnings
from typing import Callable

import flatbuffers
import numpy as np

from tfjoint import errors
from tfjoint._capture import captured_output
from tfjoint._keras import tf
from tfjoint._litert import Interpreter
from tfjoint._names import float_layer_name, output_name
from tfjoint.registry import needs_static_batch, unwrapped
from tfjoint.registry.recurrent import unrolled
from tfjoint.tflite.relu6_scale import rescaled_relu6

__all__ = ["to_int8", "to_float32", "keras_names", "layers_named_in"]

def keras_names(model) -> tuple[list[str], list[str]]:
    """The model's input and output names as the file names them (the user's names, in Keras order)."""
    inputs = [t.name.split(":")[0] for t in model.inputs]
    return inputs, [output_name(name) for name in model.output_names]


def _without_locations(line: str) -> str:
    """An MLIR error line without its `loc(...)` parts (nested parentheses included) and `<unknown>:0:`."""
    out, index = [], 0
    while index < len(line):
        if line.startswith("loc(", index):
            depth, index = 0, index + 3
            while index < len(line):
                depth += {"(": 1, ")": -1}.get(line[index], 0)
                index += 1
                if depth == 0:
                    break
            continue
        out.append(line[index])
        index += 1
    text = re.sub(r"<unknown>:\d+:|^\S+:\d+:\d+:|error:", "", "".join(out))
    return re.sub(r"^[\s:]+", "", text).strip()


def layers_named_in(text: str, model) -> list:
    """The model's layers whose names appear as path segments in `text` (a converter error's MLIR locations)."""
    segments = {float_layer_name(part) for part in re.split(r"[/\"@;:\s\[\](),]+", text)}
    return [layer for layer in model.layers if float_layer_name(layer.name) in segments]


def _converter_error(error: Exception, model) -> errors.ExportError:
    """The converter's first error line, without its MLIR location, and the user's layers it names."""
    text = str(error)
    lines = [line for line in text.splitlines() if "error:" in line] or text.splitlines()[:1]
    message = _without_locations(lines[0]) if lines else type(error).__name__
    layers = layers_named_in(text, model)
    where = (" at layer " + ", ".join(f"'{float_layer_name(layer.name)}' ({type(unwrapped(layer)).__name__})"
                                      for layer in layers[:3])) if layers else ""
    return errors.ExportError(
        f"the TFLite converter failed on model '{model.name}'{where}: {message}. Replace or exclude that layer "
        "(with one TFLite runs in int8), or report the model."
    )


def _save_serving_function(model, directory: str) -> None:
    """A SavedModel holding only the model's variables and one `serving_default` function."""
    module = tf.Module()
    module.model_variables = list(model.variables)
    input_names, output_names = keras_names(model)
    batch = 1 if needs_static_batch(model) else None  # an LSTM converts to one fused operator only at a fixed batch
    specs = [tf.TensorSpec((batch,) + tuple(t.shape[1:]), t.dtype, name=name)
             for t, name in zip(model.inputs, input_names)]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return dict(zip(output_names, tf.nest.flatten(outputs)))

    module.serve = serve
    with unrolled(model):  # the converter quantizes no control flow: recurrent steps as operators
        serve.get_concrete_function()
        tf.saved_model.save(module, directory, signatures={"serving_default": serve})


# Field slots (vtable offsets) of the TFLite schema's tables, for the in-place edit below.
_MODEL_SUBGRAPHS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 8, 6, 8


def _rewrite_int_vector(buffer: bytearray, table: flatbuffers.table.Table, slot: int, values: list[int]) -> None:
    offset = table.Offset(slot)
    start = table.Vector(offset)
    if table.VectorLen(offset) != len(values):
        raise errors.ExportError("the converted file's subgraph has an unexpected number of inputs or outputs.")
    for position, value in enumerate(values):
        struct.pack_into("<i", buffer, start + 4 * position, int(value))


def _in_keras_order(content: bytes, model) -> bytes:
    """`content` with its subgraph inputs and outputs listed in the Keras model's order (same bytes otherwise)."""
    interpreter = Interpreter(model_content=content)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return content
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    by_name_in = {name: d["index"] for name, d in runner.get_input_details().items()}
    by_name_out = {name: d["index"] for name, d in runner.get_output_details().items()}
    input_names, output_names = keras_names(model)
    if sorted(by_name_in) != sorted(input_names) or sorted(by_name_out) != sorted(output_names):
        return content
    buffer = bytearray(content)
    root = flatbuffers.table.Table(buffer, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buffer, 0))
    subgraphs = root.Vector(root.Offset(_MODEL_SUBGRAPHS))
    subgraph = flatbuffers.table.Table(buffer, root.Indirect(subgraphs))
    _rewrite_int_vector(buffer, subgraph, _SUBGRAPH_INPUTS, [by_name_in[name] for name in input_names])
    _rewrite_int_vector(buffer, subgraph, _SUBGRAPH_OUTPUTS, [by_name_out[name] for name in output_names])
    return bytes(buffer)


def _convert(model, configure: Callable) -> bytes:
    """`model` through a configured TFLiteConverter, with a `serving_default` signature in Keras order.

    What the converter's C++ code prints to standard output is captured, not shown (its log lines go to
    stderr, as TensorFlow's do: TF_CPP_MIN_LOG_LEVEL quiets them).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        try:
            with tempfile.TemporaryDirectory() as directory, captured_output((1,)):
                _save_serving_function(model, directory)
                converter = tf.lite.TFLiteConverter.from_saved_model(directory)
                configure(converter)
                content = converter.convert()
        except Exception as error:  # the converter raises ConverterError and others
            raise _converter_error(error, model) from error
    return _in_keras_order(content, model)


def to_int8(model, representative: list[np.ndarray] | None = None) -> bytes:
    """A fully int8 flatbuffer of `model`.

    Args:
      model: a quantization-aware model (its ranges are used), or a float model
        with `representative` (full-integer post-training quantization).
      representative: calibration samples, one array per model input. With a
        quantization-aware model, they calibrate the layers QAT leaves float
        (an LSTM) in the same conversion; the fake-quantized ones keep their
        trained ranges.
    """
    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if representative is not None:
            names = keras_names(model)[0]

            def samples():  # by input name: the signature's inputs are sorted by name, not in Keras order
                for i in range(representative[0].shape[0]):
                    yield {name: array[i : i + 1] for name, array in zip(names, representative)}

            converter.representative_dataset = samples
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    return rescaled_relu6(_convert(model, configure))  # a standalone RELU6 computed alike in LiteRT and TFLM


def to_float32(model) -> bytes:
    """A plain float32 flatbuffer of `model`, for size, latency and error comparisons."""
    return _convert(model, lambda converter: None)
