"""Transformer layers as the integer operators TFLite runs, fake-quantized where the file quantizes them.

TF-MOT has no quantize config for LayerNormalization or MultiHeadAttention
(its issues #942 and #718), and TensorFlow's own full-integer quantization
leaves part of a LayerNormalization in float. The layers here compute what a
Keras LayerNormalization and MultiHeadAttention compute, written as the
operators TFLite has int8 kernels for, with a quantization point
(`tfjoint.registry.points`) at every operator's output:

* `IntegerLayerNorm`: MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD, over
  the last axis (no float island: the mean, the variance and the inverse
  standard deviation are int8 tensors with trained ranges).
* `IntegerAttention`: the query/key/value projections (FULLY_CONNECTED),
  scores (BATCH_MATMUL), the scale (MUL), the mask (SELECT_V2), SOFTMAX on
  its fixed int8 grid, the context (BATCH_MATMUL) and the output projection.
  Its weights keep a heads axis, so whole heads can be pruned and removed.

`prepare` substitutes these for Keras's layers (their registry entries say
so), with the same names and weights. `PositionEmbedding`, `Gelu` and
`TakeStep` are what the Keras 3 bridge rebuilds keras_hub's position
embedding, its `gelu_approximate` and a `x[:, 0]` slice as.
"""

from __future__ import annotations

import math

from tfjoint._keras import keras, serializable, tf
from tfjoint.registry.points import PointsMixin

__all__ = ["IntegerLayerNorm", "IntegerAttention", "IntegerDotAttention", "dot_attention_refusal",
           "dot_attention_from_layer", "DOT_ATTENTION_OPERATORS", "IntegerEinsumDense", "IntegerSum",
           "PositionEmbedding", "Gelu", "TakeStep",
           "einsum_dense_refusal", "einsum_dense_from_layer", "LAYER_NORM_OPERATORS",
           "ATTENTION_OPERATORS", "attention_refusal", "attention_from_config", "layer_norm_refusal",
           "layer_norm_from_config"]

LAYER_NORM_OPERATORS = ("MEAN", "SUB", "MUL", "ADD", "RSQRT")
ATTENTION_OPERATORS = ("EXPAND_DIMS", "CONV_2D", "RESHAPE", "TRANSPOSE", "BATCH_MATMUL", "MUL", "SOFTMAX")


@serializable
class IntegerLayerNorm(PointsMixin, keras.layers.Layer):
    """Layer normalization over the last axis, as the integer operators TFLite runs it.

    Args:
      epsilon: added to the variance.
      center: add `beta`.
      scale: multiply by `gamma`.
    """

    POINTS = (("mean", "range"), ("centered", "range"), ("squared", "range"), ("variance", "range"),
              ("shifted_variance", "range"), ("inverse_std", "range"), ("normalized", "range"), ("scaled", "range"),
              ("output", "range"))

    def __init__(self, epsilon: float = 1e-3, center: bool = True, scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight("gamma", shape=(channels,), initializer="ones") if self.scale else None
        self.beta = self.add_weight("beta", shape=(channels,), initializer="zeros") if self.center else None
        super().build(input_shape)

    def call(self, inputs, training=None):
        mean = self.point("mean", tf.reduce_mean(inputs, axis=-1, keepdims=True))
        centered = self.point("centered", inputs - mean)
        squared = self.point("squared", centered * centered)
        variance = self.point("variance", tf.reduce_mean(squared, axis=-1, keepdims=True))
        shifted = self.point("shifted_variance", variance + self.epsilon)
        inverse = self.point("inverse_std", self._inverse_std(shifted, training))
        x = self.point("normalized", centered * inverse)
        if self.gamma is not None:
            x = self.point("scaled", x * self.weight("gamma"))
        if self.beta is not None:
            x = x + self.weight("beta")
        return self.point("output", x)

    def _inverse_std(self, shifted, training):
        """`rsqrt(shifted)`. A variance far below its int8 range's step (a near-constant token, as from an empty
        image patch, with keras.io's epsilon of 1e-6) is int8 zero; TFLite's and TFLM's RSQRT give the largest
        value of the output's range there, and fake quantization at inference clamps the infinity to it too. In
        training the infinity would enter the range's moving average (and the gradient), so it is replaced by the
        largest value the range holds, with no gradient."""
        if not training:
            return tf.math.rsqrt(shifted)  # what the file computes, and what the converter converts
        positive = shifted > 0.0
        inverse = tf.math.rsqrt(tf.where(positive, shifted, tf.ones_like(shifted)))
        largest = tf.reduce_max(tf.where(positive, inverse, tf.zeros_like(inverse)))
        stored = self.point_range("inverse_std")
        if stored is not None:
            largest = tf.maximum(largest, tf.cast(stored[1], largest.dtype))
        return tf.where(positive, inverse, tf.stop_gradient(largest))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), epsilon=self.epsilon, center=self.center, scale=self.scale)


