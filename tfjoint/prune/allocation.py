"""`tfjoint.allocate_sparsity`: per-layer sparsities that spend a global budget where it costs least.

Uniform sparsity gives a 288-weight first convolution the same 80% as a
131k-weight dense layer. Every method here returns a plan `{layer: sparsity}`
whose mean over the pruned kernels, weighted by their sizes, equals the target
(the file is as small as with uniform sparsity) and which `tfjoint.prepare`
takes as `target_sparsity`:

* "uniform": the target everywhere (the baseline).
* "global": one threshold on LAMP scores (Lee et al., ICLR 2021) across all
  layers. A weight's LAMP score is its squared magnitude over the sum of the
  squares of the weights of its layer at least as large, which makes
  magnitudes comparable across layers of different scales.
* "erk": Erdős–Rényi-Kernel (Evci et al., RigL 2020): density proportional
  to (sum of kernel dimensions) / (product of kernel dimensions), from shapes
  alone.
* "sensitivity" (Han et al., 2015): every layer is pruned alone, by
  magnitude, at several levels, with no training, and the validation loss
  measured (the scan). Then a greedy allocation: starting from dense, it
  repeatedly raises by 0.5% the sparsity of the layer whose loss rises least
  per weight removed (loss curves interpolated between scanned levels and
  made non-decreasing), until the budget is met exactly.

Every plan caps layers at `max_sparsity`, and by default the first and last
pruned layers at half the target (`protect_first_last`): the stem sees raw
inputs, the classifier decides. If the caps make the target unreachable the
protection is relaxed first (a note says so), then a `ConfigError` is raised.
The budget arithmetic is plain numpy; only the scan runs the model.
"""

import heapq
import sys
import time
from typing import Any, Callable, Mapping

import numpy as np

from tfjoint import errors
from tfjoint._keras import check_float_model, is_keras3_model, keras, selected_layer_names, tf
from tfjoint.data import split_validation
from tfjoint.losses import infer_loss
from tfjoint.registry import prunable_kinds_sentence, prunable_layers, pruned_variable

__all__ = ["allocate_sparsity", "SparsityPlan", "METHODS", "DEFAULT_LEVELS"]

METHODS = ("uniform", "global", "erk", "sensitivity")
DEFAULT_LEVELS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
_STEP = 0.005  # the greedy allocation's increment


class SparsityPlan(dict):
    """`{layer name: sparsity}` (pass it to `tfjoint.prepare` as `target_sparsity`), and how it was made.

    Attributes:
      method: the allocation method.
      target: the size-weighted mean sparsity it meets.
      sizes: kernel size of each planned layer.
      curves: for "sensitivity", per layer the scan's points
        `[{"sparsity", "loss", "accuracy"}, ...]` (sparsity 0 is the intact model).
      notes: what the allocation had to adjust (relaxed protection, ...).
      seconds: time the allocation took (the scan, for "sensitivity").
    """

    def __init__(self, plan: Mapping[str, float], *, method: str, target: float, sizes: Mapping[str, int],
                 curves: Mapping[str, list] | None = None, notes=(), seconds: float = 0.0):
        super().__init__({name: float(value) for name, value in plan.items()})
        self.method = method
        self.target = float(target)
        self.sizes = {name: int(size) for name, size in sizes.items()}
        self.curves = dict(curves or {})
        self.notes = list(notes)
        self.seconds = float(seconds)

    @property
    def mean_sparsity(self) -> float:
        """The size-weighted mean sparsity of the plan."""
        total = sum(self.sizes[name] for name in self)
        return sum(self[name] * self.sizes[name] for name in self) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "target": self.target, "mean_sparsity": self.mean_sparsity,
                "plan": dict(self), "sizes": dict(self.sizes), "curves": self.curves, "notes": list(self.notes),
                "seconds": self.seconds}


# --- Budget arithmetic (numpy only) --------------------------------------------


