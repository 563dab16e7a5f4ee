"""Which layer did it: the error every int8 layer with weights adds on its own, and the error so far.

The int8 file runs once in LiteRT with `experimental_preserve_all_tensors=True`
(and without XNNPACK, which would fuse operators away), so every intermediate
tensor can be read back, as google-ai-edge/ai-edge-quantizer does. Operators
are matched to the Keras layers they were converted from by their tensor
names: a layer with weights owns the operators that hold its weights (a
convolution's, or the FULLY_CONNECTEDs of an unrolled LSTM) and those its
name appears on between them; the earliest of them gives the layer's input,
the last the output, through the last layer fused into it (a Conv ->
BatchNorm -> ReLU block is one operator). Each entry is named by the user's
layer: the producer, never a BatchNorm folded into it.

* Own error: that chain of Keras layers is applied to the operator's own
  input, dequantized from int8, and compared with the operator's dequantized
  output. Both see the same input, so an error made upstream is not blamed on
  this layer. The noise is measured against the signal the layer carries in
  the float model on the real inputs: a layer whose input was crushed upstream
  has a tiny output, which its int8 grid rounds to zero, and that must not
  read as 0 dB of its own. Against the float model's layers (what compression cost this
  layer: its int8 arithmetic, and for a QAT model also what pruning and
  fine-tuning changed) and, when given, against the QAT Keras model's layers
  (what conversion alone cost).
* Cumulative error: the operator's output against the float model's output
  of the same layer on the real inputs: how far off the network is there.
* Channel-pruned layers no longer have the float model's shapes: their own
  error is measured against the pruned float model (the QAT model's weights
  without fake quantization), which computes the same thing.
* Per channel: activations are quantized per tensor, so one channel with an
  outsized range can take the whole int8 grid and crush the others while the
  whole-tensor SQNR, dominated by that channel's energy, stays high.
  `mean_channel_sqnr_db` (the SQNR of each output channel, averaged; channels
  the float layer leaves at zero are skipped) and `worst_channel_sqnr_db`
  show it.

Entries are sorted worst first, by the lower of `sqnr_db` and
`mean_channel_sqnr_db`.
"""

import numpy as np

from tfjoint import metrics
from tfjoint._keras import keras, outbound_layers
from tfjoint._litert import Interpreter, OpResolverType
from tfjoint._names import float_layer_name
from tfjoint.registry import kind_of
from tfjoint.registry.rewrites import ACTIVATION_SUFFIX
from tfjoint.tflite.flatbuffer import FlatbufferSummary, name_segments
from tfjoint.tflite.operators import WEIGHT_OPS, operator

__all__ = ["per_layer_error"]

_MAX_SAMPLES = 64


def _layers_named(tensor_name: str, known: set[str]) -> list[str]:
    segments = {float_layer_name(part) for part in name_segments(tensor_name)}
    return [name for name in known if name in segments]


def _dequantized(values: np.ndarray, details) -> np.ndarray:
    params = details.get("quantization_parameters") or {}
    scales, zero_points = params.get("scales", ()), params.get("zero_points", ())
    if not np.issubdtype(values.dtype, np.integer) or len(scales) != 1:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_points[0]) * scales[0]


def _run_preserving_all_tensors(content: bytes, inputs: dict[str, np.ndarray], summary: FlatbufferSummary):
    """Runs the file once on `inputs` (a batch per input name), returning every tensor by index."""
    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    by_index = {}
    for io_tensor in summary.inputs:
        name = io_tensor.signature_name if io_tensor.signature_name in inputs else next(iter(inputs))
        by_index[io_tensor.index] = inputs[name]
        if io_tensor.shape and io_tensor.shape[0] == -1:
            interpreter.resize_tensor_input(io_tensor.index, inputs[name].shape)
    interpreter.allocate_tensors()
    for details in interpreter.get_input_details():
        array = by_index[details["index"]]
        scale, zero_point = details["quantization"]
        if np.issubdtype(details["dtype"], np.integer) and scale:
            info = np.iinfo(details["dtype"])
            array = np.clip(np.round(array / scale + zero_point), info.min, info.max)
        interpreter.set_tensor(details["index"], array.astype(details["dtype"]))
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    return interpreter, details


# Activations the converter fuses into CONV_2D / FULLY_CONNECTED; any other runs as an operator of its own.
_FUSED_ACTIVATIONS = frozenset({"linear", "relu", "relu6"})
# Operators of an activation the converter leaves unfused after a layer's weight operator: the layer's span ends
# before them (its reference leaves the activation out, `_apply`).
_ACTIVATION_OPS = frozenset({"SOFTMAX", "LOGISTIC", "TANH", "GELU", "HARD_SWISH", "LOG_SOFTMAX"})


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    activation = getattr(activation, "activation", activation)  # inside TF-MOT's QuantizeAwareActivation
    return getattr(activation, "__name__", "linear")