MASK_MARGIN = 10.0  # e^-10 = 4.5e-5: a masked key's weight rounds to 0 on SOFTMAX's int8 grid (step 1/256)


@serializable
class IntegerAttention(PointsMixin, keras.layers.Layer):
    """Multi-head attention (Keras's MultiHeadAttention, one attention axis) as integer operators.

    Called as `layer(query, value, key=None, attention_mask=None)`, like
    Keras's. Weights (the heads axis kept, so heads can be removed):
    `query_kernel`, `key_kernel` (dim, heads, key_dim), `value_kernel`
    (dim, heads, value_dim), their biases (heads, dim), `output_kernel`
    (heads, value_dim, output_dim) and `output_bias`.

    Args:
      num_heads, key_dim, value_dim, output_dim: as Keras's MultiHeadAttention
        (`value_dim` defaults to `key_dim`; `output_dim` to the query's last
        axis).
      use_bias: whether the projections have biases.
      dropout: dropout on the attention probabilities, in training.
    """

    POINTS = (("query_weights", "weight"), ("key_weights", "weight"), ("value_weights", "weight"),
              ("output_weights", "weight"), ("query", "range"), ("key", "range"), ("value", "range"),
              ("scores", "range"), ("scaled_scores", "range"), ("masked_scores", "range"),
              ("probabilities", "probabilities"),
              ("context", "range"), ("output", "range"))
    KERNELS = ("query_kernel", "key_kernel", "value_kernel", "output_kernel")
    BIASES = ("query_bias", "key_bias", "value_bias", "output_bias")

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None, output_dim: int | None = None,
                 use_bias: bool = True, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim or key_dim)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.use_bias = bool(use_bias)
        self.dropout = float(dropout)

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple,
                                                                                                      tf.TensorShape)) \
            else [input_shape]
        query_dim = int(shapes[0][-1])
        value_dim_in = int(shapes[1][-1]) if len(shapes) > 1 else query_dim
        key_dim_in = int(shapes[2][-1]) if len(shapes) > 2 and shapes[2] is not None else value_dim_in
        heads, output_dim = self.num_heads, self.output_dim or query_dim

        def weight(name, shape, initializer="glorot_uniform"):
            return self.add_weight(name, shape=shape, initializer=initializer)

        # In Keras's MultiHeadAttention order (each projection's kernel, then its bias), so its weights carry over.
        projections = (("query", (query_dim, heads, self.key_dim), (heads, self.key_dim)),
                       ("key", (key_dim_in, heads, self.key_dim), (heads, self.key_dim)),
                       ("value", (value_dim_in, heads, self.value_dim), (heads, self.value_dim)),
                       ("output", (heads, self.value_dim, output_dim), (output_dim,)))
        for name, kernel_shape, bias_shape in projections:
            setattr(self, f"{name}_kernel", weight(f"{name}_kernel", kernel_shape))
            setattr(self, f"{name}_bias", weight(f"{name}_bias", bias_shape, "zeros") if self.use_bias else None)
        super().build(input_shape)

    def _pointwise(self, x, kernel_2d, bias_1d, weights_point: str):
        """x (batch, steps, d) times a (d, n) kernel, as a 1x1 CONV_2D: the int8 operator a converter makes of it
        (its Tensordot lowering of a rank-3 matmul leaves the reshapes around it in float). The kernel is
        fake-quantized as the operator reads it."""
        filters = self.point(weights_point, tf.reshape(kernel_2d, (1, 1) + tuple(kernel_2d.shape)))
        y = tf.nn.conv2d(tf.expand_dims(x, 2), filters, strides=1, padding="VALID")
        if bias_1d is not None:
            y = y + bias_1d
        return tf.squeeze(y, 2)

    def _project(self, x, kernel, bias, point):
        heads, depth = kernel.shape[1], kernel.shape[2]
        y = self._pointwise(x, tf.reshape(kernel, (kernel.shape[0], heads * depth)),
                            None if bias is None else tf.reshape(bias, (heads * depth,)), f"{point}_weights")
        return tf.reshape(self.point(point, y), (-1, x.shape[1], heads, depth))

    def _mask(self, attention_mask, value_mask, use_causal_mask: bool, queries: int, keys: int):
        """The (batch or 1, 1, queries, keys) boolean mask: explicit, key padding, causal, combined."""
        masks = []
        if attention_mask is not None:
            mask = tf.cast(attention_mask, tf.bool)
            masks.append(mask[:, tf.newaxis, tf.newaxis, :] if mask.shape.rank == 2 else mask[:, tf.newaxis])
        if value_mask is not None:  # the keys' padding
            masks.append(tf.cast(value_mask, tf.bool)[:, tf.newaxis, tf.newaxis, :])
        if use_causal_mask:
            causal = tf.linalg.band_part(tf.ones((queries, keys), tf.bool), -1, 0)
            masks.append(causal[tf.newaxis, tf.newaxis])
        if not masks:
            return None
        mask = masks[0]
        for other in masks[1:]:
            mask = tf.logical_and(mask, other)
        return mask

    def _masked_score(self):
        """The score a masked key gets: far below every other (float), or MASK_MARGIN below the scores' range.

        In int8 a constant of -1e4 would stretch the masked scores' range until
        the real scores lost their resolution (or, sharing their scale, clip to
        the grid's lowest value, a weight softmax does not ignore). Quantized,
        the masked score sits MASK_MARGIN below the lowest score the range has
        seen: its softmax weight is below e^-MASK_MARGIN of any unmasked key's,
        under the half step (1/512) of SOFTMAX's int8 grid.
        """
        scores_range = self.point_range("scaled_scores")
        if scores_range is None:
            return tf.constant(-1e4)
        return tf.stop_gradient(scores_range[0] - MASK_MARGIN)

    def call(self, query, value=None, key=None, attention_mask=None, query_mask=None, value_mask=None,
             key_mask=None, use_causal_mask=False, return_attention_scores=False, training=None):
        if return_attention_scores:
            raise ValueError(f"IntegerAttention '{self.name}' returns the attention output only, not the scores.")
        value = query if value is None else tf.cast(value, self.compute_dtype)  # Keras casts the first argument only
        key = value if key is None else tf.cast(key, self.compute_dtype)
        value_mask = value_mask if value_mask is not None else key_mask
        q = self._project(query, self.weight("query_kernel"), self.query_bias, "query")
        k = self._project(key, self.weight("key_kernel"), self.key_bias, "key")
        v = self._project(value, self.weight("value_kernel"), self.value_bias, "value")
        scores = self.point("scores", tf.einsum("bqhk,bthk->bhqt", q, k))
        scores = self.point("scaled_scores", scores * (1.0 / math.sqrt(self.key_dim)))
        mask = self._mask(attention_mask, value_mask, use_causal_mask, query.shape[1], key.shape[1])
        if mask is not None:
            scores = self.point("masked_scores", tf.where(mask, scores, self._masked_score()))
        probabilities = self.point("probabilities", tf.nn.softmax(scores, axis=-1))
        if training and self.dropout:
            probabilities = tf.nn.dropout(probabilities, rate=self.dropout)
        context = self.point("context", tf.einsum("bhqt,bthk->bqhk", probabilities, v))
        output_kernel = self.weight("output_kernel")
        heads, depth, output_dim = output_kernel.shape
        context = tf.reshape(context, (-1, query.shape[1], heads * depth))
        output = self._pointwise(context, tf.reshape(output_kernel, (heads * depth, output_dim)),
                                 self.output_bias, "output_weights")
        return self.point("output", output)

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple,
                                                                                                      tf.TensorShape)) \
            else [input_shape]
        query = tf.TensorShape(shapes[0]).as_list()
        return tf.TensorShape(query[:-1] + [self.output_dim or query[-1]])

    def get_config(self):
        return dict(super().get_config(), num_heads=self.num_heads, key_dim=self.key_dim, value_dim=self.value_dim,
                    output_dim=self.output_dim, use_bias=self.use_bias, dropout=self.dropout)


