"""LSTM and GRU as the integer operators TFLite and TFLM run well, fake-quantized where they quantize.

TFLite's fused int8 `UNIDIRECTIONAL_SEQUENCE_LSTM` takes its internal ranges
from the converter's calibration, which loses LSTM models to chance level
(a Conv1D+LSTM classifier at 96.5% in Keras scored ~50% in int8, in LiteRT and
TFLM alike), and QAT cannot reach its 16-bit cell state; TFLM has no GRU
kernel at all. The same weights as a cell of FULLY_CONNECTED, ADD, SUB,
SPLIT, LOGISTIC, TANH and MUL operators are int8 in every runtime, TFLM
included. `IntegerLSTM` and `IntegerGRU` compute exactly that cell in Keras,
with a quantization point (`tfjoint.registry.points`) at every operator's
output, so QAT trains the ranges the file uses and the int8 file computes what
the quantization-aware model computed. A sequence's first step has no state
(no recurrent projection, no forget gate: fewer operators, and no float
zeros for the converter to keep); a file that runs one frame per call
(`tfjoint.tflite.streaming`) runs the full cell from a zero state instead, which
differs from it by the rounding of two requantizations on that first step.

How the time steps run:

* while training and in Keras, as a symbolic loop (`tf.while_loop`): tracing
  does not grow with the number of steps;
* in the whole-sequence int8 file, unrolled (the converter quantizes no
  control flow): `unrolled(model)` switches a model's recurrent layers to
  that while it is converted;
* in a streaming file, one step per call, the state kept between calls
  (`step`).

The layers carry the Keras layer's training settings: dropout and
recurrent dropout (one mask per sequence, as Keras draws them), regularizers
and constraints. `LSTMAsIntegerCells` and `GRUAsIntegerCells`, the layout
rewrites their registry entries name, replace each Keras layer by one of the
same name and weights; `lstm_refusal` and `gru_refusal` say, before training,
why a particular one cannot be (an unknown number of time steps, a mask,
state carried between batches, another activation).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from tfjoint import errors
from tfjoint._keras import keras, serializable, tf
from tfjoint.registry.points import PointsMixin

__all__ = ["IntegerLSTM", "IntegerGRU", "IntegerBidirectionalLSTM", "lstm_refusal", "gru_refusal",
           "bidirectional_refusal", "bidirectional_from_layer", "bidirectional_from_keras3", "unrolled",
           "recurrent_settings", "recurrent_layers", "LSTM_OPERATORS", "GRU_OPERATORS", "RECURRENT_SETTINGS"]

# The operators the cells convert to (PACK with return_sequences).
LSTM_OPERATORS = ("UNPACK", "FULLY_CONNECTED", "STRIDED_SLICE", "ADD", "SPLIT", "LOGISTIC", "TANH", "MUL", "PACK")
GRU_OPERATORS = ("UNPACK", "FULLY_CONNECTED", "STRIDED_SLICE", "ADD", "SUB", "SPLIT", "LOGISTIC", "TANH", "MUL",
                 "PACK")
_ACTIVATIONS = {"activation": "tanh", "recurrent_activation": "sigmoid"}
# The Keras layer's training settings a cell carries (its config keys).
RECURRENT_SETTINGS = ("dropout", "recurrent_dropout", "kernel_regularizer", "recurrent_regularizer",
                      "bias_regularizer", "activity_regularizer", "kernel_constraint", "recurrent_constraint",
                      "bias_constraint")
_REGULARIZERS = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer")
_CONSTRAINTS = ("kernel_constraint", "recurrent_constraint", "bias_constraint")


def recurrent_settings(config: dict) -> dict[str, Any]:
    """The training settings of a Keras LSTM/GRU config that a cell carries (absent ones left out)."""
    return {key: config[key] for key in RECURRENT_SETTINGS if config.get(key) not in (None, 0, 0.0)}


class _IntegerRecurrent(PointsMixin, keras.layers.Layer):
    """What the integer cells share: settings, dropout masks, the loop over the steps, and the state.

    Subclasses give `GATES` (the kernel's width in units), `STATE` (the state
    tensors, hidden first), `POINTS`, and `_cell(prefix, x, state, masks) ->
    (hidden, state)`.
    """

    GATES = 4
    STATE: tuple[str, ...] = ("hidden",)

    def __init__(self, units: int, return_sequences: bool = False, go_backwards: bool = False, use_bias: bool = True,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, unroll: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.go_backwards = bool(go_backwards)
        self.use_bias = bool(use_bias)
        self.dropout = min(1.0, max(0.0, float(dropout)))
        self.recurrent_dropout = min(1.0, max(0.0, float(recurrent_dropout)))
        for name in _REGULARIZERS:
            setattr(self, name, keras.regularizers.get(locals()[name]))
        for name in _CONSTRAINTS:
            setattr(self, name, keras.constraints.get(locals()[name]))
        self.unroll = bool(unroll)

    def _cell_weights(self, prefix: str, features: int) -> None:
        """A cell's weights in Keras's order: `<prefix>kernel`, `<prefix>recurrent_kernel`, `<prefix>bias`."""
        width = self.GATES * self.units
        setattr(self, f"{prefix}kernel", self.add_weight(
            f"{prefix}kernel", shape=(features, width), initializer="glorot_uniform",
            regularizer=self.kernel_regularizer, constraint=self.kernel_constraint))
        setattr(self, f"{prefix}recurrent_kernel", self.add_weight(
            f"{prefix}recurrent_kernel", shape=(self.units, width), initializer="orthogonal",
            regularizer=self.recurrent_regularizer, constraint=self.recurrent_constraint))
        setattr(self, f"{prefix}bias", self.add_weight(
            f"{prefix}bias", shape=self._bias_shape(), initializer="zeros", regularizer=self.bias_regularizer,
            constraint=self.bias_constraint) if self.use_bias else None)

    def _bias_shape(self) -> tuple[int, ...]:
        return (self.GATES * self.units,)

    # --- The loop over the steps ---------------------------------------------------------------------------------

    def _masks(self, inputs, training) -> tuple[Any, Any]:
        """Dropout masks for the inputs and the hidden state, drawn once per sequence (None outside training)."""
        if not training:
            return None, None
        batch = tf.shape(inputs)[0]

        def mask(rate, width):
            if rate <= 0:
                return None
            return tf.nn.dropout(tf.ones((batch, width), inputs.dtype), rate=rate)

        return mask(self.dropout, int(inputs.shape[-1])), mask(self.recurrent_dropout, self.units)

    def zero_state(self, batch) -> list:
        """The state every sequence starts from (zeros; what a streaming file's reset sets)."""
        return [tf.zeros((batch, self.units), self.compute_dtype) for _ in self.STATE]

    def _run(self, prefix: str, inputs, state: list | None, masks, backwards: bool):
        """Every step's hidden state (time-major, in the order the steps ran, or None if not kept), and the final
        state: unrolled (while converting) or as a symbolic loop. `state` None: a sequence's first step, stateless.
        """
        steps = int(inputs.shape[1]) if inputs.shape[1] is not None else None
        if self.unroll or steps == 1:
            outputs = []
            for x in (tf.unstack(inputs, num=steps, axis=1)[::-1] if backwards else
                      tf.unstack(inputs, num=steps, axis=1)):
                hidden, state = self._cell(prefix, x, state, masks)
                outputs.append(hidden)
            return (tf.stack(outputs) if self.return_sequences else None), state
        sequence = tf.transpose(inputs, [1, 0, 2])
        if backwards:
            sequence = tf.reverse(sequence, [0])
        first = None
        if state is None:  # the first step, peeled: it has no state
            first, state = self._cell(prefix, sequence[0], None, masks)
            sequence = sequence[1:]
        length = tf.shape(sequence)[0]
        kept = tf.TensorArray(self.compute_dtype, size=length) if self.return_sequences else None

        def body(t, *carried):
            hidden, new_state = self._cell(prefix, sequence[t], list(carried[:len(self.STATE)]), masks)
            rest = (carried[len(self.STATE)].write(t, hidden),) if kept is not None else ()
            return (t + 1, *new_state, *rest)

        loop = tf.while_loop(lambda t, *_: t < length, body, (tf.constant(0), *state, *((kept,) if kept else ())),
                             maximum_iterations=None if steps is None else steps - (first is not None))
        final = list(loop[1:1 + len(self.STATE)])
        if kept is None:
            return None, final
        outputs = loop[-1].stack()
        outputs = outputs if first is None else tf.concat([first[None], outputs], 0)
        outputs.set_shape([steps, inputs.shape[0], self.units])  # the loop's output has no static length
        return outputs, final

    def call(self, inputs, training=None, initial_state=None):
        state = list(initial_state) if initial_state is not None else None
        sequence, final = self._run("", inputs, state, self._masks(inputs, training), self.go_backwards)
        output = tf.transpose(sequence, [1, 0, 2]) if self.return_sequences else final[0]
        return [output] + final if initial_state is not None else output

    def step(self, frame, state: list):
        """One step on `frame` (batch, features) from `state`: (hidden, new state). What a streaming file runs."""
        return self._cell("", frame, list(state), (None, None))

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape(shape[:2] + [self.units] if self.return_sequences else [shape[0], self.units])

    def get_config(self):
        config = dict(super().get_config(), units=self.units, return_sequences=self.return_sequences,
                      go_backwards=self.go_backwards, use_bias=self.use_bias, dropout=self.dropout,
                      recurrent_dropout=self.recurrent_dropout, unroll=self.unroll)
        for name in _REGULARIZERS:
            config[name] = keras.regularizers.serialize(getattr(self, name)) if getattr(self, name) else None
        for name in _CONSTRAINTS:
            config[name] = keras.constraints.serialize(getattr(self, name)) if getattr(self, name) else None
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = keras.regularizers.serialize(self.activity_regularizer)
        return config


def _dropped(x, mask):
    return x if mask is None else x * mask


def _lstm_cell(layer, prefix: str, x, state: list | None, masks):
    """One LSTM step (Keras's gate order: input, forget, cell, output) with a point at every operator's output;
    `state` None: a sequence's first step (no recurrent projection, no forget gate)."""
    units = layer.units

    def point(name, value):
        return layer.point(prefix + name, value)

    z = tf.matmul(_dropped(x, masks[0]), layer.weight(prefix + "kernel"))
    if layer.use_bias:
        z = z + layer.weight(prefix + "bias")
    z = point("input_gates", z)
    if state is None:  # slices, not a SPLIT: a SPLIT with an unused output (the forget gate) stays float
        i, g, o = z[:, :units], z[:, 2 * units:3 * units], z[:, 3 * units:]
    else:
        recurrent = tf.matmul(_dropped(state[0], masks[1]), layer.weight(prefix + "recurrent_kernel"))
        i, f, g, o = tf.split(point("gates", z + point("recurrent_gates", recurrent)), 4, axis=-1)
    i = point("input_gate", tf.sigmoid(i))
    g = point("candidate", tf.tanh(g))
    o = point("output_gate", tf.sigmoid(o))
    new_cell = point("new_cell", i * g)
    if state is not None:
        f = point("forget_gate", tf.sigmoid(f))
        new_cell = point("cell", point("kept_cell", f * state[1]) + new_cell)
    new_hidden = point("hidden", o * point("cell_activation", tf.tanh(new_cell)))
    return new_hidden, [new_hidden, new_cell]


_LSTM_POINTS: tuple[tuple[str, str], ...] = (("input_gates", "range"), ("recurrent_gates", "range"), ("gates", "range"),
                ("input_gate", "sigmoid"), ("forget_gate", "sigmoid"), ("candidate", "tanh"),
                ("output_gate", "sigmoid"), ("new_cell", "range"), ("kept_cell", "range"), ("cell", "range"),
                ("cell_activation", "tanh"), ("hidden", "range"))


@serializable
class IntegerLSTM(_IntegerRecurrent):
    """A Keras LSTM's computation as integer operators with a quantization point per operator.

    Weights and gate order (input, forget, cell, output) are Keras's: `kernel`
    (features, 4 units), `recurrent_kernel` (units, 4 units), `bias` (4 units).

    Args:
      units: hidden units.
      return_sequences: return every step's hidden state (batch, steps,
        units), else the last one's.
      go_backwards: run over the steps in reverse.
      use_bias: whether the gates have a bias.
      dropout, recurrent_dropout, *_regularizer, *_constraint: the Keras
        LSTM's training settings.
      unroll: run the steps as unrolled operators (the converter's form)
        rather than a symbolic loop.
    """

    STANDS_FOR = "LSTM"  # the Keras class it replaces, for messages

    GATES = 4
    STATE = ("hidden", "cell")
    POINTS: tuple[tuple[str, str], ...] = _LSTM_POINTS

    def build(self, input_shape):
        self._cell_weights("", int(input_shape[-1]))
        super().build(input_shape)

    def _cell(self, prefix, x, state, masks):
        return _lstm_cell(self, prefix, x, state, masks)


def _gru_cell(layer, prefix: str, x, state: list | None, masks):
    """One GRU step (Keras's gate order: update, reset, candidate), `reset_after` as the layer says; `state`
    None: a sequence's first step (a zero state: the recurrent projection is its bias alone)."""
    units = layer.units

    def point(name, value):
        return layer.point(prefix + name, value)

    bias = layer.weight(prefix + "bias") if layer.use_bias else None
    input_bias, recurrent_bias = (bias[0], bias[1]) if bias is not None and layer.reset_after else (bias, None)
    kernel = layer.weight(prefix + "kernel")
    recurrent_kernel = layer.weight(prefix + "recurrent_kernel")
    if state is None and recurrent_bias is None:
        # A first step with nothing recurrent to add (reset_after=False, or no bias): a SPLIT whose outputs feed
        # LOGISTIC and TANH directly is requantized through float by the converter; one projection per gate is not.
        def gate(index):
            part = tf.matmul(_dropped(x, masks[0]), kernel[:, index * units:(index + 1) * units])
            return part + input_bias[index * units:(index + 1) * units] if input_bias is not None else part

        z = point("update_gate", tf.sigmoid(point("update_sum", gate(0))))
        candidate = point("candidate", tf.tanh(point("candidate_sum", gate(2))))
        new_hidden = point("hidden", candidate - point("kept", z * candidate))
        return new_hidden, [new_hidden]
    projected = tf.matmul(_dropped(x, masks[0]), kernel)
    if input_bias is not None:
        projected = projected + input_bias
    x_z, x_r, x_h = tf.split(point("input_gates", projected), 3, axis=-1)
    if state is None:  # a recurrent bias to add (reset_after=True): the zero state's recurrent projection
        zero = recurrent_bias
        assert zero is not None  # the branch above took the first steps without one
        z = point("update_gate", tf.sigmoid(point("update_sum", x_z + zero[:units])))
        r = point("reset_gate", tf.sigmoid(point("reset_sum", x_r + zero[units:2 * units])))
        reset = point("reset_recurrent", r * zero[2 * units:])
        candidate = point("candidate", tf.tanh(point("candidate_sum", x_h + reset)))
        new_hidden = point("hidden", candidate - point("kept", z * candidate))  # z * 0 + (1 - z) * candidate
        return new_hidden, [new_hidden]
    hidden_in = _dropped(state[0], masks[1])
    if layer.reset_after:
        recurrent = tf.matmul(hidden_in, recurrent_kernel)
        if recurrent_bias is not None:
            recurrent = recurrent + recurrent_bias
        r_z, r_r, r_h = tf.split(point("recurrent_gates", recurrent), 3, axis=-1)
    else:
        r_z, r_r = tf.split(point("recurrent_gates", tf.matmul(hidden_in, recurrent_kernel[:, :2 * units])), 2,
                            axis=-1)
    z = point("update_gate", tf.sigmoid(point("update_sum", x_z + r_z)))
    r = point("reset_gate", tf.sigmoid(point("reset_sum", x_r + r_r)))
    if layer.reset_after:
        reset = point("reset_recurrent", r * r_h)
    else:
        reset = point("reset_recurrent", tf.matmul(point("reset_hidden", r * hidden_in),
                                                   recurrent_kernel[:, 2 * units:]))
    candidate = point("candidate", tf.tanh(point("candidate_sum", x_h + reset)))
    # h' = z * h + (1 - z) * candidate = candidate + z * (h - candidate)
    new_hidden = point("hidden", candidate + point("kept", z * point("difference", state[0] - candidate)))
    return new_hidden, [new_hidden]


@serializable
class IntegerGRU(_IntegerRecurrent):
    """A Keras GRU's computation as integer operators with a quantization point per operator (TFLM has no GRU).

    Weights and gate order (update, reset, candidate) are Keras's: `kernel`
    (features, 3 units), `recurrent_kernel` (units, 3 units), `bias` (3 units,
    or (2, 3 units) with `reset_after`: the input and the recurrent bias).

    Args:
      units, return_sequences, go_backwards, use_bias, dropout,
        recurrent_dropout, *_regularizer, *_constraint, unroll: as
        `IntegerLSTM`'s.
      reset_after: apply the reset gate after the recurrent projection
        (Keras's default, and cuDNN's), else before it.
    """

    STANDS_FOR = "GRU"  # the Keras class it replaces, for messages

    GATES = 3
    STATE = ("hidden",)
    POINTS = (("input_gates", "range"), ("recurrent_gates", "range"), ("update_sum", "range"),
              ("update_gate", "sigmoid"), ("reset_sum", "range"), ("reset_gate", "sigmoid"),
              ("reset_hidden", "range"), ("reset_recurrent", "range"), ("candidate_sum", "range"),
              ("candidate", "tanh"), ("difference", "range"), ("kept", "range"), ("hidden", "range"))

    def __init__(self, units: int, reset_after: bool = True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)

    def _bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def build(self, input_shape):
        self._cell_weights("", int(input_shape[-1]))
        super().build(input_shape)

    def _cell(self, prefix, x, state, masks):
        return _gru_cell(self, prefix, x, state, masks)

    def get_config(self):
        return dict(super().get_config(), reset_after=self.reset_after)


_MERGES = ("concat", "sum", "ave", "mul")


@serializable
class IntegerBidirectionalLSTM(IntegerLSTM):
    """A Keras `Bidirectional(LSTM)`'s inference: both directions as `IntegerLSTM` computes them, merged.

    Weights in Bidirectional's order: `forward_kernel`,
    `forward_recurrent_kernel`, `forward_bias`, then the same for `backward_`.
    With `return_sequences`, the backward direction's outputs are put back in
    time order before merging, as Keras does. Not streamable: its backward
    direction needs the whole sequence.

    Args:
      units: hidden units of each direction.
      return_sequences: every step's merged state, else the last ones'.
      merge_mode: "concat", "sum", "ave" or "mul".
      use_bias, dropout, recurrent_dropout, *_regularizer, *_constraint,
        unroll: as `IntegerLSTM`'s.
    """

    STANDS_FOR = "Bidirectional"  # the Keras class it replaces, for messages

    POINTS = tuple((f"{direction}_{name}", kind) for direction in ("forward", "backward")
                   for name, kind in _LSTM_POINTS) + (("merged", "range"),)

    def __init__(self, units: int, return_sequences: bool = False, merge_mode: str = "concat", **kwargs):
        kwargs.pop("go_backwards", None)
        super().__init__(units, return_sequences=return_sequences, **kwargs)
        self.merge_mode = str(merge_mode)

    def build(self, input_shape):
        for direction in ("forward_", "backward_"):
            self._cell_weights(direction, int(input_shape[-1]))
        keras.layers.Layer.build(self, input_shape)

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

    def call(self, inputs, training=None, initial_state=None):
        if initial_state is not None:
            raise errors.UnsupportedLayerError(f"layer '{self.name}' (Bidirectional LSTM) cannot run one step at a "
                                               "time: its backward direction needs the whole sequence.")
        masks = self._masks(inputs, training)
        forward, forward_state = self._run("forward_", inputs, None, masks, False)
        backward, backward_state = self._run("backward_", inputs, None, masks, True)
        if not self.return_sequences:
            return self._merge(forward_state[0], backward_state[0])
        merged = self._merge(forward, tf.reverse(backward, [0]))  # time-major; backward put back in time order
        return tf.transpose(merged, [1, 0, 2])

    def _cell(self, prefix, x, state, masks):
        return _lstm_cell(self, prefix, x, state, masks)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        width = 2 * self.units if self.merge_mode == "concat" else self.units
        return tf.TensorShape(shape[:2] + [width] if self.return_sequences else [shape[0], width])

    def get_config(self):
        config = super().get_config()
        config.pop("go_backwards", None)
        return dict(config, merge_mode=self.merge_mode)


def recurrent_layers() -> tuple[type, ...]:
    """The classes of tfjoint's integer recurrent layers (what runs its steps in a loop, and keeps a state)."""
    return (_IntegerRecurrent,)


@contextlib.contextmanager
def unrolled(model) -> Iterator[None]:
    """Within the block, `model`'s integer recurrent layers run their steps unrolled (the converter's form)."""
    from tfjoint.registry.table import unwrapped

    layers = [unwrapped(layer) for layer in model.layers]
    recurrent = [layer for layer in layers if isinstance(layer, _IntegerRecurrent) and not layer.unroll]
    for layer in recurrent:
        layer.unroll = True
    try:
        yield
    finally:
        for layer in recurrent:
            layer.unroll = False


def bidirectional_refusal(layer) -> str | None:
    """Why this Bidirectional cannot become an `IntegerBidirectionalLSTM` (and what to do), or None."""
    forward: Any = getattr(layer, "forward_layer", None)
    if type(forward).__name__ != "LSTM":
        return (f"it wraps a {type(forward).__name__}: tfjoint runs a Bidirectional LSTM as integer operators, and "
                "no other bidirectional recurrent layer (use LSTM inside it, or a GRU in one direction)")
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
                                    name=layer.name, trainable=layer.trainable, **recurrent_settings(config))


