"""`tfjoint.plan_for_budget`: the channels to remove so a model meets flash, RAM and compute budgets.

1. The channel groups of the float model (`prune.channels`): which filters go together.
2. A cost model (`plan.cost`) of the int8 file: flash, TFLM arena and MACs as a
   function of the channels each group keeps, from one conversion.
3. A sensitivity scan: each group alone loses its weakest channels (by the L1
   or L2 norm of its producers' filters; attention heads by the validation
   loss each one's removal alone costs, a head scan) at several fractions,
   and the validation loss is measured with no training. The head scan's
   scores go into the plan (`channel_scores`), so training removes the
   heads the planner measured.
4. Greedy: repeatedly remove another step of channels from the group whose
   loss rises least per unit of budget freed (the excess over each budget, in
   proportion to that budget), until every budget is met.
5. Check in TFLM (when installed): the plan's file is built (masks set where
   the schedule ends, nothing trained) and measured; a budget the measured
   file misses is tightened by the miss and the greedy search runs again. An
   arena missed because TFLM's head was larger than the planned activations
   (its planning memory, which sets a floor on small models) becomes the cost
   model's floor, and the budget is refused if even one channel per group
   cannot then meet it.

With `weight_bits` (say `(8, 4, 2)`), a second lever stands beside channels:
a layer's kernel stored with 4 or 2 bits per weight (16 or 4 shared values
per table, `prepare(clusters=...)`, shipped with TFLM's LUT compression).
The scan also measures each such layer's loss with its kernel clustered (no
training), the cost model predicts the LUT-compressed bytes, and the greedy
search takes whichever step, a sixteenth of a group's channels or a layer's
bits halved, frees the budget for the least loss. The TFLM check then builds
the compressed file and measures it with its alternate decompression memory.

A budget no plan can meet (every group down to one channel) is refused here,
before any training, with the smallest figure reachable.
"""

import time
import warnings
from typing import Sequence

import numpy as np

from tfjoint import _progress, errors, metrics
from tfjoint._keras import check_float_model, is_keras3_model, keras, tf
from tfjoint.data import collect_inputs, split_validation
from tfjoint.losses import infer_loss
from tfjoint.plan.budget import Budget, CompressionPlan
from tfjoint.plan.cost import ONE_CHANNEL, CostModel, Kernel, build_cost_model, measure_plan
from tfjoint.prune.channel_groups import ChannelPlan, plan_channel_groups
from tfjoint.prune.schedule import kept_channels
from tfjoint.quantize.clusters import initial_centroids, initial_levels, shares_one_table, snap, snap_shared
from tfjoint.registry import kind_of, prunable_layers, pruned_variable, pruned_weight_name
from tfjoint.registry.table import channel_axis
from tfjoint.tflite import tflm

__all__ = ["plan_for_budget", "scan_heads", "channel_groups_of", "STEPS"]

STEPS = 16  # a group's channels are removed in sixteenths
_SCAN_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
_MAX_FRACTION = 15 / 16
_CHECKS = 4  # builds and measurements of a plan in TFLM before the planner gives up


def channel_groups_of(model) -> ChannelPlan:
    """The channel groups `prepare` would prune in `model` (every Conv/Dense kind that makes channels)."""
    producers = {layer.name for layer in model.layers
                 if getattr(kind_of(layer), "is_producer", False) and pruned_weight_name(layer) is not None}
    return plan_channel_groups(model, producers)


def _filter_norms(model, plan: ChannelPlan, criterion: str) -> dict[str, np.ndarray]:
    """Per group, the summed L1 (or L2) norm of each channel's filters over its producers."""
    norms = {}
    for name, group in plan.prunable_groups.items():
        total = np.zeros(group.channels)
        for producer in group.producers:
            layer = model.get_layer(producer)
            kernel = pruned_variable(layer).numpy()
            values = np.moveaxis(kernel, channel_axis(layer, pruned_weight_name(layer)), -1)
            values = values.reshape(-1, values.shape[-1])
            total += np.abs(values).sum(0) if criterion == "l1" else np.sqrt((values ** 2).sum(0))
        norms[name] = total
    return norms