def _chain(model, first: str, last: str) -> list:
    """The layers from `first` to `last` along single-consumer links (just `first` if `last` is elsewhere)."""
    layers, layer = [model.get_layer(first)], model.get_layer(first)
    while layer.name != last:
        consumers = outbound_layers(layer)
        if len(consumers) != 1 or consumers[0] not in model.layers or _takes_several(consumers[0]):
            return [model.get_layer(first)]
        layer = consumers[0]
        layers.append(layer)
    return layers


def _called_alone(layer, x):
    """`layer` applied to `x` as the model calls it on one tensor: a self-attention (the same tensor as query and
    value) gets `x` for both. None for a layer the model calls on several different tensors (a cross-attention,
    an attention mask): it cannot be replayed on `x` alone."""
    node = layer.inbound_nodes[0] if layer.inbound_nodes else None
    arguments = list(getattr(node, "keras_inputs", None) or []) if node is not None else []
    ids = {id(tensor) for tensor in arguments}
    if len(ids) > 1:
        return None
    positional = sum(1 for value in node.call_args if id(value) in ids) if node is not None else 1
    return layer(*([x] * max(1, positional)), training=False)


def _takes_several(layer) -> bool:
    """Whether `layer` is called on several tensors (an Add): a chain of single-input layers stops before it."""
    return any(isinstance(node.input_tensors, (list, tuple)) and len(node.input_tensors) > 1
               for node in layer.inbound_nodes)


def _split_in_two(float_layer) -> bool:
    """A layer that runs as two weight operators (a separable conv): the second one's input is no input of it.

    Its own error against the float model is then not measured (its error so
    far, and its own error against the QAT model's layers, are).
    """
    kind = kind_of(float_layer)
    return kind is not None and sum(op in WEIGHT_OPS for op in kind.tflite_ops) > 1


def _with_split_activation(qat_model, layer_name: str) -> str:
    """`layer_name`, or the Activation layer prepare split off it when the converter fuses it back.

    `tfjoint.prepare` moves a fused relu6/swish into its own `<layer>_activation`
    layer; relu6 fuses back into the int8 operator, so the QAT chain must
    include it to compare like with like.
    """
    split_name = f"quant_{float_layer_name(layer_name)}{ACTIVATION_SUFFIX}"
    split = {layer.name: layer for layer in qat_model.layers}.get(split_name)
    if split is not None and _activation_name(getattr(split, "layer", split)) in _FUSED_ACTIVATIONS:
        return split.name
    return layer_name


def _apply(layers, values: np.ndarray, output_size: int):
    """The chain on `values` (reshaped to the first layer's input), or None if the shapes do not fit.

    `output_size` is the whole size of the file's output tensor, whose batch
    may differ from its input tensor's (an EinsumDense runs as a reshape).

    An activation the converter does not fuse (softmax, sigmoid, ...) on the
    last layer is left out: the weight operator's output is taken before it.
    """
    expected = layers[0].input_shape
    if isinstance(expected, list) or int(np.prod([d for d in expected[1:] if d])) * values.shape[0] != values.size:
        return None
    # float32 as the model computes: a layer called on several arguments (a self-attention's query and value)
    # casts only the first one, and the file's dequantized values are float64
    x = np.asarray(values, np.float32).reshape((values.shape[0],) + tuple(expected[1:]))
    last = layers[-1]
    inner = getattr(last, "layer", last)
    kind = kind_of(inner)
    output_activation = kind is not None and "fused_activation" in kind.tags  # a Conv's/Dense's, not an LSTM's
    unfused = output_activation and hasattr(inner, "activation") and _activation_name(inner) not in _FUSED_ACTIVATIONS
    if unfused and last is not inner:
        return None  # a QAT wrapper applies its activation inside; there is no pre-activation to compare with
    saved = last.activation if unfused else None
    try:
        if unfused:
            last.activation = keras.activations.linear
        for layer in layers:
            x = _called_alone(layer, x)
            if x is None:
                return None
    finally:
        if unfused:
            last.activation = saved
    result = np.asarray(x)
    return result if result.size == output_size else None


def _errors(reference, actual) -> dict:
    if reference is None:
        return {"sqnr_db": None, "cosine_similarity": None, "max_abs_error": None}
    reference = reference.reshape(actual.shape)
    return {"sqnr_db": metrics.sqnr_db(reference, actual),
            "cosine_similarity": metrics.cosine_similarity(reference, actual),
            "max_abs_error": metrics.max_abs_error(reference, actual)}