_LSTM_ARGUMENTS = ("units", "activation", "recurrent_activation", "use_bias", "return_sequences", "return_state",
                   "stateful", "unit_forget_bias") + RECURRENT_SETTINGS


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
            "LSTM as integer operators, and no other bidirectional recurrent layer (use LSTM inside it).")
    arguments = {key: inner["config"][key] for key in _LSTM_ARGUMENTS if key in inner["config"]}
    for key in RECURRENT_SETTINGS[2:]:  # Keras 3 regularizer and constraint configs: built-in ones only
        if isinstance(arguments.get(key), dict):
            arguments[key] = {"class_name": arguments[key].get("class_name"), "config": arguments[key].get("config")}
    return keras.layers.Bidirectional(keras.layers.LSTM(**arguments), merge_mode=config.get("merge_mode", "concat"),
                                      name=config["name"])


def _activation_name(value) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", str(value))


def _refusal(layer, config: dict, kind: str) -> str | None:
    steps = layer.input_shape[1] if isinstance(layer.input_shape, tuple) and len(layer.input_shape) == 3 else None
    if steps is None:
        return ("its number of time steps is not fixed (the whole-sequence file unrolls them): give the model's "
                "Input a fixed sequence length, e.g. keras.Input((steps, features)), padding shorter sequences")
    for key, expected in _ACTIVATIONS.items():
        if _activation_name(config.get(key)) != expected:
            return (f"its {key} is {_activation_name(config.get(key))!r}: the integer {kind} cell is built from "
                    f"{expected} (TFLite's int8 {expected.upper() if expected == 'tanh' else 'LOGISTIC'}); use the "
                    f"default {key}='{expected}' and fine-tune")
    if config.get("stateful"):
        return ("it is stateful (state carried between batches): the file starts every sequence from a zero state; "
                "use stateful=False, and ExportOptions(streaming=True) for a file that keeps its state between calls")
    if config.get("return_state"):
        return "it returns its state as extra outputs: use return_state=False (return_sequences=True gives every step)"
    if config.get("time_major"):
        return "it is time-major: use batch-major inputs (time_major=False)"
    if getattr(layer, "supports_masking", False) and layer.input_mask is not None:
        return (f"its input carries a mask (Masking, or an Embedding with mask_zero=True): the integer {kind} runs "
                "every step; pad with values the model learns to ignore, without a mask")
    return None


def lstm_refusal(layer, config: dict | None = None) -> str | None:
    """Why this LSTM cannot become an `IntegerLSTM` (and what to do), or None.

    `layer` is the layer in the model (its input shape and mask); `config`
    the LSTM's (default: the layer's own; a Bidirectional passes its inner
    LSTM's).
    """
    return _refusal(layer, layer.get_config() if config is None else config, "LSTM")


def gru_refusal(layer) -> str | None:
    """Why this GRU cannot become an `IntegerGRU` (and what to do), or None."""
    return _refusal(layer, layer.get_config(), "GRU")