def _members(model, plan: ChannelPlan, group: str) -> list:
    """Every layer whose own channels (its output's, or its heads) include `group`'s, with the group's offset."""
    found = []
    for name, entry in plan.layers.items():
        offset = 0
        for segment, size in entry.own.segments:
            if segment == group:
                found.append((model.get_layer(name), offset, size))
            offset += size
    return found


def _zero_channels(model, plan: ChannelPlan, group: str, channels: np.ndarray) -> list:
    """Zeroes `channels` of `group` wherever they are made (producer filters and biases, BatchNorm scale and shift,
    a head's projections), along each weight's channel axis.

    Returns the (variable, original value) pairs to restore.
    """
    saved = []
    for layer, offset, _ in _members(model, plan, group):
        kind = kind_of(layer)
        if kind is None:
            continue
        for weight_name in kind.channels.zeroed:
            variable = getattr(layer, weight_name, None)
            if variable is None or not isinstance(variable, tf.Variable):
                continue
            value = variable.numpy()
            saved.append((variable, value))
            zeroed = value.copy()
            index: list = [slice(None)] * zeroed.ndim
            index[channel_axis(layer, weight_name) if zeroed.ndim > 1 else 0] = offset + channels
            zeroed[tuple(index)] = 0.0
            variable.assign(zeroed)
    return saved


def _head_scores(model, plan: ChannelPlan, norms: dict[str, np.ndarray], validation: "_Validation",
                 phases) -> dict[str, np.ndarray]:
    """Per group of heads: the validation loss each head's removal alone costs (no training), the higher kept first.

    A head's weights are not comparable by norm with another's (their
    products, not their sizes, make the attention), so heads are ranked by
    measurement, as the greedy search ranks groups. Norms break ties.
    """
    groups = [group for group in plan.inside_groups if group in norms]
    if not groups:
        return {}
    baseline = validation.loss()
    scores = {}
    with phases.run("head scan", f"{sum(len(norms[g]) for g in groups)} heads, each removed alone"):
        for group in groups:
            rises = []
            for channel in range(len(norms[group])):
                saved = _zero_channels(model, plan, group, np.array([channel]))
                try:
                    rises.append(validation.loss() - baseline)
                finally:
                    for variable, value in saved:
                        variable.assign(value)
            scale = max(float(np.max(norms[group])), 1e-12)
            scores[group] = np.array(rises) + 1e-6 * norms[group] / scale
    return scores


class _Validation:
    """The float model on the validation data, with no training: its outputs and loss, as the scans re-measure them
    after each change to the weights."""

    def __init__(self, model, validation_data, batch_size: int):
        self.inputs, self.labels = split_validation(validation_data, model)
        if self.labels is None or isinstance(self.labels, (list, dict)):
            raise errors.DataError("`validation_data` must be (x, y) with one label array: the plan measures the "
                                   "validation loss of each group's channels. Pass (x_val, y_val).")
        self.loss_fn, _ = infer_loss(model, self.labels)
        self._forward = tf.function(lambda x: model(x if len(x) > 1 else x[0], training=False))
        self._batch_size = batch_size

    def outputs(self) -> np.ndarray:
        size = self._batch_size
        return np.concatenate([self._forward([a[i:i + size] for a in self.inputs]).numpy()
                               for i in range(0, self.inputs[0].shape[0], size)])

    def loss(self, outputs: np.ndarray | None = None) -> float:
        return float(self.loss_fn(self.labels, self.outputs() if outputs is None else outputs).numpy())


def _sensitivity(model, plan: ChannelPlan, norms, validation: _Validation, phases) -> dict[str, tuple]:
    """Per group: (fractions, loss increases) with the weakest channels of that group alone removed."""
    baseline = validation.loss()
    curves = {}
    with phases.run("sensitivity scan", f"{len(norms)} channel groups x {len(_SCAN_FRACTIONS)} fractions"):
        for group, norm in norms.items():
            order = np.argsort(norm, kind="stable")
            losses = [0.0]
            for fraction in _SCAN_FRACTIONS:
                removed = order[: len(norm) - max(int(round(len(norm) * (1 - fraction))), 1)]
                saved = _zero_channels(model, plan, group, removed)
                try:
                    losses.append(max(validation.loss() - baseline, 0.0))
                finally:
                    for variable, value in saved:
                        variable.assign(value)
            increases = np.maximum.accumulate(np.array(losses))
            curves[group] = (np.array((0.0,) + _SCAN_FRACTIONS + (1.0,)),
                             np.append(increases, increases[-1] * 10 + 10))  # all channels gone is never cheap
    return curves


