"""TF-MOT quantize configs that registry entries use and TF-MOT does not have.

* `CellWeightsConfig`: for an LSTM, whose int8 ranges the converter
  calibrates (TFLite's integer LSTM keeps a 16-bit cell state that QAT does not
  model): no fake quantization, but its cell's kernels handed to the quantize
  wrapper through `PassThroughQuantizer`, so that tfjoint's pruning quantizer
  can prune them like any kernel.
* `OutputUnlessIntegerConfig`: the output fake-quantized, unless the layer
  computes integers (positions built with `zeros_like(ids) + arange`).
"""

import tensorflow_model_optimization as tfmot

from tfjoint._keras import serializable
from tfjoint._tfmot import EqualByConfig

__all__ = ["PassThroughQuantizer", "CellWeightsConfig", "OutputUnlessIntegerConfig"]


@serializable
class PassThroughQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """A quantizer that returns its input: the weight stays float (the converter quantizes it)."""

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return inputs

    def get_config(self):
        return {}

    def __eq__(self, other):
        return type(other) is type(self)

    def __ne__(self, other):
        return not self.__eq__(other)


@serializable
class CellWeightsConfig(tfmot.quantization.keras.QuantizeConfig):
    """The weights of an RNN layer's cell (`layer.cell.<name>`), passed through unquantized; nothing else.

    Args:
      weight_attrs: the cell's weights handed to the wrapper (e.g. kernel, recurrent_kernel).
    """

    def __init__(self, weight_attrs=("kernel", "recurrent_kernel")):
        self.weight_attrs = list(weight_attrs)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer.cell, name), PassThroughQuantizer()) for name in self.weight_attrs]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        for name, value in zip(self.weight_attrs, quantize_weights):
            setattr(layer.cell, name, value)

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"weight_attrs": list(self.weight_attrs)}

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)


@serializable
class OutputUnlessIntegerConfig(EqualByConfig, tfmot.quantization.keras.QuantizeConfig):
    """Fake-quantize the layer's output, unless the layer computes integers (`layer.integer`: positions, ids)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        if getattr(layer, "integer", False):
            return []
        return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False,
                                                                           symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}
