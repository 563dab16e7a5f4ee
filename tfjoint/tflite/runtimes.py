"""Run a .tflite flatbuffer where it will run: LiteRT (default or reference kernels) or TensorFlow Lite Micro.

Three runtimes, by name (`RUNTIMES`):

* "litert": LiteRT's default interpreter, with the XNNPACK delegate, as
  Android and Linux apps run it.
* "litert_reference": LiteRT's reference kernels (`OpResolverType.BUILTIN_REF`),
  the plain C++ arithmetic TFLM's kernels also implement.
* "tflm": the TensorFlow Lite Micro interpreter itself (`tflite-micro`), one
  sample at a time, as a microcontroller runs it.

Each is called alike: float arrays in, in Keras input order, dequantized
float arrays out.
"""

import time

import numpy as np

from tfjoint import errors
from tfjoint._keras import keras
from tfjoint._litert import Interpreter, OpResolverType
from tfjoint.tflite import tflm

__all__ = ["TFLiteModel", "RUNTIMES", "runtime_model", "check_runtimes"]

RUNTIMES = ("litert", "litert_reference", "tflm")
_KERNELS = {"default": None, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            "reference": OpResolverType.BUILTIN_REF}


class TFLiteModel:
    """A flatbuffer loaded in LiteRT, called with float arrays in Keras input order.

    Example:
      int8 = tfjoint.TFLiteModel(open("model.tflite", "rb").read(), ["image"], ["classes"])
      probabilities = int8.predict([x_val])[0]

    Int8 inputs are quantized and int8 outputs dequantized with the scales
    stored in the flatbuffer, so outputs compare directly with Keras'.

    Args:
      model_content: the flatbuffer bytes.
      input_names: Keras model input names, in Keras order.
      output_names: Keras model output names, in Keras order.
      num_threads: interpreter threads (1 for latency measurements).
      kernels: "default" (XNNPACK, as apps run it), "builtin" (LiteRT's
        optimized builtin kernels, no delegate) or "reference" (LiteRT's
        reference kernels, the arithmetic TFLM implements).
    """

    def __init__(self, model_content: bytes, input_names, output_names, num_threads: int | None = None,
                 kernels: str = "default"):
        if kernels not in _KERNELS:
            raise errors.ConfigError(f"`kernels` must be one of {list(_KERNELS)}; received {kernels!r}.")
        self._model_content = model_content
        self._num_threads = num_threads
        self._kernels = kernels
        self._runner = self._interpreter(num_threads).get_signature_runner()
        self._input_details = self._runner.get_input_details()
        self._output_details = self._runner.get_output_details()
        self.input_names = self._match(list(input_names), list(self._input_details), "input")
        self.output_names = self._match(list(output_names), list(self._output_details), "output")

    def _interpreter(self, num_threads):
        resolver = _KERNELS[self._kernels]
        if resolver is None:
            return Interpreter(model_content=self._model_content, num_threads=num_threads)
        return Interpreter(model_content=self._model_content, num_threads=num_threads,
                           experimental_op_resolver_type=resolver)

    @staticmethod
    def _match(keras_names, tflite_names, kind):
        if sorted(keras_names) == sorted(tflite_names):
            return keras_names
        if len(keras_names) == len(tflite_names) == 1:
            return tflite_names
        raise errors.ExportError(f"cannot match the Keras {kind}s {keras_names} to the flatbuffer's signature "
                                 f"{kind}s {tflite_names}.")

    def _quantize(self, name, values):
        details = self._input_details[name]
        dtype = details["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = details["quantization"]
            if scale:
                info = np.iinfo(dtype)
                values = np.clip(np.round(values / scale + zero_point), info.min, info.max)
        return values.astype(dtype)

    def _dequantize(self, name, values):
        details = self._output_details[name]
        if np.issubdtype(details["dtype"], np.integer) and details["quantization"][0]:
            scale, zero_point = details["quantization"]
            return (values.astype(np.float32) - zero_point) * scale
        return values.astype(np.float32)

    def predict(self, inputs: list[np.ndarray], batch_size: int = 64, verbose: bool = False) -> list[np.ndarray]:
        """Outputs (dequantized, float32) for every sample, one array per Keras output."""
        total = inputs[0].shape[0]
        fixed = {d["shape_signature"][0] for d in self._input_details.values() if d["shape_signature"][0] > 0}
        if fixed:  # converted with a fixed batch size: feed exactly that, padding the last batch
            batch_size = min(fixed)
        progress = keras.utils.Progbar(total, unit_name="sample") if verbose else None
        results: dict[str, list] = {name: [] for name in self.output_names}
        for start in range(0, total, batch_size):
            chunks = [array[start : start + batch_size] for array in inputs]
            count = chunks[0].shape[0]
            if fixed and count < batch_size:
                chunks = [np.concatenate([c, np.zeros((batch_size - count,) + c.shape[1:], c.dtype)]) for c in chunks]
            outputs = self._runner(**{name: self._quantize(name, c) for name, c in zip(self.input_names, chunks)})
            for name in self.output_names:
                results[name].append(self._dequantize(name, outputs[name])[:count])
            if progress is not None:
                progress.update(min(start + batch_size, total))
        return [np.concatenate(results[name]) for name in self.output_names]

    def median_latency_s(self, runs: int = 50, warmup: int = 5, num_threads: int | None = None) -> float:
        """Median wall time of one single-sample `invoke()` (input values do not matter).

        Args:
          num_threads: interpreter threads for this measurement (default: the
            model's own setting).
        """
        interpreter = self._interpreter(self._num_threads if num_threads is None else num_threads)
        interpreter.allocate_tensors()
        for details in interpreter.get_input_details():
            interpreter.set_tensor(details["index"], np.zeros(details["shape"], details["dtype"]))
        for _ in range(warmup):
            interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        return float(np.median(times))


def check_runtimes(runtimes, argument: str = "runtimes") -> tuple[str, ...]:
    """`runtimes` as a tuple of known names; a ConfigError names an unknown one, or TFLM if it is not installed."""
    if isinstance(runtimes, str):
        runtimes = (runtimes,)
    try:
        names = tuple(runtimes)
    except TypeError:
        raise errors.ConfigError(f"`{argument}` must be a list of runtime names from {list(RUNTIMES)}; received "
                                 f"{runtimes!r}.") from None
    unknown = [name for name in names if name not in RUNTIMES]
    if unknown or not names:
        raise errors.ConfigError(f"`{argument}` must name runtimes from {list(RUNTIMES)}; received {list(names)}.")
    if "tflm" in names:
        tflm.require_tflm(argument)
    return tuple(dict.fromkeys(names))


def runtime_model(runtime: str, content: bytes, summary, input_names, output_names, arena_bytes: int | None = None,
                  alt_decompression_bytes: int = 0):
    """The file in `runtime`, called with Keras-ordered inputs; outputs in Keras order.

    `summary` (the file read back) maps the Keras names to the file's input
    and output positions, which TFLM addresses by position (a LUT-compressed
    file keeps the inputs and outputs of the file it was made from, whose
    summary is passed). `alt_decompression_bytes`: TFLM's buffer for DECODE's
    outputs.
    """
    if runtime == "tflm":
        by_name = {t.signature_name: position for position, t in enumerate(summary.inputs)}
        out_by_name = {t.signature_name: position for position, t in enumerate(summary.outputs)}
        input_order = _file_order(list(input_names), by_name, "input")
        output_order = _file_order(list(output_names), out_by_name, "output")
        model = tflm.TFLMModel(content, [input_names[i] for i in input_order],
                               [output_names[i] for i in output_order], arena_bytes, alt_decompression_bytes)
        return _Reordered(model, input_order, output_order, list(input_names), list(output_names))
    return TFLiteModel(content, input_names, output_names, kernels="reference" if runtime == "litert_reference"
                       else "default")


def _file_order(keras_names: list[str], file_positions: dict, kind: str) -> list[int]:
    """For each position in the file, the index of the Keras name there."""
    if len(keras_names) == 1:
        return [0]
    if set(keras_names) <= set(file_positions):
        return sorted(range(len(keras_names)), key=lambda i: file_positions[keras_names[i]])
    raise errors.ExportError(f"cannot match the Keras {kind}s {keras_names} to the file's {kind}s "
                             f"{sorted(k for k in file_positions if k)}.")


class _Reordered:
    """A runtime model addressed in file order, presented in Keras order."""

    def __init__(self, model, input_order, output_order, input_names, output_names):
        self._model, self._input_order, self._output_order = model, input_order, output_order
        self.input_names, self.output_names = input_names, output_names

    def predict(self, inputs: list[np.ndarray], batch_size: int = 1, verbose: bool = False) -> list[np.ndarray]:
        outputs = self._model.predict([inputs[i] for i in self._input_order], batch_size, verbose)
        keras_ordered: list = [None] * len(outputs)
        for file_position, keras_index in enumerate(self._output_order):
            keras_ordered[keras_index] = outputs[file_position]
        return keras_ordered