DOT_ATTENTION_OPERATORS = ("BATCH_MATMUL", "SOFTMAX")


def _attention_axes_ok(config) -> bool:
    axes = config.get("attention_axes")
    return axes is None or tuple(axes) in ((1,), (-2,))


def attention_refusal(layer) -> str | None:
    """Why a Keras MultiHeadAttention cannot become an `IntegerAttention`, or None."""
    config = layer.get_config()
    if not _attention_axes_ok(config):
        return (f"it attends over axes {config.get('attention_axes')}: tfjoint's integer attention attends over the "
                "sequence axis of (batch, steps, features) inputs; reshape the input to that")
    if isinstance(config.get("output_shape"), (list, tuple)) and len(config["output_shape"]) > 1:
        return f"its output_shape {config['output_shape']} is not one axis: use a Dense after it"
    for node in layer.inbound_nodes:
        if (node.call_kwargs or {}).get("return_attention_scores"):
            return "it returns its attention scores as a second output: drop return_attention_scores"
        if (node.call_kwargs or {}).get("query_mask") is not None:
            return "it is given a query_mask: mask the keys (value_mask, attention_mask) instead"
    for tensor in tf.nest.flatten(layer.input):
        if getattr(tensor, "shape", None) is not None and tensor.shape.rank != 3:
            return (f"its inputs have rank {tensor.shape.rank}: tfjoint's integer attention takes (batch, steps, "
                    "features)")
        if getattr(tensor, "shape", None) is not None and tensor.shape[1] is None:
            return ("its sequences have an unknown length: an int8 file runs fixed shapes; give the model's Input a "
                    "fixed length (or pass sample_inputs for a Keras 3 model)")
    return None


