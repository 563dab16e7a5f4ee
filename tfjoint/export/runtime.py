"""Run a .tflite flatbuffer in the LiteRT interpreter: batched predictions and latency."""

import time

import numpy as np
from tfjoint._litert import Interpreter

from tfjoint._keras import keras

__all__ = ["TFLiteModel"]


class TFLiteModel:
    """A flatbuffer loaded in LiteRT, called with float arrays in Keras input order.

    Example:
      int8 = tfjoint.TFLiteModel(open("model.tflite", "rb").read(), ["image"], ["quant_classes"])
      probabilities = int8.predict([x_val])[0]

    Int8 inputs are quantized and int8 outputs dequantized with the scales
    stored in the flatbuffer, so outputs compare directly with Keras'.

    Args:
      model_content: the flatbuffer bytes.
      input_names: Keras model input names, in Keras order.
      output_names: Keras model output layer names, in Keras order.
      num_threads: interpreter threads (1 for latency measurements).
    """

    def __init__(self, model_content: bytes, input_names, output_names, num_threads: int | None = None):
        self._model_content = model_content
        self._num_threads = num_threads
        self._runner = Interpreter(model_content=model_content, num_threads=num_threads).get_signature_runner()
        self._input_details = self._runner.get_input_details()
        self._output_details = self._runner.get_output_details()
        self.input_names = self._match(list(input_names), list(self._input_details), "input")
        self.output_names = self._match(list(output_names), list(self._output_details), "output")

    @staticmethod
    def _match(keras_names, tflite_names, kind):
        if sorted(keras_names) == sorted(tflite_names):
            return keras_names
        if len(keras_names) == len(tflite_names) == 1:
            return tflite_names
        raise ValueError(f"cannot match the Keras {kind}s {keras_names} to the flatbuffer's {tflite_names}.")

    def _quantize(self, name, values):
        details = self._input_details[name]
        dtype = details["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = details["quantization"]
            info = np.iinfo(dtype)
            values = np.clip(np.round(values / scale + zero_point), info.min, info.max)
        return values.astype(dtype)

    def _dequantize(self, name, values):
        details = self._output_details[name]
        if np.issubdtype(details["dtype"], np.integer):
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
        results = {name: [] for name in self.output_names}
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
        threads = self._num_threads if num_threads is None else num_threads
        interpreter = Interpreter(model_content=self._model_content, num_threads=threads)
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
