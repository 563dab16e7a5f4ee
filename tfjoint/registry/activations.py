"""Activations as the int8 operators every runtime computes alike, fake-quantized where they quantize.

* `IntegerLeakyReLU`: `max(x, alpha * x)` (MUL, MAXIMUM). TFLite's int8
  `LEAKY_RELU` in its reference kernels, which TensorFlow Lite Micro runs,
  rounds negative outputs down instead of to the nearest value on about a
  quarter of them (measured: a -0.27 LSB bias at alpha 0.3, where XNNPACK's
  is -0.005), so a file that agreed with its Keras model in LiteRT lost
  several points of agreement in TFLM. The MUL and MAXIMUM form has a
  quantization point at each output, so QAT trains what the file rounds, and
  the runtimes agree.
* `SigmoidGelu`: GELU as `x * sigmoid(1.702 x)` (MUL, LOGISTIC, MUL), for
  TensorFlow Lite Micro, which has no GELU kernel. `prepare` puts it in the
  place of GELU when the file will run in TFLM (`Quantization.micro_substitute`),
  and QAT trains it: the file computes exactly what the model trained.
"""

from __future__ import annotations

from tfjoint._keras import keras, serializable, tf
from tfjoint.registry.points import PointsMixin

__all__ = ["UNQUANTIZABLE_ACTIVATION_ADVICE",
           "IntegerLeakyReLU", "SigmoidGelu", "GELU_SIGMOID_SCALE", "LEAKY_RELU_OPERATORS", "SIGMOID_GELU_OPERATORS"]

GELU_SIGMOID_SCALE = 1.702  # x * sigmoid(1.702 x) approximates x * Phi(x) within 0.02 everywhere
LEAKY_RELU_OPERATORS = ("MUL", "MAXIMUM")
SIGMOID_GELU_OPERATORS = ("MUL", "LOGISTIC", "MUL")


@serializable
class IntegerLeakyReLU(PointsMixin, keras.layers.Layer):
    """LeakyReLU as `max(x, alpha x)` (or `min` for alpha > 1), each operator fake-quantized.

    Args:
      alpha: the slope for negative inputs, >= 0.
    """

    STANDS_FOR = "LeakyReLU"  # the Keras class it replaces, for messages

    POINTS = (("scaled", "range"), ("output", "range"))

    def __init__(self, alpha: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        scaled = self.point("scaled", inputs * self.alpha)
        merged = tf.maximum(inputs, scaled) if self.alpha <= 1.0 else tf.minimum(inputs, scaled)
        return self.point("output", merged)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), alpha=self.alpha)


@serializable
class SigmoidGelu(PointsMixin, keras.layers.Layer):
    """GELU as `x * sigmoid(1.702 x)`, each operator fake-quantized (what TFLM runs for a GELU)."""

    POINTS = (("scaled", "range"), ("gate", "sigmoid"), ("output", "range"))

    def call(self, inputs):
        gate = self.point("gate", tf.sigmoid(self.point("scaled", inputs * GELU_SIGMOID_SCALE)))
        return self.point("output", inputs * gate)

    def compute_output_shape(self, input_shape):
        return input_shape


def leaky_relu_from_layer(layer) -> IntegerLeakyReLU | None:
    """The `IntegerLeakyReLU` of a Keras LeakyReLU (None for a negative slope, which max/min cannot express)."""
    alpha = float(getattr(layer, "alpha", getattr(layer, "negative_slope", 0.3)))
    return IntegerLeakyReLU(alpha, name=layer.name) if alpha >= 0 else None


def gelu_for_tflm(layer) -> SigmoidGelu:
    """The `SigmoidGelu` that stands for a GELU on TensorFlow Lite Micro."""
    return SigmoidGelu(name=layer.name)


# What a layer's `activation` string becomes as a layer of its own (the layer itself then linear): the Keras
# activations whose int8 operator is not what QAT simulates (leaky_relu), or that TFLM lacks (gelu, micro only).
ACTIVATION_LAYERS = {"leaky_relu": lambda name: IntegerLeakyReLU(0.2, name=name)}  # Keras's default slope there
MICRO_ACTIVATION_LAYERS = {"gelu": lambda name: SigmoidGelu(name=name)}

# What to use instead of an activation TF-MOT's 8-bit scheme cannot quantize (a message's end).
UNQUANTIZABLE_ACTIVATION_ADVICE = (
    "Use one it can (relu, relu6, swish, gelu, leaky_relu, sigmoid, tanh, softmax): for elu or selu, a "
    "keras.layers.LeakyReLU layer after the (linear) layer comes closest; then fine-tune the float model with it "
    "before preparing.")