def _sqnrs(reference, actual, signal_reference) -> dict:
    """SQNRs of `actual` against `reference`, whole tensor and per output channel, the signal from `signal_reference`.

    Channels the signal leaves at zero are skipped; an exact channel counts as
    100 dB, not infinity, in the mean.
    """
    shape = actual.shape
    noise = (reference.reshape(shape).astype(np.float64) - actual) ** 2
    signal = signal_reference.reshape(shape).astype(np.float64) ** 2
    result = {"sqnr_db": metrics.power_ratio_db(signal.sum(), noise.sum()),
              "mean_channel_sqnr_db": None, "worst_channel_sqnr_db": None}
    if actual.ndim >= 2:
        noise, signal = noise.reshape(-1, shape[-1]).sum(axis=0), signal.reshape(-1, shape[-1]).sum(axis=0)
        live = signal > 1e-12 * max(float(signal.max()), 1e-30)
        capped = [min(metrics.power_ratio_db(signal[c], noise[c]), 100.0) for c in np.flatnonzero(live)]
        if capped:
            result.update(mean_channel_sqnr_db=float(np.mean(capped)), worst_channel_sqnr_db=float(min(capped)))
    return result


def _ranking(entry) -> tuple:
    """Worst first: by the lower of the whole-tensor and the mean per-channel SQNR; unknown last."""
    values = [v for v in (entry["sqnr_db"], entry.get("mean_channel_sqnr_db")) if v is not None]
    if not values:
        values = [v for v in (entry.get("qat_sqnr_db"),) if v is not None]
    return (not values, min(values) if values else 0.0)


def _owner(names: list[str], order: dict[str, int]) -> str | None:
    """Of the layers a tensor name mentions, the earliest in the model (the producer a BatchNorm folded into)."""
    return min(names, key=lambda n: order.get(n, 1 << 30)) if names else None


def _layer_spans(summary: FlatbufferSummary, details, known: set[str], order: dict[str, int],
                 kinds: dict | None = None) -> list[dict]:
    """Per layer with weights in the file: the data input of the first operator it owns or names, the output of
    the last one, and the last layer fused into that output."""
    def weight_owner(op) -> str | None:
        row = operator(op.name)
        weights = [i for position, i in enumerate(op.inputs) if position in row.weights]
        owner = _owner([n for w in weights for n in _layers_named(details[w]["name"], known)], order)
        if owner is None and weights and op.outputs:  # a constant shared by several ops has a generic name
            owner = _owner(_layers_named(details[op.outputs[0]]["name"], known), order)
        return owner

    owners = {weight_owner(op) for op in summary.ops} - {None}
    spans: dict[str, dict] = {}
    for op in summary.ops:
        output_names = _layers_named(details[op.outputs[0]]["name"], known) if op.outputs else []
        owner = weight_owner(op) or _owner([n for n in output_names if n in owners], order)
        if owner is None:
            continue
        if owner not in spans:
            row = operator(op.name)
            data = op.inputs[row.data] if row.data is not None and len(op.inputs) > row.data else None
            spans[owner] = {"layer": owner, "op": op.name, "data": data, "last": op, "last_layer": owner}
        span = spans[owner]
        if span["op"] not in WEIGHT_OPS and op.name in WEIGHT_OPS:  # named by its first weight operator
            span["op"] = op.name
        kind = (kinds or {}).get(owner)
        if op.name in _ACTIVATION_OPS and kind is not None and "fused_activation" in kind.tags:
            continue  # a Dense's/Conv's own softmax or sigmoid: compared before it
        span["last"] = op
        later = [n for n in output_names if order.get(n, -1) >= order.get(owner, -1)]
        span["last_layer"] = max(later + [owner], key=lambda n: order.get(n, -1))
    return [span for span in spans.values() if span["data"] is not None]


def _reference(model, own: str, last: str, x, size: int):
    """The chain of `model`'s layers from `own` to `last` on `x`, or None where the names or shapes do not fit."""
    names = {layer.name for layer in model.layers}
    if own not in names or last not in names or _split_in_two(model.get_layer(own)):
        return None
    return _apply(_chain(model, own, last), x, size)


