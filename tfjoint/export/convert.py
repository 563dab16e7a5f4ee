"""Model -> flatbuffer bytes, with TFLiteConverter: int8 (QAT or post-training) and float32.

A QAT model converts to full int8 from its trained ranges, with no
representative data. A float model needs a representative dataset and
`TFLITE_BUILTINS_INT8` for full-integer post-training quantization. Both get
int8 input and output tensors.
"""

import tempfile
import warnings
from typing import Callable

import numpy as np
from tfjoint._litert import Interpreter

from tfjoint import errors
from tfjoint._keras import tf

__all__ = ["to_int8", "to_float32"]


def _converter_error(error: Exception, model) -> errors.ExportError:
    lines = [line for line in str(error).splitlines() if "error:" in line] or str(error).splitlines()[:1]
    return errors.ExportError(
        f"the TFLite converter failed on model '{model.name}': {lines[0].strip() if lines else type(error).__name__}. "
        "Check that every layer is one TFLite supports in int8 (exclude or replace the layer named above)."
    )


def _signature_count(content: bytes) -> int:
    return len(Interpreter(model_content=content).get_signature_list())


def _save_serving_function(model, directory: str) -> None:
    """A SavedModel holding only the model's variables and one `serving_default` function.

    `from_keras_model` saves the Keras model, with a traced function per
    layer. When a layer's trace cannot be saved (TF-MOT's Conv2DTranspose
    QAT wrapper hands its inner layer a transposed kernel tensor that tf_keras
    cannot capture), the converter silently falls back to a path that writes
    no signature, and the file then has no named inputs and outputs. Saving
    just the serving function avoids the layer traces.
    """
    module = tf.Module()
    module.model_variables = list(model.variables)
    specs = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return dict(zip(model.output_names, tf.nest.flatten(outputs)))

    module.serve = serve
    tf.saved_model.save(module, directory, signatures={"serving_default": serve})


def _convert(model, configure: Callable) -> bytes:
    """`model` through a configured TFLiteConverter, always with a `serving_default` signature."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure(converter)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        try:
            content = converter.convert()
            if _signature_count(content) == 0:
                with tempfile.TemporaryDirectory() as directory:
                    _save_serving_function(model, directory)
                    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
                    configure(converter)
                    content = converter.convert()
            return content
        except Exception as error:  # the converter raises ConverterError and others
            raise _converter_error(error, model) from error


def to_int8(model, representative: list[np.ndarray] | None = None) -> bytes:
    """A fully int8 flatbuffer of `model`.

    Args:
      model: a quantization-aware model (its ranges are used), or a float model
        with `representative` (full-integer post-training quantization).
      representative: calibration samples, one array per model input.
    """
    def configure(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if representative is not None:
            def samples():
                for i in range(representative[0].shape[0]):
                    yield [array[i : i + 1] for array in representative]

            converter.representative_dataset = samples
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    return _convert(model, configure)


def to_float32(model) -> bytes:
    """A plain float32 flatbuffer of `model`, for size, latency and error comparisons."""
    return _convert(model, lambda converter: None)