def _fit_under_caps(propose: Callable, names, sizes, target, caps) -> dict[str, float]:
    """Clamps `propose`d sparsities to [0, cap], fixing clamped layers and re-proposing for the rest.

    `propose(free_names, mean_sparsity)` returns sparsities for the free
    layers whose size-weighted mean is `mean_sparsity`.
    """
    fixed: dict[str, float] = {}
    total = sum(sizes[n] for n in names)
    while True:
        free = [n for n in names if n not in fixed]
        if not free:
            return fixed
        remaining = target * total - sum(fixed[n] * sizes[n] for n in fixed)
        mean = remaining / sum(sizes[n] for n in free)
        proposal = propose(free, mean)
        over = [n for n in free if proposal[n] > caps[n] + 1e-12]
        under = [n for n in free if proposal[n] < -1e-12]
        if not over and not under:
            return {**fixed, **proposal}
        for n in over:
            fixed[n] = caps[n]
        for n in under:
            fixed[n] = 0.0


def _erk_proposer(shapes):
    raw = {n: sum(shape) / float(np.prod(shape)) for n, shape in shapes.items()}

    def propose(free, mean, sizes):
        # densities d_n = eps * raw_n with sum(d_n * size_n) = (1 - mean) * sum(size_n)
        eps = (1.0 - mean) * sum(sizes[n] for n in free) / sum(raw[n] * sizes[n] for n in free)
        return {n: 1.0 - eps * raw[n] for n in free}

    return propose


def lamp_scores(weights: np.ndarray) -> np.ndarray:
    """LAMP score of every weight: w^2 / (sum of w'^2 over the layer's weights w' with |w'| >= |w|)."""
    flat = np.abs(weights.astype(np.float64).ravel())
    order = np.argsort(flat)
    squares = flat[order] ** 2
    tail = np.cumsum(squares[::-1])[::-1]  # sum over this weight and every larger one
    scores = np.empty_like(flat)
    scores[order] = squares / np.maximum(tail, 1e-30)
    return scores


def _lamp_proposer(kernels):
    scores = {n: np.sort(lamp_scores(k)) for n, k in kernels.items()}

    def propose(free, mean, sizes):
        pooled = np.sort(np.concatenate([scores[n] for n in free]))
        prune = int(round(mean * pooled.size))
        if prune <= 0:
            return {n: 0.0 for n in free}
        threshold = pooled[min(prune, pooled.size) - 1]
        return {n: float(np.searchsorted(scores[n], threshold, side="right")) / sizes[n] for n in free}

    return propose


def _greedy(curves, sizes, target, caps) -> dict[str, float]:
    """Raise, 0.5% at a time, the sparsity of the layer whose loss rises least per weight removed."""
    def loss_at(name, s):
        levels, losses = curves[name]
        return float(np.interp(s, levels, losses))

    sparsity = {n: 0.0 for n in sizes}
    budget = target * sum(sizes.values())
    removed = 0.0
    heap: list[tuple[float, str, float]] = []

    def push(name):
        s = sparsity[name]
        step = min(_STEP, caps[name] - s)
        if step > 1e-9:
            cost = (loss_at(name, s + step) - loss_at(name, s)) / (step * sizes[name])
            heapq.heappush(heap, (cost, name, step))

    for name in sizes:
        push(name)
    while removed < budget - 1e-9 and heap:
        _, name, step = heapq.heappop(heap)
        take = min(step, (budget - removed) / sizes[name])
        sparsity[name] += take
        removed += take * sizes[name]
        push(name)
    return sparsity


# --- The sensitivity scan (runs the model) -------------------------------------


def _evaluate(forward, inputs, labels, loss_fn, batch_size) -> tuple[float, float | None]:
    outputs = np.concatenate([forward([a[i:i + batch_size] for a in inputs]).numpy()
                              for i in range(0, inputs[0].shape[0], batch_size)])
    loss = float(loss_fn(labels, outputs).numpy())
    classifier = outputs.ndim == 2 and outputs.shape[-1] >= 2
    accuracy = None
    if classifier:
        y = labels.reshape(-1) if labels.ndim == 1 or labels.shape[-1] == 1 else np.argmax(labels, -1)
        accuracy = float(np.mean(np.argmax(outputs, -1) == y))
    return loss, accuracy