def attention_from_config(config: dict) -> IntegerAttention:
    """The `IntegerAttention` a MultiHeadAttention config (tf_keras or Keras 3) describes (weights carry over)."""
    output = config.get("output_shape")
    output_dim = (output[0] if isinstance(output, (list, tuple)) else output) if output else None
    return IntegerAttention(config["num_heads"], config["key_dim"], value_dim=config.get("value_dim"),
                            output_dim=output_dim, use_bias=config.get("use_bias", True),
                            dropout=config.get("dropout", 0.0), name=config["name"],
                            trainable=config.get("trainable", True))


@serializable
class IntegerDotAttention(PointsMixin, keras.layers.Layer):
    """Keras's dot-product `Attention` (Luong): `softmax(q k^T [* scale]) v`, as int8 BATCH_MATMUL, SOFTMAX and
    BATCH_MATMUL, each output fake-quantized. Called as Keras's: `layer([query, value])` or
    `layer([query, value, key])`; its `scale` weight (with `use_scale`) carries over.

    Args:
      use_scale: a trained scalar multiplies the scores.
      dropout: dropout on the attention probabilities, in training.
    """

    STANDS_FOR = "Attention"  # the Keras class it replaces, for messages
    POINTS = (("scores", "range"), ("scaled_scores", "range"), ("probabilities", "probabilities"),
              ("output", "range"))

    def __init__(self, use_scale: bool = False, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.use_scale = bool(use_scale)
        self.dropout = float(dropout)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones") if self.use_scale else None
        super().build(input_shape)

    def call(self, inputs, mask=None, training=None, return_attention_scores=False, use_causal_mask=False):
        if mask is not None or use_causal_mask or return_attention_scores:
            raise ValueError(f"IntegerDotAttention '{self.name}' takes no mask and returns the output only.")
        query, value = inputs[0], tf.cast(inputs[1], self.compute_dtype)
        key = tf.cast(inputs[2], self.compute_dtype) if len(inputs) > 2 else value
        scores = self.point("scores", tf.matmul(query, key, transpose_b=True))
        if self.scale is not None:
            scores = self.point("scaled_scores", scores * self.scale)
        probabilities = self.point("probabilities", tf.nn.softmax(scores, axis=-1))
        if training and self.dropout:
            probabilities = tf.nn.dropout(probabilities, rate=self.dropout)
        return self.point("output", tf.matmul(probabilities, value))

    def compute_output_shape(self, input_shape):
        query, value = tf.TensorShape(input_shape[0]).as_list(), tf.TensorShape(input_shape[1]).as_list()
        return tf.TensorShape(query[:-1] + value[-1:])

    def get_config(self):
        return dict(super().get_config(), use_scale=self.use_scale, dropout=self.dropout)


def dot_attention_refusal(layer) -> str | None:
    """Why a Keras `Attention` cannot become an `IntegerDotAttention`, or None."""
    config = layer.get_config()
    if config.get("score_mode", "dot") != "dot":
        return (f"its score_mode is {config.get('score_mode')!r}: tfjoint runs dot-product scores only "
                "(score_mode='dot'), or use MultiHeadAttention")
    if config.get("causal"):
        return "it is causal: use MultiHeadAttention with use_causal_mask=True"
    for node in layer.inbound_nodes:
        kwargs = node.call_kwargs or {}
        if kwargs.get("use_causal_mask"):
            return "it is called with use_causal_mask: use MultiHeadAttention with use_causal_mask=True"
        if kwargs.get("return_attention_scores"):
            return "it returns its attention scores as a second output: drop return_attention_scores"
        if kwargs.get("mask") is not None:
            return "it is given a mask: use MultiHeadAttention with an attention_mask"
    for tensor in tf.nest.flatten(layer.input):
        if getattr(tensor, "shape", None) is not None and tensor.shape.rank != 3:
            return f"its inputs have rank {tensor.shape.rank}: it takes (batch, steps, features)"
    return None


def dot_attention_from_layer(layer) -> IntegerDotAttention:
    """The `IntegerDotAttention` a Keras `Attention` computes (its scale weight carries over)."""
    config = layer.get_config()
    return IntegerDotAttention(use_scale=config.get("use_scale", False), dropout=config.get("dropout", 0.0),
                               name=layer.name, trainable=layer.trainable)


def layer_norm_refusal(layer) -> str | None:
    """Why a Keras LayerNormalization cannot become an `IntegerLayerNorm`, or None."""
    config = layer.get_config()
    axis = config.get("axis")
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(layer.input_shape) if isinstance(layer.input_shape, tuple) else None
    if len(axes) != 1 or (axes[0] != -1 and (rank is None or axes[0] != rank - 1)):
        return f"it normalizes over axes {axis}: tfjoint's integer LayerNorm normalizes the last axis"
    if getattr(layer, "rms_scaling", False):
        return "it uses rms_scaling: use the standard LayerNormalization (rms_scaling=False)"
    if isinstance(layer.input_shape, tuple) and layer.input_shape[-1] == 1:
        return ("it normalizes over one channel, so its output is its beta whatever the input (x - mean(x) is 0); "
                "an int8 file cannot compute that zero (the converter requantizes through float, and TFLite Micro "
                "aborts on its scale): remove it (it passes on only its beta), or normalize more than one channel")
    return None


def layer_norm_from_config(config: dict) -> IntegerLayerNorm:
    """The `IntegerLayerNorm` a LayerNormalization config describes (gamma and beta carry over)."""
    return IntegerLayerNorm(epsilon=config.get("epsilon", 1e-3), center=config.get("center", True),
                            scale=config.get("scale", True), name=config["name"],
                            trainable=config.get("trainable", True))


@serializable
class PositionEmbedding(keras.layers.Layer):
    """A learned embedding per position, the first `steps` of them, as wide as the input (keras_hub's layer).

    Called on a (batch, steps, features) tensor; returns the embeddings of
    positions 0 .. steps-1, (1, steps, features): an Add broadcasts them over
    the batch. In int8 they are a constant (the table's rows, quantized with
    the table), with no shape arithmetic (TFLM's BROADCAST_TO takes no shape
    computed at run time).

    Args:
      sequence_length: positions the table holds (at least the input's steps).
    """

    def __init__(self, sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)

    def build(self, input_shape):
        self.position_embeddings = self.add_weight("position_embeddings",
                                                   shape=(self.sequence_length, int(input_shape[-1])),
                                                   initializer="glorot_uniform")
        super().build(input_shape)

    def call(self, inputs):
        steps = inputs.shape[-2]
        return self.position_embeddings[None, :steps]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([1]).concatenate(tf.TensorShape(input_shape)[1:])

    def get_config(self):
        return dict(super().get_config(), sequence_length=self.sequence_length)


@serializable
class Gelu(keras.layers.Layer):
    """GELU, exact or its tanh approximation (TFLite's GELU operator has both), as a layer of its own.

    Args:
      approximate: the tanh form (keras_hub's `gelu_approximate`).
    """

    def __init__(self, approximate: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.approximate = bool(approximate)

    def call(self, inputs):
        return tf.nn.gelu(inputs, approximate=self.approximate)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), approximate=self.approximate)