def _table_axis(model, layer_name: str, kernel: Kernel) -> int | None:
    """The Keras axis of a kernel's per-channel tables (as `prepare(clusters=...)` makes them), or None."""
    if not kernel.per_channel:
        return None
    layer = model.get_layer(layer_name)
    return channel_axis(layer, pruned_weight_name(layer))


def _clustered(values: np.ndarray, clusters: int, axis: int | None) -> np.ndarray:
    """`values` with each weight snapped to the nearest of `clusters` k-means values of its table (zero one of them),
    or to one table's levels its channels share, where `prepare` would share one (`clusters.shares_one_table`)."""
    if axis is not None and shares_one_table(values.shape, axis, clusters):
        levels = initial_levels(values, clusters, axis)
        return snap_shared(tf.constant(values), tf.constant(levels), axis).numpy()
    centroids = initial_centroids(values, clusters, axis)
    return snap(tf.constant(values), tf.constant(centroids), axis).numpy()


def _bits_sensitivity(model, layers: dict[str, int | None], levels: tuple[int, ...], validation: _Validation,
                      phases) -> dict[str, dict[int, float]]:
    """Per layer: bits -> the validation loss increase with its kernel clustered to 2**bits values (no training)."""
    baseline = validation.loss()
    curves = {}
    with phases.run("bits scan", f"{len(layers)} kernels x {len(levels)} widths"):
        for name, axis in layers.items():
            variable = pruned_variable(model.get_layer(name))
            original = variable.numpy()
            rises = {8: 0.0}
            try:
                for bits in sorted(levels, reverse=True):
                    variable.assign(_clustered(original, 2 ** bits, axis))
                    rises[bits] = max(validation.loss() - baseline, max(rises.values()))  # fewer never cheaper
            finally:
                variable.assign(original)
            curves[name] = rises
    return curves


def _accuracy_of_plan(model, plan: ChannelPlan, norms, fractions: dict[str, float], validation: _Validation,
                      bits: dict[str, int] | None = None,
                      axes: dict[str, int | None] | None = None) -> dict[str, float | None]:
    """The float model's validation loss and accuracy, and with every group's planned channels zeroed at once
    (what the sensitivity scan predicts before any fine-tuning; accuracy None for a model that is no classifier)."""

    def measured() -> tuple[float, float | None]:
        outputs = validation.outputs()
        accuracy = metrics.accuracy(outputs, validation.labels) if metrics.is_classifier_output(outputs) else None
        return validation.loss(outputs), accuracy

    float_loss, float_accuracy = measured()
    saved = []
    try:
        for group, fraction in fractions.items():
            if fraction > 0 and group in norms:
                norm = norms[group]
                removed = np.argsort(norm, kind="stable")[: len(norm) - kept_channels(len(norm), fraction)]
                saved += _zero_channels(model, plan, group, removed)
        for name, width in (bits or {}).items():
            variable = pruned_variable(model.get_layer(name))
            saved.append((variable, variable.numpy()))
            variable.assign(_clustered(variable.numpy(), 2 ** width, (axes or {}).get(name)))
        plan_loss, plan_accuracy = measured()
    finally:
        for variable, value in reversed(saved):
            variable.assign(value)
    return {"float_loss": float_loss, "float_accuracy": float_accuracy, "loss_before_fine_tuning": plan_loss,
            "accuracy_before_fine_tuning": plan_accuracy}


def _limits(budget: Budget, margin: float) -> dict[str, float]:
    """What the greedy search plans to: each budget given, `margin` below it."""
    return {name: getattr(budget, name) * (1.0 - margin) for name in budget.given}