def sensitivity_curves(model, names, validation_data, levels, batch_size, prune_depthwise, verbose):
    """Per layer, the validation loss (and accuracy) with that layer alone pruned to each level."""
    inputs, labels = split_validation(validation_data, model)
    if labels is None or isinstance(labels, (list, dict)):
        raise errors.DataError(
            "`validation_data` must be (x, y) with one label array for the sensitivity scan; received "
            f"{'no labels' if labels is None else 'labels for several outputs'}. Pass (x_val, y_val)."
        )
    if len(model.outputs) != 1:
        raise errors.ConfigError(
            f"method='sensitivity' scans single-output models; model '{model.name}' has {len(model.outputs)} "
            "outputs. Use method='global' or 'erk'."
        )
    loss_fn, _ = infer_loss(model, labels)
    call = tf.function(lambda x: model(x if len(x) > 1 else x[0], training=False))
    baseline = _evaluate(call, inputs, labels, loss_fn, batch_size)
    # A bar only on a terminal: in a log file it is thousands of \r and \b (the phase's start and end are logged).
    progress = keras.utils.Progbar(len(names) * len(levels), unit_name="scan") if verbose and sys.stdout.isatty() \
        else None
    curves = {}
    for name in names:
        variable = pruned_variable(model.get_layer(name), prune_depthwise)
        original = variable.numpy()
        order = np.argsort(np.abs(original).ravel(), kind="stable")
        points = [{"sparsity": 0.0, "loss": baseline[0], "accuracy": baseline[1]}]
        try:
            for level in levels:
                pruned = original.ravel().copy()
                pruned[order[: int(round(level * pruned.size))]] = 0.0
                variable.assign(pruned.reshape(original.shape))
                loss, accuracy = _evaluate(call, inputs, labels, loss_fn, batch_size)
                points.append({"sparsity": float(level), "loss": loss, "accuracy": accuracy})
                if progress is not None:
                    progress.add(1)
        finally:
            variable.assign(original)
        curves[name] = points
    return curves


def _curve_arrays(points) -> tuple[np.ndarray, np.ndarray]:
    levels = np.array([p["sparsity"] for p in points] + [1.0])
    losses = np.array([p["loss"] for p in points], np.float64)
    increase = np.maximum.accumulate(losses - losses[0])  # non-decreasing, 0 when dense
    increase = np.append(increase, increase[-1] * 10 + 10)  # pruning everything is never cheap
    return levels, increase


# --- The public entry point -----------------------------------------------------


def _planned_layers(model, prune_depthwise, exclude) -> dict[str, int]:
    sizes = prunable_layers(model, prune_depthwise)
    excluded = selected_layer_names(model, exclude, "exclude") or set()  # names or a predicate, as in prepare
    planned = {name: size for name, size in sizes.items() if name not in excluded}
    if not planned:
        raise errors.ConfigError(
            f"model '{model.name}' has no layer to plan: {prunable_kinds_sentence()}, and none is left "
            "(check `exclude`)."
        )
    return planned


def _caps(names, target, max_sparsity, protect_first_last) -> tuple[dict, list[str]]:
    caps = {n: max_sparsity for n in names}
    protected = [names[0], names[-1]] if protect_first_last and len(names) > 2 else []
    for n in protected:
        caps[n] = min(max_sparsity, target / 2)
    return caps, protected


