"""A transformer's residual width, narrowed before the fit: the same channels removed from every layer that writes,
carries or reads the residual stream.

Removing attention heads and FFN neurons leaves the residual stream as wide as
it was: its embeddings, every LayerNorm and Add, the query/key/value rows and
the output columns of each attention layer, the FFN's first rows and last
columns. Where that width bounds the latency, `narrow_residual` removes a
fraction of its channels from all of them at once, as width pruning of
transformers does (one-shot, then the fit recovers: Minitron, Sheared LLaMA):

* the stream is found from the graph: tensors an Add (or Average, Subtract,
  ...) joins, followed through LayerNorms, Dropouts, activations and pooling
  over steps. It must hold a LayerNormalization (a transformer's stream);
* every layer that writes it (an Embedding, a position table, an attention's
  output projection, a Dense) loses those output columns; every layer that
  reads it (attention's projections, a Dense) loses those input rows;
  LayerNorms lose their gamma and beta entries;
* channels are ranked by the weights that touch them: each channel's rows
  and columns, their L2 norms divided by the mean of their tensor's, summed
  (the LayerNorms' |gamma| counted too). The lowest go.

The stream may not start at the model's input (the data keeps its features)
nor reach an output; any other layer writing or reading it is refused by name.
A LayerNorm then normalizes over the channels kept, so the narrowed model is
not the float model minus some channels: the fit trains it (distillation from
the float model helps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from absl import logging

from tfjoint import errors
from tfjoint._keras import keras, keras_history, nodes_in_graph_order, replay, tf, weight_short_name
from tfjoint.registry import unwrapped
from tfjoint.registry.table import is_input_layer
from tfjoint.registry.transformer import IntegerAttention, IntegerLayerNorm, IntegerSum, PositionEmbedding, TakeStep

__all__ = ["ResidualPlan", "narrow_residual", "residual_plan"]

_L = keras.layers
# Layers the stream passes through unchanged in width: their output is the stream too.
_CARRIES = (_L.Dropout, _L.Activation, _L.ReLU, _L.LeakyReLU, _L.GlobalAveragePooling1D, _L.GlobalMaxPooling1D,
            _L.GaussianNoise, _L.GaussianDropout, _L.AlphaDropout, _L.SpatialDropout1D, TakeStep)
_NORMS = (IntegerLayerNorm, _L.LayerNormalization)
_JOINS = (_L.Add, _L.Average, _L.Subtract, _L.Maximum, _L.Minimum, _L.Multiply, IntegerSum)
_WRITES = (_L.Embedding, PositionEmbedding, IntegerAttention, _L.Dense)  # their output columns are the stream's
_READS = (IntegerAttention, _L.Dense)  # their input rows are
_SHAPES_ONLY = (PositionEmbedding,)  # read only their input's shape (a position table as wide as the stream)
_NORM_WEIGHTS = ("gamma", "beta")


def _key(tensor) -> tuple[str, int, int]:
    history = keras_history(tensor)
    return history.layer.name, history.node_index, history.tensor_index


class _Sets:
    """Union-find over tensors (their Keras history keys)."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, key):
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a, b) -> None:
        self.parent[self.find(a)] = self.find(b)


def _attention_inputs(node) -> dict[str, object]:
    """An attention call's query, value and key tensors (key defaults to value, value to query)."""
    args, kwargs = list(node.call_args), dict(node.call_kwargs)
    names = ("query", "value", "key")
    found = {name: (args[i] if i < len(args) else kwargs.get(name)) for i, name in enumerate(names)}
    found["value"] = found["value"] if found["value"] is not None else found["query"]
    found["key"] = found["key"] if found["key"] is not None else found["value"]
    return found


@dataclasses.dataclass
class ResidualPlan:
    """Which layers touch the residual stream, how: `writes` lose output columns, `reads` input rows (for an
    attention layer: which of its query/value/key read it), `norms` their gamma and beta; `width` channels, of
    which `keep` (sorted indices) stay."""

    width: int
    writes: set[str]
    reads: dict[str, set[str]]
    norms: set[str]
    keep: np.ndarray | None = None

    @property
    def layers(self) -> list[str]:
        return sorted(self.writes | set(self.reads) | self.norms)


