"""An LSTM as the integer operators TFLite and TFLM run it well: unrolled, fake-quantized where they quantize.

TFLite's fused int8 `UNIDIRECTIONAL_SEQUENCE_LSTM` takes its internal ranges
from the converter's calibration, which loses LSTM models to chance level
(a Conv1D+LSTM classifier at 96.5% in Keras scored ~50% in int8, in LiteRT and
TFLM alike), and QAT cannot reach its 16-bit cell state. The same weights
unrolled over the time steps convert to FULLY_CONNECTED, UNPACK, ADD, SPLIT,
LOGISTIC, TANH, MUL (and PACK for sequences): int8 operators every runtime,
TFLM included, has. `IntegerLSTM` computes exactly that graph in Keras, with
a quantization point (`tfjoint.registry.points`) at every operator's output,
so QAT trains the ranges the file uses and the int8 file computes what the
quantization-aware model computed.

`tfjoint.registry.rewrites.LSTMAsIntegerCells`, the layout rewrite the LSTM's
registry entry names, replaces each LSTM by an `IntegerLSTM` of the same name
and weights. `lstm_refusal` says, before training, why a particular LSTM
cannot be (an unknown number of time steps, a mask, state carried between
batches).
"""

from __future__ import annotations

from typing import Any

from tfjoint import errors
from tfjoint._keras import keras, serializable, tf
from tfjoint.registry.points import PointsMixin

__all__ = ["IntegerLSTM", "IntegerBidirectionalLSTM", "lstm_refusal", "bidirectional_refusal",
           "bidirectional_from_layer", "LSTM_OPERATORS"]

# The operators an IntegerLSTM converts to (PACK with return_sequences).
LSTM_OPERATORS = ("UNPACK", "FULLY_CONNECTED", "STRIDED_SLICE", "ADD", "SPLIT", "LOGISTIC", "TANH", "MUL", "PACK")
_ACTIVATIONS = {"activation": "tanh", "recurrent_activation": "sigmoid"}