def allocate_sparsity(
    model,
    target_sparsity: float,
    *,
    method: str = "sensitivity",
    validation_data=None,
    max_sparsity: float = 0.98,
    protect_first_last: bool = True,
    exclude=None,
    prune_depthwise: bool = False,
    levels=DEFAULT_LEVELS,
    batch_size: int = 256,
    verbose: bool = True,
) -> SparsityPlan:
    """Per-layer sparsities whose size-weighted mean over the pruned kernels is `target_sparsity`.

    Example:
      >>> import tf_keras as keras
      >>> import tfjoint
      >>> inputs = keras.Input((32,))
      >>> hidden = keras.layers.Dense(256, name="hidden")(inputs)
      >>> model = keras.Model(inputs, keras.layers.Dense(10, name="head")(keras.layers.Dense(64, name="mid")(hidden)))
      >>> plan = tfjoint.allocate_sparsity(model, 0.8, method="erk")
      >>> round(plan.mean_sparsity, 3), plan["head"] <= 0.4
      (0.8, True)

    Args:
      model: a float model (tf_keras or Keras 3), usually trained.
      target_sparsity: the global budget, in [0, 1).
      method: "uniform", "global" (LAMP), "erk" or "sensitivity" (see the
        module docstring).
      validation_data: `(x, y)`, required by "sensitivity": the data the scan
        measures the loss on.
      max_sparsity: no layer is pruned beyond this.
      protect_first_last: cap the first and last pruned layers at half the
        target (ignored by "uniform").
      exclude: layer names (or a predicate on layers, as for `prepare`) to
        leave dense (not in the plan).
      prune_depthwise: plan DepthwiseConv2D kernels too.
      levels: the sparsities the scan tries per layer.
      batch_size: samples per forward pass in the scan.
      verbose: show the scan's progress bar.

    Returns:
      A `SparsityPlan` (a dict `{layer: sparsity}` with the method, the scan's
      curves and notes attached).

    Raises:
      errors.ConfigError: unknown method, target or caps out of range, no
        prunable layer, "sensitivity" without `validation_data`, or a target
        the caps cannot reach.
      errors.DataError: `validation_data` that does not fit the model.
    """
    if method not in METHODS:
        raise errors.ConfigError(f"`method` must be one of {list(METHODS)}; received {method!r}.")
    for name, value in (("target_sparsity", target_sparsity), ("max_sparsity", max_sparsity)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise errors.ConfigError(f"`{name}` must be in [0, 1); received {value!r}.")
    if method == "sensitivity" and validation_data is None:
        raise errors.ConfigError(
            "method='sensitivity' prunes each layer alone and measures the validation loss: pass "
            "validation_data=(x_val, y_val), or use method='global' or 'erk', which need no data."
        )
    model = _float_model(model)
    sizes = _planned_layers(model, prune_depthwise, exclude)
    started = time.perf_counter()
    if method == "uniform":
        return SparsityPlan({n: float(target_sparsity) for n in sizes}, method=method, target=target_sparsity,
                            sizes=sizes, seconds=time.perf_counter() - started)
    caps, notes = _reachable_caps(list(sizes), sizes, target_sparsity, max_sparsity, protect_first_last)
    plan, curves = _plan_by_method(method, model, sizes, target_sparsity, caps, validation_data, levels, batch_size,
                                   prune_depthwise, verbose)
    return SparsityPlan(plan, method=method, target=target_sparsity, sizes=sizes, curves=curves, notes=notes,
                        seconds=time.perf_counter() - started)


def _float_model(model):
    """The tf_keras float model to plan on (a Keras 3 model rebuilt and checked)."""
    if is_keras3_model(model):
        from tfjoint.bridge.keras3 import from_keras3

        model = from_keras3(model)
    check_float_model(model)
    return model


def _reachable_caps(names, sizes, target, max_sparsity, protect_first_last) -> tuple[dict, list[str]]:
    """Each layer's cap; the first and last held at half the target unless that makes the target unreachable."""
    caps, protected = _caps(names, target, max_sparsity, protect_first_last)
    notes = []
    if sum(caps[n] * sizes[n] for n in names) < target * sum(sizes.values()) - 1e-9:
        caps = {n: max_sparsity for n in names}
        notes.append(f"the first and last layers ({', '.join(protected)}) could not be held at half the target "
                     f"and still reach {target:.0%} overall: they are capped at {max_sparsity} like the rest")
    if sum(caps[n] * sizes[n] for n in names) < target * sum(sizes.values()) - 1e-9:
        raise errors.TargetUnreachableError(
            f"target_sparsity={target} cannot be reached with every layer at most max_sparsity="
            f"{max_sparsity}. Lower the target or raise max_sparsity.", target, max_sparsity)
    return caps, notes


def _plan_by_method(method, model, sizes, target, caps, validation_data, levels, batch_size, prune_depthwise,
                    verbose) -> tuple[dict[str, float], dict]:
    """The plan of "erk", "global" or "sensitivity" under `caps` (with the scan's curves for the last)."""
    names = list(sizes)
    kernels = {n: pruned_variable(model.get_layer(n), prune_depthwise).numpy() for n in names}
    if method in ("erk", "global"):
        propose = _erk_proposer({n: kernels[n].shape for n in names}) if method == "erk" else _lamp_proposer(kernels)
        return _fit_under_caps(lambda free, mean: propose(free, mean, sizes), names, sizes, target, caps), {}
    curves = sensitivity_curves(model, names, validation_data, tuple(levels), batch_size, prune_depthwise, verbose)
    return _greedy({n: _curve_arrays(curves[n]) for n in names}, sizes, target, caps), curves
