"""Keras 3's raw `keras.ops` calls in a Functional model, as the tf_keras layers the Keras 3 bridge rebuilds them with.

keras.io writes transformers functionally with `keras.ops`: `reshape` and
`transpose` to split heads, `matmul` and `softmax` for attention,
`zeros_like(tokens) + arange(steps)` for positions, `expand_dims`, slicing,
arithmetic with constants. Each such op is a node of the Keras 3 graph;
`KERAS3_OPS` says, per op class, which tf_keras layer replays it:

* `Reshape` (batch kept) -> `Reshape`; `Transpose` (batch first) -> `Permute`;
* `Matmul` of two tensors -> `MatMul` (int8 BATCH_MATMUL);
* `Softmax` -> `Softmax`; `ExpandDims` -> `ExpandDims`;
* `ZerosLike` / `OnesLike` -> `FilledLike` of an integer tensor (positions);
  of a float one, `Affine(scale=0, offset=value)`, exactly int8;
* elementwise `Add`, `Subtract`, `Multiply`, `Maximum`, `Minimum` with a
  constant array (the `arange` of positions) -> `ConstantOp`;
* `GetItem` (`x[:, a:b]`, `x[..., i]`; the batch axis whole) -> `Slice`;
* `Relu`, `Relu6`, `Sigmoid`, `Tanh`, `Silu` -> `ReLU` / `Activation` layers;
* `Mean` over a sequence's steps (axis 1) or an image's positions (axes 1, 2)
  -> `GlobalAveragePooling1D` / `2D` (int8 MEAN);
* `ExtractPatches` of non-overlapping patches (keras.io's ViT `Patches`)
  -> `Reshape`, `Permute`, `Reshape`: the patch's pixels regrouped, no
  arithmetic, so int8 exactly (Keras computes it as a convolution with a
  one-hot kernel).

The layers here are registered in `builtin` like every layer: how they
quantize (a float result on its trained range; an integer one, positions,
not at all) and which operators they become.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tfjoint._keras import keras, serializable, tf
from tfjoint.registry.own_layers import Affine, ExpandDims

__all__ = ["FilledLike", "ConstantOp", "MatMul", "Slice", "KERAS3_OPS", "OpUntranslatable", "ELEMENTWISE_OPS"]

ELEMENTWISE_OPS = ("Add", "Subtract", "Multiply", "Maximum", "Minimum")


class OpUntranslatable(Exception):
    """Why one raw op cannot be rebuilt (the bridge collects and reports these)."""


@serializable
class FilledLike(keras.layers.Layer):
    """`zeros_like(x)` or `ones_like(x)` (any fill value): `x`'s shape and dtype, every element `value`.

    Args:
      value: the fill value.
      integer: whether it fills an integer tensor (positions, ids): then it
        is not quantized.
    """

    def __init__(self, value: float = 0.0, integer: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.value = float(value)
        self.integer = bool(integer)

    def call(self, inputs):
        return tf.zeros_like(inputs) + tf.cast(self.value, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), value=self.value, integer=self.integer)


@serializable
class ConstantOp(keras.layers.Layer):
    """`x <op> constant` (or `constant <op> x`) for an elementwise op and a constant array (broadcast).

    Args:
      op: "Add", "Subtract", "Multiply", "Maximum" or "Minimum".
      value: the constant (nested lists).
      dtype_name: the constant's dtype ("int32" for positions).
      constant_first: the constant is the op's first operand.
    """

    def __init__(self, op: str, value, dtype_name: str = "float32", constant_first: bool = False, **kwargs):
        super().__init__(**kwargs)
        if op not in ELEMENTWISE_OPS:
            raise ValueError(f"ConstantOp: op must be one of {ELEMENTWISE_OPS}; received {op!r}.")
        self.op = op
        self.value = np.asarray(value).tolist()
        self.dtype_name = str(dtype_name)
        self.constant_first = bool(constant_first)

    @property
    def integer(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype_name), np.integer)

    def call(self, inputs):
        constant = tf.constant(self.value, dtype=inputs.dtype)
        a, b = (constant, inputs) if self.constant_first else (inputs, constant)
        return {"Add": tf.add, "Subtract": tf.subtract, "Multiply": tf.multiply, "Maximum": tf.maximum,
                "Minimum": tf.minimum}[self.op](a, b)

    def compute_output_shape(self, input_shape):
        return tf.broadcast_static_shape(tf.TensorShape(input_shape), tf.TensorShape(np.shape(self.value)))

    def get_config(self):
        return dict(super().get_config(), op=self.op, value=self.value, dtype_name=self.dtype_name,
                    constant_first=self.constant_first)


@serializable
class MatMul(keras.layers.Layer):
    """`a @ b` of two tensors (batched over the leading axes): int8 BATCH_MATMUL."""

    def call(self, inputs):
        return tf.matmul(inputs[0], inputs[1])

    def compute_output_shape(self, input_shape):
        a, b = (tf.TensorShape(s) for s in input_shape)
        return a[:-1].concatenate(b[-1:])


@serializable
class Slice(keras.layers.Layer):
    """`x[spec]` with the batch axis whole: each entry an index or `[start, stop, step]` (None for open ends).

    Args:
      spec: one entry per axis after the batch, as Keras 3's GetItem wrote it.
    """

    def __init__(self, spec, **kwargs):
        super().__init__(**kwargs)
        self.spec = [list(part) if isinstance(part, (list, tuple)) else int(part) for part in spec]

    def _index(self):
        return (slice(None),) + tuple(slice(*part) if isinstance(part, list) else part for part in self.spec)

    def call(self, inputs):
        return inputs[self._index()]

    def get_config(self):
        return dict(super().get_config(), spec=self.spec)


# --- The bridge's table: a Keras 3 op node -> the tf_keras layer call that replays it -------------------------

def _only_tensor(args) -> None:
    if len(args) != 1:
        raise OpUntranslatable("it takes more than one tensor here")


def _reshape(config, name: str, args: list, constants: list) -> Callable:
    shape = list(config.get("newshape") or config.get("new_shape") or [])
    if not shape or shape[0] not in (-1, None):
        raise OpUntranslatable(f"it reshapes to {shape}, which does not keep the batch axis first (-1)")
    return lambda tensors: keras.layers.Reshape(tuple(shape[1:]), name=name)(tensors[0])


def _transpose(config, name: str, args: list, constants: list) -> Callable:
    axes = config.get("axes")
    if axes is None or int(axes[0]) != 0:
        raise OpUntranslatable(f"it permutes axes {axes}, moving the batch axis")
    return lambda tensors: keras.layers.Permute(tuple(int(a) for a in axes[1:]), name=name)(tensors[0])


def _matmul(config, name: str, args: list, constants: list) -> Callable:
    if constants:
        raise OpUntranslatable("it multiplies by a constant matrix: use a Dense layer")
    return lambda tensors: MatMul(name=name)(tensors[:2])


def _softmax(config, name: str, args: list, constants: list) -> Callable:
    axis = config.get("axis", -1)
    return lambda tensors: keras.layers.Softmax(axis=axis, name=name)(tensors[0])


def _expand_dims(config, name: str, args: list, constants: list) -> Callable:
    axis = config.get("axis")
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]

    def call(tensors):
        rank = tensors[0].shape.rank + len(axes)
        positive = sorted(a % rank for a in axes)
        if 0 in positive:
            raise OpUntranslatable("it inserts an axis before the batch axis")
        return ExpandDims(positive, name=name)(tensors[0])

    return call


def _extract_patches(config, name: str, args: list, constants: list) -> Callable:
    size = config.get("size")
    size = [int(size)] * 2 if isinstance(size, int) else [int(s) for s in size]
    strides = config.get("strides") or size
    strides = [int(strides)] * 2 if isinstance(strides, int) else [int(s) for s in strides]
    dilation = config.get("dilation_rate", 1)
    dilation = [int(dilation)] * 2 if isinstance(dilation, int) else [int(d) for d in dilation]
    fmt = config.get("data_format") or "channels_last"
    if len(size) != 2 or strides != size or dilation != [1, 1] or fmt != "channels_last" \
            or config.get("padding", "valid") != "valid":
        raise OpUntranslatable(
            f"it extracts patches with size={size}, strides={strides}, dilation_rate={dilation}, "
            f"padding={config.get('padding')!r}, data_format={fmt!r}; tfjoint rebuilds non-overlapping 2-D patches "
            "(strides equal to size, or left out; dilation 1; padding 'valid'; channels_last)")
    (ph, pw) = size

    def call(tensors):
        shape = tensors[0].shape
        if shape.rank != 4 or any(d is None for d in shape[1:]) or shape[1] % ph or shape[2] % pw:
            raise OpUntranslatable(f"it extracts {ph}x{pw} patches from a tensor of shape {tuple(shape)}: tfjoint "
                                   "needs a batch of images of known size, a multiple of the patch size")
        rows, cols, channels = shape[1] // ph, shape[2] // pw, shape[3]
        # (rows, ph, cols, pw * channels) -> (rows, cols, ph, pw * channels) -> one vector per patch, in the order
        # of Keras's one-hot kernel (patch row, patch column, channel).
        x = keras.layers.Reshape((rows, ph, cols, pw * channels), name=f"{name}_rows")(tensors[0])
        x = keras.layers.Permute((1, 3, 2, 4), name=f"{name}_regroup")(x)
        return keras.layers.Reshape((rows, cols, ph * pw * channels), name=name)(x)

    return call


def _filled(value: float) -> Callable:
    def build(config, name: str, args: list, constants: list) -> Callable:
        def call(tensors):
            if tensors[0].dtype.is_integer:
                return FilledLike(value, integer=True, name=name)(tensors[0])
            return Affine(scale=0.0, offset=value, name=name)(tensors[0])  # int8 exactly (a 1x1 depthwise conv)

        return call

    return build


def _with_constant(op: str) -> Callable:
    def build(config, name: str, args: list, constants: list) -> Callable:
        if len(constants) != 1 or len(args) != 2:
            raise OpUntranslatable("only a tensor and one constant array are rebuilt this way")
        constant, position = constants[0]
        return lambda tensors: ConstantOp(op, constant, str(constant.dtype), constant_first=position == 0,
                                          name=name)(tensors[0])

    return build


def _activation(layer: Callable[[str], Any]) -> Callable:
    def build(config, name: str, args: list, constants: list) -> Callable:
        if constants:
            raise OpUntranslatable("it is called with a constant array")
        return lambda tensors: layer(name)(tensors[0])

    return build


def _mean(config, name: str, args: list, constants: list) -> Callable:
    axis, keepdims = config.get("axis"), bool(config.get("keepdims", False))

    def call(tensors):
        rank = tensors[0].shape.rank
        axes = sorted(int(a) % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])) \
            if axis is not None else None
        pooling = {(3, (1,)): keras.layers.GlobalAveragePooling1D,
                   (4, (1, 2)): keras.layers.GlobalAveragePooling2D}.get((rank, tuple(axes or ())))
        if pooling is None:
            raise OpUntranslatable(f"it averages a rank-{rank} tensor over axes {axes}; tfjoint rebuilds the mean "
                                   "over a sequence's steps (axis 1) or an image's positions (axes 1 and 2)")
        return pooling(keepdims=keepdims, name=name)(tensors[0])

    return call


# Keras 3 op class -> `(op config, name, node args, [(constant array, argument position)]) -> tensors -> output`.
KERAS3_OPS: dict[str, Callable[..., Callable[[list], Any]]] = {
    "Reshape": _reshape, "Transpose": _transpose, "Matmul": _matmul, "Softmax": _softmax,
    "ExpandDims": _expand_dims, "ExtractPatches": _extract_patches, "ZerosLike": _filled(0.0), "OnesLike": _filled(1.0),
    "Relu": _activation(lambda name: keras.layers.ReLU(name=name)),
    "Relu6": _activation(lambda name: keras.layers.ReLU(6.0, name=name)),
    "Sigmoid": _activation(lambda name: keras.layers.Activation("sigmoid", name=name)),
    "Tanh": _activation(lambda name: keras.layers.Activation("tanh", name=name)),
    "Silu": _activation(lambda name: keras.layers.Activation("swish", name=name)),
    "Mean": _mean,
    **{op: _with_constant(op) for op in ELEMENTWISE_OPS},
}