@serializable
class IntegerLSTM(PointsMixin, keras.layers.Layer):
    """A Keras LSTM's inference, unrolled over its (fixed) time steps, with a quantization point per operator.

    Weights and gate order (input, forget, cell, output) are Keras's: `kernel`
    (features, 4 units), `recurrent_kernel` (units, 4 units), `bias` (4 units).

    Args:
      units: hidden units.
      return_sequences: return every step's hidden state (batch, steps,
        units), else the last one's.
      go_backwards: run over the steps in reverse.
      use_bias: whether the gates have a bias.
    """

    POINTS = (("input_gates", "range"), ("recurrent_gates", "range"), ("gates", "range"),
              ("input_gate", "sigmoid"), ("forget_gate", "sigmoid"), ("candidate", "tanh"),
              ("output_gate", "sigmoid"), ("new_cell", "range"), ("kept_cell", "range"), ("cell", "range"),
              ("cell_activation", "tanh"), ("hidden", "range"))

    def __init__(self, units: int, return_sequences: bool = False, go_backwards: bool = False, use_bias: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.go_backwards = bool(go_backwards)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        _add_cell_weights(self, "", int(input_shape[-1]))
        super().build(input_shape)

    def call(self, inputs):
        outputs = _unrolled(self, tf.unstack(inputs, num=inputs.shape[1], axis=1), "", self.go_backwards)
        return tf.stack(outputs, axis=1) if self.return_sequences else outputs[-1]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape(shape[:2] + [self.units] if self.return_sequences else [shape[0], self.units])

    def get_config(self):
        return dict(super().get_config(), units=self.units, return_sequences=self.return_sequences,
                    go_backwards=self.go_backwards, use_bias=self.use_bias)


def _add_cell_weights(layer, prefix: str, features: int) -> None:
    """An LSTM cell's weights on `layer`, in Keras's order: `<prefix>kernel`, `<prefix>recurrent_kernel`,
    `<prefix>bias` (None without a bias)."""
    units = layer.units
    setattr(layer, f"{prefix}kernel", layer.add_weight(f"{prefix}kernel", shape=(features, 4 * units),
                                                       initializer="glorot_uniform"))
    setattr(layer, f"{prefix}recurrent_kernel", layer.add_weight(f"{prefix}recurrent_kernel", shape=(units, 4 * units),
                                                                 initializer="orthogonal"))
    setattr(layer, f"{prefix}bias", layer.add_weight(f"{prefix}bias", shape=(4 * units,), initializer="zeros")
            if layer.use_bias else None)


def _step(layer, prefix: str, z, hidden, cell):
    """One LSTM step on `layer`'s weights and quantization points named with `prefix`."""
    units = layer.units

    def point(name, value):
        return layer.point(prefix + name, value)

    if hidden is None:  # the first step: no state, no forget gate (a SPLIT with an unused output stays float)
        i, f, g, o = z[:, :units], None, z[:, 2 * units:3 * units], z[:, 3 * units:]
    else:
        recurrent = tf.matmul(hidden, layer.weight(prefix + "recurrent_kernel"))
        z = point("gates", z + point("recurrent_gates", recurrent))
        i, f, g, o = tf.split(z, 4, axis=-1)
    i = point("input_gate", tf.sigmoid(i))
    g = point("candidate", tf.tanh(g))
    o = point("output_gate", tf.sigmoid(o))
    new = point("new_cell", i * g)
    if cell is not None:
        f = point("forget_gate", tf.sigmoid(f))
        new = point("cell", point("kept_cell", f * cell) + new)
    return point("hidden", o * point("cell_activation", tf.tanh(new))), new


def _unrolled(layer, per_step: list, prefix: str, go_backwards: bool) -> list:
    """The hidden state after each step, in the order the steps ran.

    Step by step, the input projection too: a reshape that merges the batch
    and time axes would be planned for one sample by TFLM whatever the batch
    (its RESHAPE checks the element counts).
    """
    hidden = cell = None
    outputs = []
    for x in (per_step[::-1] if go_backwards else per_step):
        z = tf.matmul(x, layer.weight(prefix + "kernel"))
        if layer.use_bias:
            z = z + layer.weight(prefix + "bias")
        hidden, cell = _step(layer, prefix, layer.point(prefix + "input_gates", z), hidden, cell)
        outputs.append(hidden)
    return outputs


_MERGES = ("concat", "sum", "ave", "mul")


@serializable
class IntegerBidirectionalLSTM(PointsMixin, keras.layers.Layer):
    """A Keras `Bidirectional(LSTM)`'s inference: both directions unrolled as `IntegerLSTM` computes them, merged.

    Weights in Bidirectional's order: `forward_kernel`,
    `forward_recurrent_kernel`, `forward_bias`, then the same for `backward_`.
    With `return_sequences`, the backward direction's outputs are put back in
    time order before merging, as Keras does.

    Args:
      units: hidden units of each direction.
      return_sequences: every step's merged state, else the last ones'.
      merge_mode: "concat", "sum", "ave" or "mul".
      use_bias: whether the gates have a bias.
    """

    POINTS = tuple((f"{direction}_{name}", kind) for direction in ("forward", "backward")
                   for name, kind in IntegerLSTM.POINTS) + (("merged", "range"),)

    def __init__(self, units: int, return_sequences: bool = False, merge_mode: str = "concat", use_bias: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.merge_mode = str(merge_mode)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        for direction in ("forward_", "backward_"):
            _add_cell_weights(self, direction, int(input_shape[-1]))
        super().build(input_shape)

    def _merge(self, forward, backward):
        if self.merge_mode == "concat":
            merged = tf.concat([forward, backward], axis=-1)
        elif self.merge_mode == "sum":
            merged = forward + backward
        elif self.merge_mode == "ave":
            merged = (forward + backward) * 0.5
        else:
            merged = forward * backward
        return self.point("merged", merged)

    def call(self, inputs):
        per_step = tf.unstack(inputs, num=inputs.shape[1], axis=1)
        forward = _unrolled(self, per_step, "forward_", False)
        backward = _unrolled(self, per_step, "backward_", True)
        if not self.return_sequences:
            return self._merge(forward[-1], backward[-1])
        return tf.stack([self._merge(f, b) for f, b in zip(forward, backward[::-1])], axis=1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        width = 2 * self.units if self.merge_mode == "concat" else self.units
        return tf.TensorShape(shape[:2] + [width] if self.return_sequences else [shape[0], width])

    def get_config(self):
        return dict(super().get_config(), units=self.units, return_sequences=self.return_sequences,
                    merge_mode=self.merge_mode, use_bias=self.use_bias)


def bidirectional_refusal(layer) -> str | None:
    """Why this Bidirectional cannot become an `IntegerBidirectionalLSTM` (and what to do), or None."""
    forward: Any = getattr(layer, "forward_layer", None)
    if type(forward).__name__ != "LSTM":
        return (f"it wraps a {type(forward).__name__}: tfjoint runs a Bidirectional LSTM as integer operators, and "
                "no other recurrent layer (use LSTM inside it, or a dilated Conv1D block)")
    if layer.merge_mode not in _MERGES:
        return f"its merge_mode is {layer.merge_mode!r}: use one of {', '.join(_MERGES)}"
    backward = layer.backward_layer.get_config()
    for key in ("units", "return_sequences", "use_bias", "activation", "recurrent_activation"):
        if backward.get(key) != forward.get_config().get(key):
            return f"its backward LSTM differs from the forward one in {key}: give both directions the same layer"
    return lstm_refusal(layer, forward.get_config())


def bidirectional_from_layer(layer) -> IntegerBidirectionalLSTM:
    """The `IntegerBidirectionalLSTM` a Bidirectional(LSTM) computes, with its name (its weights carry over)."""
    config = layer.forward_layer.get_config()
    return IntegerBidirectionalLSTM(config["units"], return_sequences=config.get("return_sequences", False),
                                    merge_mode=layer.merge_mode, use_bias=config.get("use_bias", True),
                                    name=layer.name, trainable=layer.trainable)


_LSTM_ARGUMENTS = ("units", "activation", "recurrent_activation", "use_bias", "return_sequences", "return_state",
                   "stateful", "unit_forget_bias")


def bidirectional_from_keras3(config: dict, layer3) -> keras.layers.Layer:
    """The tf_keras Bidirectional(LSTM) a Keras 3 Bidirectional config describes (the bridge copies its weights).

    A Keras 3 config nests its LSTM's Keras 3 config, which tf_keras cannot
    read; the arguments the integer cell depends on are carried over, and
    `prepare` then checks them (`bidirectional_refusal`).
    """
    inner = config["layer"]
    if inner.get("class_name") != "LSTM":
        raise errors.UnsupportedLayerError(
            f"layer '{config['name']}' (Bidirectional) wraps a {inner.get('class_name')}: tfjoint runs a Bidirectional "
            "LSTM as integer operators, and no other recurrent layer (use LSTM inside it, or a dilated Conv1D block).")
    arguments = {key: inner["config"][key] for key in _LSTM_ARGUMENTS if key in inner["config"]}
    return keras.layers.Bidirectional(keras.layers.LSTM(**arguments), merge_mode=config.get("merge_mode", "concat"),
                                      name=config["name"])


def _activation_name(value) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", str(value))


def lstm_refusal(layer, config: dict | None = None) -> str | None:
    """Why this LSTM cannot become an `IntegerLSTM` (and what to do), or None.

    `layer` is the layer in the model (its input shape and mask); `config`
    the LSTM's (default: the layer's own; a Bidirectional passes its inner
    LSTM's).
    """
    steps = layer.input_shape[1] if isinstance(layer.input_shape, tuple) and len(layer.input_shape) == 3 else None
    if steps is None:
        return ("its number of time steps is not fixed (the integer LSTM is unrolled over them): give the model's "
                "Input a fixed sequence length, e.g. keras.Input((steps, features)), padding shorter sequences")
    config = layer.get_config() if config is None else config
    for key, expected in _ACTIVATIONS.items():
        if _activation_name(config.get(key)) != expected:
            return (f"its {key} is {_activation_name(config.get(key))!r}: TFLite's integer LSTM cell is built from "
                    f"{expected}; use the default {key}='{expected}' and fine-tune")
    if config.get("stateful"):
        return "it is stateful (state carried between batches): a deployed model has no such state; use stateful=False"
    if config.get("return_state"):
        return "it returns its state as extra outputs: use return_state=False (return_sequences=True gives every step)"
    if config.get("time_major"):
        return "it is time-major: use batch-major inputs (time_major=False)"
    if getattr(layer, "supports_masking", False) and layer.input_mask is not None:
        return ("its input carries a mask (Masking, or an Embedding with mask_zero=True): the integer LSTM runs "
                "every step; pad with values the model learns to ignore, without a mask")
    return None