def residual_plan(model) -> ResidualPlan:
    """The residual stream of a (tf_keras, functional) transformer: the layers that write, carry and read it.

    Raises:
      errors.ConfigError: no stream with a LayerNormalization, or a layer
        touching it that cannot lose channels (named).
    """
    nodes = [node for node in nodes_in_graph_order(model) if not node.is_input]
    sets = _Sets()
    joined = []
    for node in nodes:
        layer = unwrapped(node.outbound_layer)
        inputs = [_key(t) for t in tf.nest.flatten(node.input_tensors)]
        outputs = [_key(t) for t in tf.nest.flatten(node.output_tensors)]
        if isinstance(layer, _JOINS) and len(outputs) == 1:
            for key in inputs:
                sets.union(key, outputs[0])
            joined.append(outputs[0])
        elif isinstance(layer, _CARRIES + _NORMS) and len(inputs) == 1 and len(outputs) == 1:
            sets.union(inputs[0], outputs[0])
    norm_roots = {sets.find(_key(node.input_tensors if not isinstance(node.input_tensors, (list, tuple))
                                 else node.input_tensors[0]))
                  for node in nodes if isinstance(unwrapped(node.outbound_layer), _NORMS)}
    streams = {sets.find(key) for key in joined} & norm_roots
    if not streams:
        raise errors.ConfigError(
            f"`residual_sparsity`: model '{model.name}' has no residual stream to narrow (Adds joined through a "
            "LayerNormalization, as in a transformer). Use residual_sparsity=0; channel_sparsity removes heads, "
            "FFN neurons and filters.")
    if len(streams) > 1:
        raise errors.ConfigError(
            f"`residual_sparsity`: model '{model.name}' has {len(streams)} separate residual streams (an encoder and "
            "a decoder, say); tfjoint narrows a model with one. Use residual_sparsity=0.")
    stream = streams.pop()

    def in_stream(tensor) -> bool:
        return tensor is not None and sets.find(_key(tensor)) == stream

    plan = ResidualPlan(0, set(), {}, set())
    for output in model.outputs:
        if in_stream(output):
            name = keras_history(output).layer.name
            raise errors.ConfigError(
                f"`residual_sparsity`: the residual stream reaches the model output '{name}': its channels are the "
                "output's. Add a Dense head after it, or use residual_sparsity=0.")
    for node in nodes:
        wrapper = node.outbound_layer
        layer = unwrapped(wrapper)
        ins = [t for t in tf.nest.flatten(node.input_tensors) if in_stream(t)]
        writes = any(in_stream(t) for t in tf.nest.flatten(node.output_tensors))
        where = f"layer '{layer.name}' ({type(layer).__name__})"
        if writes:
            plan.width = int(tf.nest.flatten(node.output_tensors)[0].shape[-1])
        if isinstance(layer, _JOINS + _CARRIES):
            continue
        if isinstance(layer, _NORMS):
            if ins:
                plan.norms.add(layer.name)
            continue
        if writes and not isinstance(layer, _WRITES):
            raise errors.ConfigError(
                f"`residual_sparsity`: {where} writes the residual stream and cannot lose its channels (tfjoint "
                "narrows Embedding, position tables, attention and Dense layers). Use residual_sparsity=0.")
        if writes and isinstance(layer, IntegerAttention) and layer.output_dim is not None:
            raise errors.ConfigError(f"`residual_sparsity`: {where} has a fixed output_shape; use residual_sparsity=0.")
        if isinstance(layer, _SHAPES_ONLY):
            ins = []
        if ins and not isinstance(layer, _READS):
            raise errors.ConfigError(
                f"`residual_sparsity`: {where} reads the residual stream and cannot drop channels of its input "
                "(tfjoint narrows attention and Dense layers reading it). Use residual_sparsity=0.")
        if writes:
            if layer.name in plan.writes:
                raise errors.ConfigError(f"`residual_sparsity`: {where} is shared (called more than once); use "
                                         "residual_sparsity=0.")
            plan.writes.add(layer.name)
        if ins:
            if isinstance(layer, IntegerAttention):
                read = {name for name, tensor in _attention_inputs(node).items() if in_stream(tensor)}
            else:
                read = {"kernel"}
            plan.reads.setdefault(layer.name, set()).update(read)
    for layer in model.layers:
        if is_input_layer(layer) and any(in_stream(t) for t in tf.nest.flatten(layer.output)):
            raise errors.ConfigError(
                f"`residual_sparsity`: the residual stream starts at the model input '{layer.name}': the data "
                "keeps its features. Project the input first (an Embedding, or a Dense on the patches), or use "
                "residual_sparsity=0.")
    return plan


