"""Keras layers tfjoint itself puts into models: the shape-only `ExpandDims` and `Squeeze`.

The layout rewrites insert them around layers they run as Conv2D.
`keras.layers.Reshape` with an unknown batch dimension converts to SHAPE,
STRIDED_SLICE and PACK operators around every RESHAPE; these convert to a
single EXPAND_DIMS / SQUEEZE, as the converter's own Conv1D lowering does.
They change no values, so they are not quantized (their registry entries, in
`tfjoint.registry.builtin`, say so).
"""

from tfjoint._keras import keras, serializable, tf

__all__ = ["ExpandDims", "Squeeze"]


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
