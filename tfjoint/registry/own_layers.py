"""Keras layers tfjoint itself puts into models.

* `ExpandDims` and `Squeeze`: shape only. The layout rewrites insert them
  around layers they run as Conv2D.
`keras.layers.Reshape` with an unknown batch dimension converts to SHAPE,
STRIDED_SLICE and PACK operators around every RESHAPE; these convert to a
single EXPAND_DIMS / SQUEEZE, as the converter's own Conv1D lowering does.
They change no values, so they are not quantized (their registry entries, in
`tfjoint.registry.builtin`, say so).
* `Affine` and `HardSwish`: what the Keras 3 bridge rebuilds Keras 3's raw
  arithmetic and `hard_silu` activation as.
* `Keras3Layer`: a Keras 3 layer of the user's (registered with
  `tfjoint.register_layer`), run inside the tf_keras model on TensorFlow.
* `FixedRange`, `TimeSlice` and `TimeConcat`: what a streaming file's step model
  adds around the user's layers (a state on its trained int8 range, the frames
  a ring buffer keeps, the buffer joined to the new frames).
"""

import numpy as np

from tfjoint._keras import keras, serializable, tf

__all__ = ["ExpandDims", "RepeatSteps", "Squeeze", "DilatedConv2D", "CausalPadding", "Affine", "HardSwish",
           "Keras3Layer", "FixedRange", "TimeSlice", "TimeConcat"]


def _axes(axes) -> tuple[int, ...]:
    return tuple(int(a) for a in (axes if isinstance(axes, (list, tuple)) else [axes]))


@serializable
class ExpandDims(keras.layers.Layer):
    """Inserts unit axes at `axes` (positive, counted in the output)."""

    def __init__(self, axes, **kwargs):
        super().__init__(**kwargs)
        self.axes = _axes(axes)

    def call(self, inputs):
        for axis in sorted(self.axes):
            inputs = tf.expand_dims(inputs, axis)
        return inputs

    def compute_output_shape(self, input_shape):
        shape = list(tf.TensorShape(input_shape).as_list())
        for axis in sorted(self.axes):
            shape.insert(axis, 1)
        return tf.TensorShape(shape)

    def get_config(self):
        return dict(super().get_config(), axes=list(self.axes))