@serializable
class TakeStep(keras.layers.Layer):
    """One step of a sequence: `x[:, index]` (a BERT's pooled [CLS] position), as a layer.

    Args:
      index: the step (negative counts from the end).
    """

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape(shape[:1] + shape[2:])

    def get_config(self):
        return dict(super().get_config(), index=self.index)


def _einsum_parts(equation: str) -> tuple[str, str, str] | None:
    """(batch-and-sequence letters, contracted letter, new letters) of a dense-on-the-last-axis einsum, or None.

    "abc,cd->abd" is a Dense over the last axis; "abc,cde->abde" one whose
    output is reshaped to (d, e); anything else (several contracted axes, an
    ellipsis, a kernel axis that is not new) is not a dense layer.
    """
    try:
        left, output = equation.replace(" ", "").split("->")
        source, kernel = left.split(",")
    except ValueError:
        return None
    if "." in equation or not source or not kernel or source[-1] != kernel[0]:
        return None
    prefix, contracted, new = source[:-1], source[-1], kernel[1:]
    if output != prefix + new or contracted in output or set(new) & set(prefix):
        return None
    return prefix, contracted, new


@serializable
class IntegerEinsumDense(PointsMixin, keras.layers.Layer):
    """A dense-on-the-last-axis EinsumDense ("abc,cd->abd", "abc,cde->abde") as one int8 FULLY_CONNECTED or CONV_2D.

    Weights as Keras's EinsumDense: `kernel` (features, *new axes) and a
    `bias` over the new axes (or over the last one).

    Args:
      equation: the EinsumDense equation.
      output_tail: the sizes of the new axes (the kernel's shape after its first axis).
      bias_axes: the EinsumDense's bias axes (letters), or None.
      activation: "linear" or "relu" (fused into the int8 operator).
    """

    POINTS = (("weights", "weight"), ("output", "range"))

    def __init__(self, equation: str, output_tail, bias_axes: str | None = None, activation: str = "linear",
                 **kwargs):
        super().__init__(**kwargs)
        self.equation = equation
        self.output_tail = tuple(int(d) for d in output_tail)
        self.bias_axes = bias_axes
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        _, _, new = _einsum_parts(self.equation)
        self.kernel = self.add_weight("kernel", shape=(int(input_shape[-1]),) + self.output_tail,
                                      initializer="glorot_uniform")
        bias_shape = tuple(self.output_tail[new.index(letter)] for letter in self.bias_axes) if self.bias_axes else None
        self.bias = self.add_weight("bias", shape=bias_shape, initializer="zeros") if bias_shape else None
        super().build(input_shape)

    def call(self, inputs):
        units = int(math.prod(self.output_tail))
        kernel = self.point("weights", tf.reshape(self.weight("kernel"), (inputs.shape[-1], units)))
        if inputs.shape.rank == 3:  # (batch, steps, features): a 1x1 CONV_2D (a rank-3 matmul stays float)
            y = tf.squeeze(tf.nn.conv2d(tf.expand_dims(inputs, 2), kernel[tf.newaxis, tf.newaxis], 1, "VALID"), 2)
        else:
            y = tf.matmul(inputs, kernel)
        if self.bias is not None:
            bias = self.bias if len(self.bias_axes) == len(self.output_tail) else tf.broadcast_to(
                self.bias, self.output_tail)
            y = y + tf.reshape(bias, (units,))
        y = self.point("output", self.activation(y))
        return tf.reshape(y, [-1] + list(inputs.shape[1:-1]) + list(self.output_tail)) \
            if len(self.output_tail) > 1 else y

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape(shape[:-1] + list(self.output_tail))

    def get_config(self):
        return dict(super().get_config(), equation=self.equation, output_tail=list(self.output_tail),
                    bias_axes=self.bias_axes, activation=keras.activations.serialize(self.activation))


