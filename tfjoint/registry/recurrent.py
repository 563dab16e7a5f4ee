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

from tfjoint._keras import keras, serializable, tf
from tfjoint.registry.points import PointsMixin

__all__ = ["IntegerLSTM", "lstm_refusal", "LSTM_OPERATORS"]

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
        features = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", shape=(features, 4 * self.units), initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight("recurrent_kernel", shape=(self.units, 4 * self.units),
                                                initializer="orthogonal")
        self.bias = self.add_weight("bias", shape=(4 * self.units,), initializer="zeros") if self.use_bias else None
        super().build(input_shape)

    def _step(self, z, hidden, cell):
        units = self.units
        if hidden is None:  # the first step: no state, no forget gate (a SPLIT with an unused output stays float)
            i, f, g, o = z[:, :units], None, z[:, 2 * units:3 * units], z[:, 3 * units:]
        else:
            recurrent = tf.matmul(hidden, self.weight("recurrent_kernel"))
            z = self.point("gates", z + self.point("recurrent_gates", recurrent))
            i, f, g, o = tf.split(z, 4, axis=-1)
        i = self.point("input_gate", tf.sigmoid(i))
        g = self.point("candidate", tf.tanh(g))
        o = self.point("output_gate", tf.sigmoid(o))
        new = self.point("new_cell", i * g)
        if cell is not None:
            f = self.point("forget_gate", tf.sigmoid(f))
            new = self.point("cell", self.point("kept_cell", f * cell) + new)
        return self.point("hidden", o * self.point("cell_activation", tf.tanh(new))), new

    def call(self, inputs):
        # Step by step, the input projection too: a reshape that merges the batch and time axes would be planned
        # for one sample by TFLM whatever the batch (its RESHAPE checks the element counts).
        per_step = tf.unstack(inputs, num=inputs.shape[1], axis=1)
        if self.go_backwards:
            per_step = per_step[::-1]
        hidden = cell = None
        outputs = []
        for x in per_step:
            z = tf.matmul(x, self.weight("kernel"))
            if self.bias is not None:
                z = z + self.weight("bias")
            hidden, cell = self._step(self.point("input_gates", z), hidden, cell)
            outputs.append(hidden)
        return tf.stack(outputs, axis=1) if self.return_sequences else hidden

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape(shape[:2] + [self.units] if self.return_sequences else [shape[0], self.units])

    def get_config(self):
        return dict(super().get_config(), units=self.units, return_sequences=self.return_sequences,
                    go_backwards=self.go_backwards, use_bias=self.use_bias)


def _activation_name(value) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", str(value))


def lstm_refusal(layer) -> str | None:
    """Why this LSTM cannot become an `IntegerLSTM` (and what to do), or None."""
    steps = layer.input_shape[1] if isinstance(layer.input_shape, tuple) and len(layer.input_shape) == 3 else None
    if steps is None:
        return ("its number of time steps is not fixed (the integer LSTM is unrolled over them): give the model's "
                "Input a fixed sequence length, e.g. keras.Input((steps, features)), padding shorter sequences")
    config = layer.get_config()
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
