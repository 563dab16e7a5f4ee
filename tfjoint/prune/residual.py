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
* channels are ranked by what the stream's LayerNorms output on them over
  sample inputs (mean magnitude per channel, each LayerNorm's divided by its
  mean over channels, summed: the activation importance of width pruning);
  without inputs, by the weights that touch them (each channel's rows and
  columns, their L2 norms divided by the mean of their tensor's, summed). The
  lowest go.

The stream may not start at the model's input (the data keeps its features)
nor reach an output; any other layer writing or reading it is refused by name.
A LayerNorm then normalizes over the channels kept, so the narrowed model is
not the float model minus some channels: the fit trains it (distillation from
the float model helps).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Mapping

import numpy as np
from absl import logging

from tfjoint import errors
from tfjoint._keras import keras, keras_history, nodes_in_graph_order, replay, tf, weight_short_name
from tfjoint.prune.channel_groups import UnionFind
from tfjoint.registry import kind_of, unwrapped
from tfjoint.registry.channel_rules import FOLLOWS, MERGES, NEW
from tfjoint.registry.table import is_input_layer

__all__ = ["ResidualPlan", "narrow_residual", "residual_plan"]

_FIRST = "inputs"  # a derived reader's one input (its call's first argument, whatever its name)


def _key(tensor) -> tuple[str, int, int]:
    history = keras_history(tensor)
    return history.layer.name, history.node_index, history.tensor_index


@dataclasses.dataclass(frozen=True)
class _Role:
    """What a layer's registry entry says about the residual stream (its `Residual` facet, else its `Channels`)."""

    carries: bool
    joins: bool
    normalizes: bool  # carries it with statistics of its own (a LayerNorm): what marks a transformer's stream
    shape_only: bool
    carried: Mapping[str, int]
    writes: Mapping[str, int]
    reads: Mapping[str, Mapping[str, int]]
    same_as: Mapping[str, str]
    resize: Any


def _role(layer, rank: int) -> _Role:
    kind = kind_of(layer)
    if kind is None:
        return _Role(False, False, False, False, {}, {}, {}, {}, None)
    residual, channels = kind.residual, kind.channels
    blocked = channels.blocker(layer, rank) if channels.blocker else None
    follows = channels.rule is FOLLOWS and not blocked
    sliced = {side: {weight: axes[side] for weight, axes in channels.sliced.items() if side in axes}
              for side in ("in", "out")}
    new = channels.rule is NEW and not blocked
    return _Role(
        carries=residual.carries or follows, joins=channels.rule is MERGES, normalizes=residual.carries,
        shape_only=residual.shape_only,
        carried=residual.carried or (sliced["in"] if follows else {}),
        writes=residual.writes or (sliced["out"] if new else {}),
        reads=residual.reads or ({_FIRST: sliced["in"]} if new and sliced["in"] else {}),
        same_as=residual.same_as, resize=residual.resize or (channels.resize if new else None))


def _arguments(node, layer, role: _Role) -> dict[str, Any]:
    """The call's tensors by argument name (a derived reader's first argument as `_FIRST`), defaults filled in."""
    if _FIRST in role.reads:
        return {_FIRST: node.call_args[0] if node.call_args else None}
    try:
        bound = inspect.signature(layer.call).bind_partial(*node.call_args, **node.call_kwargs).arguments
    except TypeError:
        bound = {}
    found = {name: bound.get(name) for name in role.reads}
    for name, default in role.same_as.items():
        if found.get(name) is None:
            found[name] = found.get(default)
    return found


@dataclasses.dataclass
class ResidualPlan:
    """Which layers touch the residual stream, how: `writes` lose output channels, `reads` input channels (for
    each call argument that is the stream), `carried` their per-channel weights (a LayerNorm's); `width` channels,
    of which `keep` (sorted indices) stay."""

    width: int
    writes: set[str]
    reads: dict[str, set[str]]
    carried: set[str]
    roles: dict[str, _Role]
    keep: np.ndarray | None = None

    @property
    def layers(self) -> list[str]:
        return sorted(self.writes | set(self.reads) | self.carried)


def _streams(nodes, roles) -> tuple[UnionFind, set]:
    """Union-find of the tensors the stream's carrying and joining layers connect, and the candidate streams:
    sets an elementwise join belongs to that pass through a LayerNorm-like carrier with weights of its own."""
    sets = UnionFind()
    joined, normalized = [], []
    for node in nodes:
        role = roles[node.outbound_layer.name]
        inputs = [_key(t) for t in tf.nest.flatten(node.input_tensors)]
        outputs = [_key(t) for t in tf.nest.flatten(node.output_tensors)]
        if len(outputs) != 1:
            continue
        for key in inputs + outputs:
            sets.add(key)
        if role.joins:
            for key in inputs:
                sets.union(key, outputs[0])
            joined.append(outputs[0])
        elif role.carries and len(inputs) == 1:
            sets.union(inputs[0], outputs[0])
            if role.normalizes:
                normalized.append(inputs[0])
    return sets, {sets.find(key) for key in joined} & {sets.find(key) for key in normalized}


def residual_plan(model) -> ResidualPlan:
    """The residual stream of a (tf_keras, functional) transformer: the layers that write, carry and read it.

    Raises:
      errors.ConfigError: no stream with a LayerNormalization, or a layer
        touching it that cannot lose channels (named).
    """
    nodes = [node for node in nodes_in_graph_order(model) if not node.is_input]
    roles = {}
    for node in nodes:
        layer = unwrapped(node.outbound_layer)
        rank = len(tf.nest.flatten(node.output_tensors)[0].shape)
        roles[node.outbound_layer.name] = _role(layer, rank)
    sets, streams = _streams(nodes, roles)
    if not streams:
        raise errors.ConfigError(
            f"`residual_sparsity`: model '{model.name}' has no residual stream to narrow (sums joined through a "
            "layer normalization, as in a transformer). Use residual_sparsity=0; channel_sparsity removes heads, "
            "FFN neurons and filters.")
    if len(streams) > 1:
        raise errors.ConfigError(
            f"`residual_sparsity`: model '{model.name}' has {len(streams)} separate residual streams (an encoder and "
            "a decoder, say); tfjoint narrows a model with one. Use residual_sparsity=0.")
    stream = streams.pop()

    def in_stream(tensor) -> bool:
        return tensor is not None and hasattr(tensor, "_keras_history") and _key(tensor) in sets.parent \
            and sets.find(_key(tensor)) == stream

    for output in model.outputs:
        if in_stream(output):
            name = keras_history(output).layer.name
            raise errors.ConfigError(
                f"`residual_sparsity`: the residual stream reaches the model output '{name}': its channels are the "
                "output's. End it in a dense head, or use residual_sparsity=0.")
    for layer in model.layers:
        if is_input_layer(layer) and any(in_stream(t) for t in tf.nest.flatten(layer.output)):
            raise errors.ConfigError(
                f"`residual_sparsity`: the residual stream starts at the model input '{layer.name}': the data "
                "keeps its features. Project the input first (a token embedding, or a dense projection of the "
                "patches), or use residual_sparsity=0.")
    plan = ResidualPlan(0, set(), {}, set(), roles)
    for node in nodes:
        layer = unwrapped(node.outbound_layer)
        role = roles[node.outbound_layer.name]
        ins = [t for t in tf.nest.flatten(node.input_tensors) if in_stream(t)]
        writes = any(in_stream(t) for t in tf.nest.flatten(node.output_tensors))
        where = f"layer '{layer.name}' ({type(layer).__name__})"
        if writes:
            plan.width = int(tf.nest.flatten(node.output_tensors)[0].shape[-1])
        if role.joins or (role.carries and ins):
            if role.carried and ins:
                plan.carried.add(node.outbound_layer.name)
            continue
        if writes and not role.writes:
            raise errors.ConfigError(
                f"`residual_sparsity`: {where} writes the residual stream and cannot lose its channels (its "
                "registry entry names no output channels to remove). Use residual_sparsity=0.")
        if writes:
            if node.outbound_layer.name in plan.writes:
                raise errors.ConfigError(f"`residual_sparsity`: {where} is shared (called more than once); use "
                                         "residual_sparsity=0.")
            plan.writes.add(node.outbound_layer.name)
        if not ins or role.shape_only:
            continue
        read = {name for name, tensor in _arguments(node, layer, role).items() if in_stream(tensor)}
        if not read or len(read) < len({id(t) for t in ins}):
            raise errors.ConfigError(
                f"`residual_sparsity`: {where} reads the residual stream and cannot drop channels of that input "
                "(its registry entry names no input channels to remove). Use residual_sparsity=0.")
        plan.reads.setdefault(node.outbound_layer.name, set()).update(read)
    return plan


def _weights(layer) -> dict[str, np.ndarray]:
    return {weight_short_name(w): w.numpy() for w in layer.weights}


def _slices(plan: ResidualPlan, name: str) -> dict[str, tuple[int, ...]]:
    """weight name -> the axes (of its channels) that lose the removed residual channels."""
    role = plan.roles[name]
    axes: dict[str, tuple[int, ...]] = {}

    def add(weight: str, axis: int) -> None:
        axes[weight] = axes.get(weight, ()) + (axis,)

    if name in plan.carried:
        for weight, axis in role.carried.items():
            add(weight, axis)
    for argument in sorted(plan.reads.get(name, ())):
        for weight, axis in role.reads[argument].items():
            add(weight, axis)
    if name in plan.writes:
        for weight, axis in role.writes.items():
            add(weight, axis)
    return axes


def channel_scores(model, plan: ResidualPlan) -> np.ndarray:
    """One score per residual channel: each weight's slices along it, L2 norms over the rest divided by their mean
    (so no tensor dominates by its scale), summed. A carried offset (a LayerNorm's beta) is left out; a writer's
    bias counts."""
    scores = np.zeros(plan.width, np.float64)
    for layer in model.layers:
        if layer.name not in plan.roles:
            continue
        values = _weights(layer)
        kind = kind_of(unwrapped(layer))
        offsets = set(kind.offset_weights) & set(plan.roles[layer.name].carried) if kind is not None else set()
        for weight, axes in _slices(plan, layer.name).items():
            if weight not in values or weight in offsets or values[weight].ndim == 0:
                continue
            for axis in axes:
                moved = np.moveaxis(values[weight], axis, 0).reshape(plan.width, -1)
                norms = np.linalg.norm(moved, axis=1)
                scores += norms / max(float(norms.mean()), 1e-12)
    return scores


def activation_scores(model, plan: ResidualPlan, inputs) -> np.ndarray:
    """One score per residual channel from `inputs`: each carrying normalization's output (what the stream's
    readers see), its mean magnitude per channel divided by the mean over channels, summed."""
    outputs = [model.get_layer(name).output for name in sorted(plan.carried) if plan.roles[name].normalizes]
    if not outputs:
        return np.zeros(plan.width)
    values = keras.Model(model.inputs, outputs).predict(inputs, verbose=0)
    scores = np.zeros(plan.width, np.float64)
    for value in values if isinstance(values, list) else [values]:
        magnitude = np.abs(np.asarray(value, np.float64)).reshape(-1, plan.width).mean(axis=0)
        scores += magnitude / max(float(magnitude.mean()), 1e-12)
    return scores


def narrow_residual(model, fraction: float, sample_inputs=None):
    """`model` with `fraction` of its residual stream's channels removed from every layer touching it (see the
    module docstring), and the plan (its `keep`). A new model; `model` is unchanged. With `sample_inputs`,
    channels are ranked by what the stream's normalizations output on them; else by weight norms.

    Raises:
      errors.ConfigError: as `residual_plan`.
    """
    plan = residual_plan(model)
    kept = max(1, int(round(plan.width * (1.0 - fraction))))
    scores = activation_scores(model, plan, sample_inputs) if sample_inputs is not None else None
    if scores is None or not np.any(scores):
        scores = channel_scores(model, plan)
    order = np.argsort(-scores, kind="stable")
    plan.keep = np.sort(order[:kept])
    built: dict[str, Any] = {}

    def call(layer, args, kwargs):
        if layer.name not in built:
            config = layer.get_config()
            resize = plan.roles[layer.name].resize
            if layer.name in plan.writes and resize is not None:
                config = resize(config, kept)
            built[layer.name] = layer.__class__.from_config(config)
        return built[layer.name](*args, **kwargs)

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=keras_history(t).layer.name)
              for t in model.inputs]
    outputs = replay(model, inputs, call)
    narrowed = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)
    for layer in model.layers:
        if layer.name not in built:
            continue
        values, axes = _weights(layer), _slices(plan, layer.name)
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