def einsum_dense_refusal(layer) -> str | None:
    """Why a Keras EinsumDense cannot become an `IntegerEinsumDense`, or None."""
    config = layer.get_config()
    parts = _einsum_parts(config["equation"])
    if parts is None:
        return (f"its equation {config['equation']!r} is not a dense layer over the last axis (like 'abc,cd->abd'): "
                "tfjoint runs those as int8 FULLY_CONNECTED; use a Dense, or reshape around one")
    bias_axes = config.get("bias_axes")
    if bias_axes and (not set(bias_axes) <= set(parts[2]) or bias_axes not in (parts[2], parts[2][-1])):
        return f"its bias axes {bias_axes!r} are not all its new axes or the last one"
    if keras.activations.serialize(keras.activations.get(config.get("activation"))) not in ("linear", "relu"):
        return f"its activation {config.get('activation')!r} is not fused by TFLite: use an Activation layer after it"
    return None


def einsum_dense_from_layer(layer) -> IntegerEinsumDense:
    """The `IntegerEinsumDense` for a dense-on-the-last-axis EinsumDense (weights carry over)."""
    config = layer.get_config()
    return IntegerEinsumDense(config["equation"], tuple(layer.kernel.shape[1:]), bias_axes=config.get("bias_axes"),
                              activation=config.get("activation") or "linear", name=config["name"],
                              trainable=config.get("trainable", True))