def _excess(figures: dict, limits: dict[str, float]) -> float:
    """How far `figures` are over the limits, each in proportion to its limit (0 when every limit is met)."""
    return sum(max(figures[name] - limit, 0.0) / limit for name, limit in limits.items())


def _greedy(cost: CostModel, curves, limits: dict[str, float], bit_curves: dict[str, dict[int, float]] | None = None,
            cap: float = _MAX_FRACTION) -> tuple[dict[str, float], dict[str, int], dict]:
    """Remove channels (or halve a kernel's bits), a step at a time, where the loss rises least per unit of excess
    budget freed, no group past `cap` of its channels. Returns the channel fractions, the bits of each layer below
    8, and the predicted figures."""
    fractions = {group: 0.0 for group in cost.groups}
    bits: dict[str, int] = {}
    figures = cost.predict(fractions, bits)
    while _excess(figures, limits) > 0:
        excess = _excess(figures, limits)
        best = None
        for group in cost.groups:
            step = fractions[group] + 1.0 / STEPS
            if step > cap + 1e-9:
                continue
            freed = excess - _excess(cost.predict(dict(fractions, **{group: step}), bits), limits)
            if freed <= 0:
                continue
            levels, increases = curves[group]
            rise = float(np.interp(step, levels, increases) - np.interp(fractions[group], levels, increases))
            score = (max(rise, 0.0) + 1e-9) / freed
            if best is None or score < best[0]:
                best = (score, "channels", group, step)
        for layer, rises in (bit_curves or {}).items():
            current = bits.get(layer, 8)
            fewer = [width for width in rises if width < current]
            if not fewer:
                continue
            width = max(fewer)
            freed = excess - _excess(cost.predict(fractions, dict(bits, **{layer: width})), limits)
            if freed <= 0:
                continue
            score = (max(rises[width] - rises[current], 0.0) + 1e-9) / freed
            if best is None or score < best[0]:
                best = (score, "bits", layer, width)
        if best is None:
            break
        if best[1] == "channels":
            fractions[best[2]] = best[3]
        else:
            bits[best[2]] = int(best[3])
        figures = cost.predict(fractions, bits)
    # A kernel whose channels went after its bits did may no longer pay for its DECODE: it stays 8-bit.
    bits = {layer: width for layer, width in bits.items() if cost.lut_saving(layer, fractions, width) > 0}
    return fractions, bits, cost.predict(fractions, bits)


def _uniform(cost: CostModel, limits: dict[str, float]) -> tuple[dict[str, float], dict[str, int], dict]:
    """The same fraction of every group's channels, the smallest (in sixteenths) that meets the limits."""
    for count in range(round(_MAX_FRACTION * STEPS) + 1):
        fractions = {group: count / STEPS for group in cost.groups}
        figures = cost.predict(fractions, {})
        if _excess(figures, limits) == 0:
            break
    return fractions, {}, figures


# The caps the strategy search tries on how much of one group the greedy search may remove (the uniform plan aside).
_CAPS = (_MAX_FRACTION, 3 / 4, 1 / 2)


