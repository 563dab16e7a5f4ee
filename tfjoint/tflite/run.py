"""Run a converted file once in LiteRT's reference kernels, and measure how far it is from its Keras model.

The conversion check in `prepare` uses it: the quantization-aware model and
its int8 file should compute nearly the same thing (that is what fake
quantization is for); a layer the converter turns into integer operators QAT
did not simulate shows up as a low SQNR, before any training.
"""

from __future__ import annotations

import numpy as np

from tfjoint._litert import Interpreter, OpResolverType

__all__ = ["run_reference"]


def _quantized(values: np.ndarray, details: dict) -> np.ndarray:
    dtype = details["dtype"]
    scale, zero_point = details["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        values = np.clip(np.round(values / scale + zero_point), info.min, info.max)
    return values.astype(dtype)


def _dequantized(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if np.issubdtype(details["dtype"], np.integer) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


def run_reference(content: bytes, input_names: list[str], output_names: list[str],
                  inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The file's dequantized outputs (in `output_names` order) for `inputs`, one sample at a time."""
    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    runner = interpreter.get_signature_runner()
    in_details, out_details = runner.get_input_details(), runner.get_output_details()
    results: dict[str, list] = {name: [] for name in output_names}
    for sample in range(inputs[0].shape[0]):
        feed = {name: _quantized(array[sample:sample + 1], in_details[name])
                for name, array in zip(input_names, inputs)}
        outputs = runner(**feed)
        for name in output_names:
            results[name].append(_dequantized(outputs[name], out_details[name]))
    return [np.concatenate(results[name]) for name in output_names]