def _weights(layer) -> dict[str, np.ndarray]:
    return {weight_short_name(w): w.numpy() for w in layer.weights}


def _slices(plan: ResidualPlan, layer) -> dict[str, tuple[int, ...]]:
    """weight name -> the axes (of its channels) that lose the removed residual channels."""
    name = layer.name
    axes: dict[str, tuple[int, ...]] = {}
    if name in plan.norms:
        axes.update({w: (0,) for w in _NORM_WEIGHTS})
    if isinstance(layer, IntegerAttention):
        for side in plan.reads.get(name, ()):
            axes[f"{side}_kernel"] = (0,)
        if name in plan.writes:
            axes["output_kernel"], axes["output_bias"] = (-1,), (0,)
    elif isinstance(layer, _L.Dense):
        if name in plan.reads:
            axes["kernel"] = (0,)
        if name in plan.writes:
            axes["kernel"] = axes.get("kernel", ()) + (-1,)
            axes["bias"] = (0,)
    elif isinstance(layer, _L.Embedding) and name in plan.writes:
        axes["embeddings"] = (-1,)
    elif isinstance(layer, PositionEmbedding) and name in plan.writes:
        axes["position_embeddings"] = (-1,)
    return axes


def channel_scores(model, plan: ResidualPlan) -> np.ndarray:
    """One score per residual channel: each weight's rows or columns along it, L2 norms over the rest divided by
    their mean (so no tensor dominates by its scale), summed; |gamma| of the LayerNorms likewise."""
    scores = np.zeros(plan.width, np.float64)
    for layer in model.layers:
        values = _weights(layer)
        for weight, axes in _slices(plan, layer).items():
            if weight not in values or weight == "beta" or values[weight].ndim == 0:
                continue
            for axis in axes:
                moved = np.moveaxis(values[weight], axis, 0).reshape(plan.width, -1)
                norms = np.linalg.norm(moved, axis=1)
                scores += norms / max(float(norms.mean()), 1e-12)
    return scores


def narrow_residual(model, fraction: float):
    """`model` with `fraction` of its residual stream's channels removed from every layer touching it (see the
    module docstring), and the plan (its `keep`). A new model; `model` is unchanged.

    Raises:
      errors.ConfigError: as `residual_plan`.
    """
    plan = residual_plan(model)
    kept = max(1, int(round(plan.width * (1.0 - fraction))))
    order = np.argsort(-channel_scores(model, plan), kind="stable")
    plan.keep = np.sort(order[:kept])
    built: dict[str, Any] = {}

    def call(layer, args, kwargs):
        if layer.name not in built:
            config = layer.get_config()
            if layer.name in plan.writes and isinstance(layer, _L.Dense):
                config["units"] = kept
            if layer.name in plan.writes and isinstance(layer, _L.Embedding):
                config["output_dim"] = kept
            built[layer.name] = layer.__class__.from_config(config)
        return built[layer.name](*args, **kwargs)

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=keras_history(t).layer.name)
              for t in model.inputs]
    outputs = replay(model, inputs, call)
    narrowed = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for layer in model.layers:
        if layer.name not in built:
            continue
        values, axes = _weights(layer), _slices(plan, layer)
        new = built[layer.name]
        new.set_weights([_taken(values[weight_short_name(w)], axes.get(weight_short_name(w), ()), plan.keep)
                         for w in new.weights])
    logging.info("tfjoint: residual width %d -> %d channels across %d layers (%s).", plan.width, kept,
                 len(plan.layers), ", ".join(plan.layers))
    return narrowed, plan


def _taken(value: np.ndarray, axes: tuple[int, ...], keep: np.ndarray) -> np.ndarray:
    for axis in axes:
        value = np.take(value, keep, axis=axis % value.ndim)
    return value