class _Strategies:
    """The plans a budget may be met with, the one whose channels (and bits), removed all at once, cost the least
    validation loss before any fine-tuning.

    The greedy search adds up each group's loss as if the others were whole; removing most of several groups at
    once can cost much more than that sum (a keyword-spotting DS-CNN whose greedy plan emptied three layers lost
    15 points after fine-tuning where a spread plan lost 6). So the greedy plan with no cap, greedy plans capped at 3/4
    and 1/2 of any group, and the uniform plan are each measured together on the validation data, and the
    least lossy that meets the limits wins. (With `weight_bits`, only the greedy plans, which can use bits.)

    Under a tight budget every plan can leave a classifier at chance before fine-tuning (that DS-CNN at 20 KB /
    12 KB: 9% of 12 classes for each, losses 2.59 to 2.75 against ln 12 = 2.48). The losses then rank noise,
    not what fine-tuning recovers, and the plan that keeps the most MACs wins: the most capacity the budget
    leaves to train (there, the uniform plan: 82.9 ± 3.1% in TFLM after 10 epochs against the greedy plan's
    75.4 ± 4.8%, 3 seeds).
    """

    def __init__(self, model, plan: ChannelPlan, norms, validation: _Validation, axes):
        self.model, self.plan, self.norms, self.validation, self.axes = model, plan, norms, validation, axes
        self.chosen: dict = {}

    def measured(self, fractions, bits) -> dict[str, float | None]:
        return _accuracy_of_plan(self.model, self.plan, self.norms, fractions, self.validation, bits, self.axes)

    def _at_chance(self, accuracy: float | None) -> bool:
        """True for a classifier's accuracy no better than always answering its most frequent class (+5 points)."""
        if accuracy is None:
            return False
        labels = np.asarray(self.validation.labels)
        one_hot = labels.dtype.kind == "f" and labels.ndim >= 2 and labels.shape[-1] > 1
        classes = labels.reshape(-1, labels.shape[-1]).argmax(-1) if one_hot else labels.reshape(-1).astype(np.int64)
        if classes.size == 0 or classes.min() < 0:
            return False
        return accuracy <= float(np.bincount(classes).max()) / classes.size + 0.05

    def best(self, cost: CostModel, curves, limits: dict[str, float], bit_curves=None):
        candidates = {f"greedy (at most {cap:.0%} of a group)": _greedy(cost, curves, limits, bit_curves, cap)
                      for cap in _CAPS}
        if not bit_curves:  # with bits among the levers, every candidate may use them: the greedy ones do
            candidates["uniform"] = _uniform(cost, limits)
        meeting = {name: plan for name, plan in candidates.items() if _excess(plan[2], limits) == 0}
        if not meeting:
            return candidates[next(iter(candidates))]
        measured = {name: self.measured(plan[0], plan[1]) for name, plan in meeting.items()}
        losses = {name: float(m["loss_before_fine_tuning"] or 0.0) for name, m in measured.items()}
        if all(self._at_chance(m["accuracy_before_fine_tuning"]) for m in measured.values()):
            name = max(meeting, key=lambda key: (meeting[key][2]["macs"], -list(meeting).index(key)))
            reason = "every plan is at chance before fine-tuning: the one that keeps the most MACs"
        else:
            name = min(losses, key=lambda key: (losses[key], list(meeting).index(key)))
            reason = "the least validation loss before fine-tuning"
        self.chosen = {"strategy": name, "reason": reason, "losses_before_fine_tuning": losses,
                       "macs": {key: int(plan[2]["macs"]) for key, plan in meeting.items()}}
        return meeting[name]


def _checked_in_tflm(model, cost: CostModel, curves, budget: Budget, margin: float, phases, bit_curves=None,
                     strategies: _Strategies | None = None):
    """The best strategy's plan, then its file built and measured in TFLM; a missed budget is tightened by its
    miss."""
    limits = _limits(budget, margin)

    def planned(limits):
        if strategies is not None:
            return strategies.best(cost, curves, limits, bit_curves)
        return _greedy(cost, curves, limits, bit_curves)

    for attempt in range(_CHECKS):
        fractions, bits, figures = planned(limits)
        if _excess(figures, _limits(budget, 0.0)) > 0:
            return fractions, bits, figures, None
        with phases.run("check in TFLM", f"plan {attempt + 1}: build, convert, measure"):
            try:
                measured = measure_plan(model, fractions, {layer: 2 ** width for layer, width in bits.items()})
            except errors.ExportError:
                if not bits:
                    raise
                # TFLM's compressor found no kernel worth compressing where the cost model did: plan channels only.
                bit_curves, bits = None, {}
                fractions, bits, figures = _greedy(cost, curves, limits)
                measured = measure_plan(model, fractions)
        missed = budget.misses(measured)
        if not missed:
            return fractions, bits, figures, measured
        if "ram_bytes" in missed and measured["head_bytes"] > max(figures["head_bytes"], cost.head_floor_bytes):
            # TFLM needed a larger head than these activations: its planning memory, which no channel plan shrinks.
            cost.head_floor_bytes = int(measured["head_bytes"])
            _check_reachable(cost, budget)  # refused now, before training, if no plan can meet it
            missed.pop("ram_bytes")
        for name in missed:  # plan below the budget by what the prediction missed it by
            limits[name] *= getattr(budget, name) / measured[name]
    return fractions, bits, figures, measured