def per_layer_error(content: bytes, summary: FlatbufferSummary, float_model, inputs: list[np.ndarray],
                    qat_model=None, pruned_model=None) -> list[dict]:
    """One entry per int8 layer with weights, worst first (see the module docstring).

    `inputs` are in the order of `float_model.inputs`. `pruned_model` (the
    pruned float model, with the file's shapes) stands in for the float
    model where channels were removed.
    """
    inputs = [array[:_MAX_SAMPLES] for array in inputs]
    names = [tensor.name.split(":")[0] for tensor in float_model.inputs]
    fixed = [t.shape[0] for t in summary.inputs if t.shape and t.shape[0] > 0]
    if fixed:  # a model converted with a fixed batch size runs exactly that many samples (repeated if fewer)
        inputs = [np.resize(array, (fixed[0],) + array.shape[1:]) for array in inputs]
    interpreter, details = _run_preserving_all_tensors(content, dict(zip(names, inputs)), summary)
    float_order = {layer.name: i for i, layer in enumerate(float_model.layers)}
    qat_layers = qat_model.layers if qat_model is not None else []
    qat_names = {float_layer_name(layer.name): layer.name for layer in qat_layers}
    pruned_names = {layer.name for layer in pruned_model.layers} if pruned_model is not None else set()
    order = dict(float_order)
    for i, layer in enumerate(pruned_model.layers if pruned_model is not None else []):
        order.setdefault(layer.name, i)
    for i, layer in enumerate(qat_layers):
        order.setdefault(float_layer_name(layer.name), i)
    found = []
    kinds = {layer.name: kind_of(layer) for layer in float_model.layers}
    for layer in (pruned_model.layers if pruned_model is not None else []):
        kinds.setdefault(layer.name, kind_of(layer))
    for span in _layer_spans(summary, details, set(order), order, kinds):
        own, last, data, output = span["layer"], span["last_layer"], span["data"], span["last"].outputs[0]
        x = _dequantized(interpreter.get_tensor(data), details[data])
        y = _dequantized(interpreter.get_tensor(output), details[output])
        size = int(y.size)
        entry = {"layer": own, "op": span["op"], "output_tensor": details[output]["name"]}
        reference = _reference(float_model, own, last, x, size)
        compared_with = "float model"
        if reference is None and own in pruned_names:
            reference, compared_with = _reference(pruned_model, own, last, x, size), "pruned float model"
        entry.update(_errors(reference, y))
        entry.update({"mean_channel_sqnr_db": None, "worst_channel_sqnr_db": None,
                      "compared_with": compared_with if reference is not None else None})
        if reference is not None:
            entry.update(_sqnrs(reference, y, reference))
        entry["_own_reference"] = reference
        if qat_model is not None and own in qat_names:
            qat_last = _with_split_activation(qat_model, qat_names.get(last, qat_names[own]))
            qat_reference = _apply(_chain(qat_model, qat_names[own], qat_last), x, size)
            entry.update({f"qat_{k}": v for k, v in _errors(qat_reference, y).items()})
        entry["_last"] = last
        entry["_output"] = y
        found.append(entry)
    _add_cumulative(found, float_model, inputs, pruned_model)
    return sorted(found, key=_ranking)


def _layer_inputs(model, first_layers: set[str], inputs) -> dict[str, np.ndarray]:
    """What each of `first_layers` of `model` receives on the real inputs."""
    firsts = sorted(name for name in first_layers if name in {layer.name for layer in model.layers})
    if not firsts:
        return {}
    probe = keras.Model(model.inputs, [model.get_layer(n).input for n in firsts])
    values = probe.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    return dict(zip(firsts, values if len(firsts) > 1 else [values]))


def _add_cumulative(entries, float_model, inputs, pruned_model=None) -> None:
    """Each layer's int8 output against the float model's at the same point, on the real inputs.

    The float model runs up to the input of the layer; the same chain of
    layers as for the own error then gives the reference. Where channels were
    removed, the pruned float model stands in.
    """
    firsts = {entry["layer"] for entry in entries}
    models = [(float_model, _layer_inputs(float_model, firsts, inputs))]
    if pruned_model is not None:
        models.append((pruned_model, _layer_inputs(pruned_model, firsts, inputs)))
    for entry in entries:
        actual, own_reference = entry.pop("_output"), entry.pop("_own_reference")
        last = entry.pop("_last")
        reference = None
        for model, layer_inputs in models:
            if reference is None and entry["layer"] in layer_inputs:
                reference = _reference(model, entry["layer"], last, np.asarray(layer_inputs[entry["layer"]]),
                                       int(actual.size))
        if reference is not None and own_reference is not None:
            entry.update(_sqnrs(own_reference, actual, reference))  # the float model's signal
        cumulative = _errors(reference, actual)
        entry["cumulative_sqnr_db"] = cumulative["sqnr_db"]
        entry["cumulative_cosine_similarity"] = cumulative["cosine_similarity"]