@serializable
class IntegerSum(PointsMixin, keras.layers.Layer):
    """The sum of several inputs, one addition at a time, each partial sum an int8 tensor with its own range;
    with `scale`, the sum times a constant (a Keras `Average`: 1 / the count).

    TFLite's ADD takes two operands: a Keras `Add` of three or more inputs
    (a BERT's token + position + segment embeddings) converts to a chain of
    ADDs, and TF-MOT fake-quantizes only the last one's output, leaving the
    partial sums in float. An `Average` is that chain, then a MUL. `prepare`
    substitutes this layer for either.
    """

    def __init__(self, num_inputs: int, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_inputs = int(num_inputs)
        self.scale = float(scale)

    @property
    def _sums(self) -> int:  # additions whose result is a point of its own (the last is the output, unscaled)
        return self.num_inputs - 1 if self.scale != 1.0 else self.num_inputs - 2

    @property
    def POINTS(self):  # noqa: N802  (the quantization points, as `PointsMixin` layers name them)
        return tuple((f"partial_sum_{i}", "range") for i in range(1, self._sums + 1)) + (("output", "range"),)

    def call(self, inputs):
        total = inputs[0]
        for index, x in enumerate(inputs[1:], start=1):
            total = self.point(f"partial_sum_{index}" if index <= self._sums else "output", total + x)
        return self.point("output", total * self.scale) if self.scale != 1.0 else total

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return dict(super().get_config(), num_inputs=self.num_inputs, scale=self.scale)