def _budget_argument(budget, deprecated: dict) -> Budget:
    """The `Budget` from plan_for_budget's argument, or from the keywords of tfjoint 0.3 (deprecated)."""
    unknown = sorted(set(deprecated) - {"flash_bytes", "arena_bytes", "ram_bytes", "macs"})
    if unknown:
        raise TypeError(f"plan_for_budget() got unexpected keyword argument(s) {unknown}.")
    given = {name: value for name, value in deprecated.items() if value is not None}
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):  # plan_for_budget(model, flash_bytes)
        given.setdefault("flash_bytes", budget)
        budget = None
    if given:
        warnings.warn(f"plan_for_budget({', '.join(f'{name}=' for name in given)}...) is deprecated and will be "
                      "removed in tfjoint 0.5: pass a tfjoint.Budget(flash_bytes=..., ram_bytes=..., macs=...).",
                      DeprecationWarning, stacklevel=3)
        if budget is not None:
            raise errors.ConfigError("pass either a tfjoint.Budget or its figures as keywords, not both.")
        if "arena_bytes" in given:
            given.setdefault("ram_bytes", given.pop("arena_bytes"))
        return Budget(**given)
    if not isinstance(budget, Budget):
        raise errors.ConfigError(f"`budget` must be a tfjoint.Budget (flash_bytes, ram_bytes, macs); received "
                                 f"{type(budget).__name__} {budget!r:.60}.")
    return budget


def _float_model(model, validation_data, why: str):
    """The tf_keras float model (a Keras 3 one rebuilt), checked with the validation data a scan needs."""
    if validation_data is None:
        raise errors.DataError(f"`validation_data` is required: {why}. Pass (x_val, y_val).")
    if is_keras3_model(model):
        from tfjoint.bridge.keras3 import from_keras3

        model = from_keras3(model)
    check_float_model(model)
    collect_inputs(validation_data[0] if isinstance(validation_data, tuple) else validation_data, model,
                   "validation_data", max_samples=1)
    return model


def scan_heads(model: keras.Model, validation_data, *, batch_size: int = 256) -> dict[str, tuple[float, ...]]:
    """The validation loss each attention head's removal alone costs (no training), per attention layer.

    These are the `channel_scores` that make training remove the heads that
    matter least (`plan_for_budget` puts them in its plan itself):

      from tfjoint.plan.for_budget import scan_heads

      scores = scan_heads(float_model, (x_val, y_val))
      joint = tfjoint.prepare(float_model, tfjoint.JointSchedule(channel_sparsity=0.5, channel_scores=scores))

    Args:
      model: the float model (tf_keras or Keras 3), trained.
      validation_data: `(x, y)`, held out from what the plan will be judged on.
      batch_size: samples per forward pass.

    Returns:
      `{attention layer: one loss rise per head}` (a negative rise: the
      model did better without that head); empty for a model without heads.
    """
    model = _float_model(model, validation_data, "the head scan measures the loss each head's removal costs on it")
    plan = channel_groups_of(model)
    validation = _Validation(model, validation_data, batch_size)
    scores = _head_scores(model, plan, _filter_norms(model, plan, "l1"), validation, _progress.Phases("tfjoint plan"))
    return {group: tuple(float(v) for v in values) for group, values in scores.items()}