@serializable
class RepeatSteps(keras.layers.Layer):
    """Keras's RepeatVector as the operators TFLM has: the vector, a unit time axis added, concatenated to `n`
    steps (EXPAND_DIMS, CONCATENATION; RepeatVector's TILE has no TFLM kernel). The values only move: int8 keeps
    them."""

    STANDS_FOR = "RepeatVector"  # the Keras class it replaces, for messages

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = int(n)

    def call(self, inputs):
        # Doubling, then the powers of two n is made of: TFLM's CONCATENATION takes at most 10 inputs.
        power, pieces, left = tf.expand_dims(inputs, 1), [], self.n
        while left:
            if left & 1:
                pieces.append(power)
            left >>= 1
            if left:
                power = tf.concat([power, power], axis=1)
        return pieces[0] if len(pieces) == 1 else tf.concat(pieces, axis=1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([shape[0], self.n] + shape[1:])

    def get_config(self):
        return dict(super().get_config(), n=self.n)


@serializable
class Squeeze(keras.layers.Layer):
    """Removes the unit axes at `axes` (positive, counted in the input)."""

    def __init__(self, axes, **kwargs):
        super().__init__(**kwargs)
        self.axes = _axes(axes)

    def call(self, inputs):
        return tf.squeeze(inputs, axis=list(self.axes))

    def compute_output_shape(self, input_shape):
        shape = list(tf.TensorShape(input_shape).as_list())
        return tf.TensorShape([d for i, d in enumerate(shape) if i not in self.axes])

    def get_config(self):
        return dict(super().get_config(), axes=list(self.axes))


def _number_or_list(value):
    """A JSON-friendly constant: a float, or a list of floats (one per channel)."""
    array = np.asarray(value, np.float32)
    return float(array) if array.ndim == 0 else [float(v) for v in array.reshape(-1)]


@serializable
class Affine(keras.layers.Layer):
    """`y = x * scale + offset`, with constants: numbers, or one per channel (the last axis).

    The Keras 3 bridge rebuilds raw `keras.ops` arithmetic with a constant
    (`x + 3.0`, `x * (1 / 6)`) and per-channel scales (ConvNeXt's
    `LayerScale`) as this layer; `tfjoint.prepare` then runs it as an exact
    int8 1x1 DepthwiseConv2D (the "affine_as_depthwise" rewrite).
    """

    def __init__(self, scale=1.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _number_or_list(scale)
        self.offset = _number_or_list(offset)

    def call(self, inputs):
        return inputs * tf.constant(self.scale, inputs.dtype) + tf.constant(self.offset, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), scale=self.scale, offset=self.offset)


@serializable
class DilatedConv2D(keras.layers.Conv2D):
    """A Conv2D whose dilation is the convolution's own attribute (one TensorFlow Conv2D op), not Keras's
    SPACE_TO_BATCH_ND, CONV_2D, BATCH_TO_SPACE_ND: the converter fuses those back into a dilated CONV_2D only
    when nothing stands between them, and QAT's fake quantization does, so the file kept them float. TFLite's
    and TFLM's CONV_2D take dilation factors."""

    def convolution_op(self, inputs, kernel):
        return tf.nn.conv2d(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                            dilations=list(self.dilation_rate), data_format=self._tf_data_format,
                            name=type(self).__name__)


@serializable
class CausalPadding(keras.layers.ZeroPadding2D):
    """The zeros a causal Conv1D puts before its sequence, where the rewrite runs it as a padded valid Conv2D (a
    dilated one: `DilatedConv2D`). A streaming file keeps those frames in the convolution's ring buffer instead,
    so its step model leaves this layer out."""


@serializable
class HardSwish(keras.layers.Layer):
    """`x * relu6(x + 3) / 6`: Keras 3's `hard_silu` / `hard_swish` activation, which tf_keras lacks.

    The converter turns it into TFLite's int8 HARD_SWISH operator.
    """

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@serializable
class Keras3Layer(keras.layers.Layer):
    """A Keras 3 layer (`import keras`) inside a tf_keras model: it runs on TensorFlow, its variables are this layer's.

    The Keras 3 bridge hosts a user's Keras 3 layer in one when the layer's
    class has a tfjoint registry entry (`tfjoint.register_layer(MyLayer,
    ...)`); the entry then says how it is quantized and how channels follow
    it, as for any layer. Its weights train with the model; they are not
    pruned or fake-quantized one by one (register a tf_keras twin for that).

    Args:
      layer: the Keras 3 layer, or its `keras.saving.serialize_keras_object`
        form (the class registered with
        `keras.saving.register_keras_serializable`).
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        import keras as keras3

        self.keras3_layer = keras3.saving.deserialize_keras_object(layer) if isinstance(layer, dict) else layer

    def build(self, input_shape):
        if not self.keras3_layer.built:
            self.keras3_layer.build(tuple(tf.TensorShape(input_shape).as_list()))
        super().build(input_shape)

    @property
    def trainable_weights(self):
        return [v.value for v in self.keras3_layer.trainable_weights] if self.trainable else []

    @property
    def non_trainable_weights(self):
        frozen = [] if self.trainable else [v.value for v in self.keras3_layer.trainable_weights]
        return [v.value for v in self.keras3_layer.non_trainable_weights] + frozen

    @property
    def weights(self):
        return self.trainable_weights + self.non_trainable_weights

    def call(self, inputs):
        return self.keras3_layer(inputs)

    def compute_output_shape(self, input_shape):
        try:
            shape = self.keras3_layer.compute_output_shape(tuple(tf.TensorShape(input_shape).as_list()))
        except NotImplementedError:  # a Keras 3 layer need not say: tf_keras traces `call` for it
            return super().compute_output_shape(input_shape)
        return tf.TensorShape(shape)

    def get_config(self):
        import keras as keras3

        return dict(super().get_config(), layer=keras3.saving.serialize_keras_object(self.keras3_layer))



@serializable
class FixedRange(keras.layers.Layer):
    """Fake quantization on a fixed int8 range: a streaming state on the range QAT trained for what it holds
    (the converter gives the file's tensor that scale); without a range, the identity."""

    def __init__(self, low: float | None = None, high: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def call(self, inputs):
        if self.low is None or self.high is None:
            return tf.identity(inputs)
        return tf.quantization.fake_quant_with_min_max_args(inputs, self.low, self.high, num_bits=8)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), low=self.low, high=self.high)


@serializable
class TimeSlice(keras.layers.Layer):
    """Frames `start:stop` along axis 1 (the time axis)."""

    def __init__(self, start: int | None = None, stop: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.start = None if start is None else int(start)
        self.stop = None if stop is None else int(stop)

    def call(self, inputs):
        return inputs[:, self.start:self.stop]

    def get_config(self):
        return dict(super().get_config(), start=self.start, stop=self.stop)


@serializable
class TimeConcat(keras.layers.Layer):
    """Its inputs joined along axis 1 (the time axis)."""

    def call(self, inputs):
        return tf.concat(list(inputs), axis=1)
