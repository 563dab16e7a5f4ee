"""Model -> flatbuffer bytes, with TFLiteConverter: int8 (QAT or post-training) and float32.

A QAT model converts to full int8 from its trained ranges, with no
representative data. A float model needs a representative dataset and
`TFLITE_BUILTINS_INT8` for full-integer post-training quantization. Both get
int8 input and output tensors.
"""

import warnings

import numpy as np

from tfjoint import errors
from tfjoint._keras import tf

__all__ = ["to_int8", "to_float32"]


def _converter_error(error: Exception, model) -> errors.ExportError:
    lines = [line for line in str(error).splitlines() if "error:" in line] or str(error).splitlines()[:1]
    return errors.ExportError(
        f"the TFLite converter failed on model '{model.name}': {lines[0].strip() if lines else type(error).__name__}. "
        "Check that every layer is one TFLite supports in int8 (exclude or replace the layer named above)."
    )


def to_int8(model, representative: list[np.ndarray] | None = None) -> bytes:
    """A fully int8 flatbuffer of `model`.

    Args:
      model: a quantization-aware model (its ranges are used), or a float model
        with `representative` (full-integer post-training quantization).
      representative: calibration samples, one array per model input.
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if representative is not None:
        def samples():
            for i in range(representative[0].shape[0]):
                yield [array[i : i + 1] for array in representative]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        try:
            return converter.convert()
        except Exception as error:  # the converter raises ConverterError and others
            raise _converter_error(error, model) from error


def to_float32(model) -> bytes:
    """A plain float32 flatbuffer of `model`, for size, latency and error comparisons."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    try:
        return converter.convert()
    except Exception as error:
        raise _converter_error(error, model) from error