def plan_for_budget(
    model: keras.Model,
    budget: Budget | None = None,
    *,
    validation_data=None,
    criterion: str = "l1",
    margin: float = 0.02,
    batch_size: int = 256,
    weight_bits: Sequence[int] = (8,),
    **deprecated,
) -> CompressionPlan:
    """The channels to remove from each channel group so the int8 file meets every budget given.

    Example:
      plan = tfjoint.plan_for_budget(float_model, tfjoint.Budget(flash_bytes=64 * 1024, ram_bytes=16 * 1024),
                                     validation_data=(x_val, y_val))
      joint = tfjoint.prepare(float_model, plan)   # the plan's channels are gone by the middle of the fit
      ...
      tfjoint.export_tflite(tfjoint.strip(joint), "model.tflite",
                            options=tfjoint.ExportOptions(budget=plan.budget, runtimes=("tflm",)))

    Args:
      model: the float model (tf_keras or Keras 3), trained.
      budget: a `tfjoint.Budget`: the largest file (`flash_bytes`), the most
        RAM (`ram_bytes`: TFLM's arena, plus DECODE's alternate memory for
        LUT-compressed weights), the most MACs per inference.
      validation_data: `(x, y)`: the channels whose removal costs least loss
        there go first.
      criterion: which filters of a group go first: "l1" or "l2" norm
        (attention heads: the head scan, whatever the criterion).
      margin: plan to this fraction below each budget, for what the cost
        model cannot see exactly (the arena is verified in TFLM at export).
      batch_size: samples per forward pass in the scan.
      weight_bits: the bits per weight a kernel may be stored with, from
        (8, 4, 2). With 4 or 2 among them, the planner may store a layer's
        kernel as 4- or 2-bit indices into 16 or 4 shared values per table
        (TFLM's LUT compression), where that frees flash for less loss than
        removing channels: the plan's `clusters` then name those layers,
        `prepare(model, plan)` trains them shared, and the file ships with
        `export_tflite(..., compression="lut", runtimes=("tflm",))`. Needs
        tflite-micro. Default (8,): channels only.

    Returns:
      A `CompressionPlan` with the fraction of channels to remove per group,
      the clusters per layer (with `weight_bits`), the budget, and the
      predicted figures.

    Raises:
      errors.ConfigError: no budget, a budget that is not positive, or one no
        plan can reach (the smallest reachable figure is named).
      errors.DataError: `validation_data` missing or not `(x, y)`.
    """
    budget = _budget_argument(budget, deprecated)
    if criterion not in ("l1", "l2"):
        raise errors.ConfigError(f"`criterion` must be 'l1' or 'l2'; received {criterion!r}.")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 0.5:
        raise errors.ConfigError(f"`margin` must be a fraction in [0, 0.5); received {margin!r}.")
    levels = _check_weight_bits(weight_bits)
    if levels:
        tflm.require_tflm(f"weight_bits={tuple(weight_bits)} (the plan is LUT-compressed and checked in TFLM)")
    model = _float_model(model, validation_data, "plan_for_budget measures which channels cost least loss on it")
    started = time.perf_counter()
    phases = _progress.Phases("tfjoint plan")
    plan = channel_groups_of(model)
    check = tflm.tflm_available()
    with phases.run("cost model", "one int8 conversion"):
        cost = build_cost_model(model, plan)
    _check_reachable(cost, budget)
    notes = []
    if not cost.arena_measured and budget.ram_bytes is not None:
        notes.append("the arena is predicted from TFLM's planner without TFLM's persistent memory (tflite-micro is not "
                     "installed): the plan may miss ram_bytes, which export_tflite checks in TFLM")
    measured = None
    strategies: _Strategies | None = None
    bits: dict[str, int] = {}
    pruned = prunable_layers(model)  # what prepare prunes, and so can cluster
    axes = {name: _table_axis(model, name, kernel) for name, kernel in cost.kernels.items()
            if name in pruned} if levels else {}
    validation = _Validation(model, validation_data, batch_size)
    norms = _filter_norms(model, plan, criterion)
    head_scores = _head_scores(model, plan, norms, validation, phases)
    ranking = dict(norms, **head_scores)  # within a group, the lowest goes first
    if _excess(cost.full, _limits(budget, margin)) == 0:
        fractions, figures = {group: 0.0 for group in cost.groups}, cost.full
        notes.append("the unpruned model already meets every budget: nothing is removed")
    else:
        curves = _sensitivity(model, plan, ranking, validation, phases)
        bit_curves = _bits_sensitivity(model, axes, levels, validation, phases) if levels else None
        strategies = _Strategies(model, plan, ranking, validation, axes)
        with phases.run("strategies", "greedy, capped and uniform plans, each measured untrained"):
            if check:
                fractions, bits, figures, measured = _checked_in_tflm(model, cost, curves, budget, margin, phases,
                                                                      bit_curves, strategies)
            else:
                fractions, bits, figures = strategies.best(cost, curves, _limits(budget, margin), bit_curves)
        if strategies.chosen:
            losses = strategies.chosen["losses_before_fine_tuning"]
            notes.append(f"plan: {strategies.chosen['strategy']}, {strategies.chosen['reason']}; validation loss "
                         "before fine-tuning: " + ", ".join(f"{name} {loss:.3f}" for name, loss in losses.items()))
        best = measured if measured is not None else figures
        if budget.misses(best):
            where = "measured in TFLM" if measured is not None else "predicted"
            raise errors.ConfigError(f"no channel plan of model '{model.name}' meets {_describe(budget)}: "
                                     f"{_describe_figures(best, budget)} is the smallest reachable ({where}, with "
                                     f"at most {round(_MAX_FRACTION * STEPS)}/{STEPS} of any group's channels "
                                     "removed). Raise the budget, or use a smaller architecture.")
    with phases.run("accuracy of the plan", "its channels zeroed, no fine-tuning"):
        accuracy = _accuracy_of_plan(model, plan, ranking, fractions, validation, bits, axes)
    predicted = dict(figures, full=cost.full, arena_measured=cost.arena_measured, **accuracy,
                     seconds=time.perf_counter() - started, stage_seconds=dict(phases.seconds))
    if strategies is not None and strategies.chosen:
        predicted["strategy"] = strategies.chosen
    if levels:
        predicted["weight_bits"] = {name: bits.get(name, 8) for name in axes}
    if measured is not None:
        predicted["measured_in_tflm"] = {k: int(v) for k, v in measured.items()}
    if bits:
        alt = f" and {measured['alt_bytes']} bytes of alternate decompression memory beside the arena (counted in " \
              "ram_bytes)" if measured is not None and measured.get("alt_bytes") else ""
        notes.append(f"{len(bits)} kernel(s) stored with fewer bits ({', '.join(f'{n}: {b}' for n, b in bits.items())})"
                     f": train with prepare(model, plan) and export with ExportOptions(compression='lut', "
                     f"runtimes=('tflm',)); the file needs TFLM's DECODE{alt}")
    return CompressionPlan(channel_fractions={g: f for g, f in fractions.items() if f > 0},
                           clusters={name: 2 ** width for name, width in bits.items()},
                           channel_scores={group: tuple(scores) for group, scores in head_scores.items()},
                           budget=budget, predicted=predicted, notes=tuple(notes))


def _check_weight_bits(weight_bits) -> tuple[int, ...]:
    """The bit widths below 8 the planner may use, or a ConfigError showing what was received."""
    if isinstance(weight_bits, (int, str)) or not all(
            isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b in (2, 4, 8) for b in weight_bits):
        raise errors.ConfigError(f"`weight_bits` must be a sequence of bit widths from (8, 4, 2), e.g. (8, 4, 2); "
                                 f"received {weight_bits!r}.")
    return tuple(sorted({int(b) for b in weight_bits if b < 8}, reverse=True))


def _describe(budget: Budget) -> str:
    return ", ".join(f"{name}={getattr(budget, name)}" for name in budget.given)


def _describe_figures(figures: dict, budget: Budget) -> str:
    return ", ".join(f"{name} {figures[name]}" for name in budget.given)


def _check_reachable(cost: CostModel, budget: Budget) -> None:
    """Refuses a budget that even one channel per group cannot meet, naming the smallest figure reachable."""
    smallest = cost.predict({group: ONE_CHANNEL for group in cost.groups})  # every group down to one channel
    missed = budget.misses(smallest)
    if missed:
        details = "; ".join(f"`{name}`={getattr(budget, name)} is below {value}, the smallest reachable "
                            f"(every channel group down to one channel; unpruned: {cost.full[name]})"
                            for name, value in missed.items())
        raise errors.ConfigError(f"no channel plan can meet this budget: {details}. Raise the budget, or use a "
                                 "smaller architecture.")

