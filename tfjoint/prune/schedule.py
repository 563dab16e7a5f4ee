"""`JointSchedule`: the one object that says what is pruned how fast, and when fake quant starts.

prepare builds the model's quantizers from it, the callbacks and the report read
it back from the prepared model (`tfjoint.inspect.schedule_of`), the command line plans
it from epochs (`plan_schedule`) and plots it. Its arithmetic is plain Python
and numpy, mirroring TF-MOT's `PolynomialDecay`, so tests, plots and reports can
say what the graph *should* hold at any step without running it; the graph
itself runs TF-MOT's own code (`tfjoint._tfmot.JointPolynomialDecay`), and tests
check the two agree.

The weight sparsity follows TF-MOT's `PruningSchedule` protocol: polynomial
decay (the fields below) is one implementation; any other `PruningSchedule`
(TF-MOT's `ConstantSparsity`, or a user's own subclass, registered for Keras
serialization) can be given as `weight_schedule`, and the masks follow it.

Unlike TF-MOT, any `end_step` is accepted: masks also update at `end_step`
itself when it is off the `frequency` grid, so the target is always reached
exactly at `end_step` (TF-MOT would stop at the last grid step below it).
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Mapping

import numpy as np

from tfjoint import errors

__all__ = ["JointSchedule", "plan_schedule", "expected_zero_fraction", "SCHEDULE_VERSION", "check_clusters",
           "checked_scores", "MIN_CLUSTERS", "MAX_CLUSTERS", "CHANNEL_CRITERIA", "PRUNE_END", "UPDATES"]

SCHEDULE_VERSION = 3
CHANNEL_CRITERIA = ("l1", "l2")
PRUNE_END = 0.5  # without an end_step, the target is reached half way through the first fit
UPDATES = 16  # ... in about this many mask updates
_FREQUENCY = 100  # TF-MOT's default mask update period, when end_step is given


def _check_number(name: str, value, expected: str = "a number") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise errors.ConfigError(f"`{name}` must be {expected}; received {value!r}.")


# Weight sharing: distinct values per table, zero included. Two would be {0, c}: one value shared by every
# surviving weight of a table, of one sign (the mean of signed weights is about 0), which collapses the kernel.
# Three is the least that keeps a kernel's signs: {-c, 0, +c}, 2-bit indices.
MIN_CLUSTERS, MAX_CLUSTERS = 3, 256


def check_clusters(name: str, value) -> int:
    """`value` as a number of clusters, or a ConfigError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not MIN_CLUSTERS <= value <= MAX_CLUSTERS:
        why = (" Two values per table would be zero and one other value of one sign: every surviving weight of a "
               "channel the same, and the kernel collapses (its int8 file then matches an equally collapsed "
               "quantization-aware model, so no gate would catch it). Use 3 ({-c, 0, c}, 2-bit indices) or more."
               if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 < value < MIN_CLUSTERS
               else "")
        raise errors.ConfigError(f"`{name}` must be an int from {MIN_CLUSTERS} to {MAX_CLUSTERS} (the distinct "
                                 f"values a kernel keeps per table, zero included; 16 for 4-bit indices); "
                                 f"received {value!r}.{why}")
    return int(value)


def checked_scores(value) -> Mapping[str, tuple[float, ...]]:
    """`channel_scores` as a read-only {group: tuple of finite floats}."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise errors.ConfigError(f"`channel_scores` must be a dict {{group: one score per channel}}; received "
                                 f"{type(value).__name__}.")
    checked = {}
    for group, scores in value.items():
        values = np.asarray(scores, dtype=np.float64) if not isinstance(scores, (str, bytes)) else np.array([])
        if not isinstance(group, str) or values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
            raise errors.ConfigError(f"`channel_scores['{group}']` must be a non-empty list of finite numbers (one "
                                     f"per channel of the group); received {scores!r}.")
        checked[group] = tuple(float(v) for v in values)
    return types.MappingProxyType(checked)


def _check_fraction(name: str, value) -> None:
    _check_number(name, value)
    if not 0.0 <= float(value) < 1.0:
        raise errors.ConfigError(f"`{name}` must be in [0, 1) (e.g. 0.8 for 80% zeros); received {value!r}.")


@dataclasses.dataclass(frozen=True)
class JointSchedule:
    """What fraction of each pruned kernel is zero at every step, and when fake quant starts.

    Steps count training batches seen by the prepared model (counters kept in
    the model's weights, so they survive saving and re-compiling).

    Attributes:
      target_sparsity: fraction of zeros every pruned kernel ends with, in
        [0, 1); or a dict `{layer name: sparsity}` giving each pruned layer its
        own target (layers not named are not pruned), e.g. from
        `tfjoint.allocate_sparsity`.
      end_step: step of the last mask update: sparsity equals the target from
        then on. Any value > `begin_step` (it need not be on the `frequency`
        grid: masks also update at `end_step`). Defaults to None: half of the
        first `fit` (its epochs times its steps per epoch), set when that fit
        starts, with `frequency` giving about 16 mask updates.
      begin_step: step of the first mask update.
      initial_sparsity: sparsity at `begin_step` (capped at a layer's target).
      power: exponent of TF-MOT's PolynomialDecay.
      frequency: masks update every `frequency` steps from `begin_step`.
        Defaults to None: 100 (TF-MOT's) with an `end_step`, or `end_step /
        16` when the fit sets it.
      quant_start_step: training steps run in float before fake quantization
        switches on (0: every step is fake-quantized). At inference fake quant
        is always on, so evaluation shows the int8 model.
      channel_sparsity: fraction of output channels (filters) removed from each
        channel group (the filters of prunable Conv1D/Conv2D/Dense layers that
        go together), on the same PolynomialDecay ramp; or a dict `{group:
        fraction}` (from `tfjoint.plan_for_budget`) for each group its own,
        groups not named keeping every channel. `target_sparsity` then
        applies within the kept channels.
      weight_schedule: a TF-MOT `PruningSchedule` (any subclass: TF-MOT's
        `ConstantSparsity`, or your own, registered with
        `keras.utils.register_keras_serializable`) that the weight masks of
        every pruned kernel follow instead of the polynomial decay; or None.
        `target_sparsity` is then its sparsity at `end_step` (computed when
        not given as a dict).
      clusters: weight sharing: the distinct values (2 to 256, zero among
        them) every pruned kernel keeps per table, trained in the same fit;
        or a dict `{layer name: clusters}` (layers not named keep every
        value); or None (no sharing). 16 gives 4-bit indices under TFLM's
        LUT compression (`ExportOptions(compression="lut")`). At least 3:
        `{-c, 0, c}` (see `MIN_CLUSTERS`).
      shared_tables: for a kernel quantized per channel, whether its channels
        share one table of values (levels relative to each channel's largest
        weight, symmetric: `{-l, 0, +l}`, so `clusters` - 1 rounded down to
        even are trained) instead of a table per channel. None (default):
        where per-channel tables would cost the file more than the
        compression saves with them (small kernels, such as a 64x64 pointwise
        convolution's); True or False: every kernel. A depthwise kernel keeps
        a table per channel: TF-MOT trains it with one range for every
        channel, and the converter quantizes it per channel from values
        rounded to that range, which one shared table would not survive.
      channel_criterion: how filters are ranked for removal: "l1" (sum of
        absolute weights) or "l2" norm, summed over a group's producers.
      channel_scores: `{group: one score per channel}`, measured importances
        that rank a group's channels instead of their norms (the highest
        kept): `tfjoint.plan_for_budget` fills it for attention heads from a
        loss scan (the validation loss each head's removal costs), and
        `scan_heads` (in `tfjoint.plan.for_budget`) returns it. Groups not named
        follow `channel_criterion`.
      residual_sparsity: for a transformer, the fraction of its residual
        width (the channels its embeddings, LayerNorms and Adds carry)
        removed from every layer that writes, carries or reads it, before the
        fit (`tfjoint.prune.residual`; ranked by the stream's LayerNorm
        outputs on `prepare`'s `sample_inputs`, else by weight norms): where
        half the heads and FFN neurons leave the latency bound by the
        residual width.

    Example:
      >>> JointSchedule(0.8).end_step is None   # set by the first fit: half of it
      True
      >>> JointSchedule(0.8).resolved(total_steps=1000).end_step
      500
    """

    target_sparsity: float | Mapping[str, float] = 0.0
    end_step: int | None = None
    begin_step: int = 0
    initial_sparsity: float = 0.0
    power: float = 3.0
    frequency: int | None = None
    quant_start_step: int = 0
    channel_sparsity: float | Mapping[str, float] = 0.0
    weight_schedule: Any = None
    clusters: int | Mapping[str, int] | None = None
    shared_tables: bool | None = None
    channel_criterion: str = "l1"
    channel_scores: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    residual_sparsity: float = 0.0
    version: int = SCHEDULE_VERSION

    def __post_init__(self):
        if self.version in (2,):  # files of tfjoint 0.3: same fields, frequency given, no channel criterion
            object.__setattr__(self, "version", SCHEDULE_VERSION)
        if self.channel_criterion not in CHANNEL_CRITERIA:
            raise errors.ConfigError(f"`channel_criterion` must be one of {list(CHANNEL_CRITERIA)}; received "
                                     f"{self.channel_criterion!r}.")
        if self.end_step is not None and self.frequency is None:
            object.__setattr__(self, "frequency", _FREQUENCY)
        object.__setattr__(self, "channel_scores", checked_scores(self.channel_scores))
        if self.weight_schedule is not None:
            object.__setattr__(self, "weight_schedule", _pruning_schedule(self.weight_schedule))
        _check_fraction("residual_sparsity", self.residual_sparsity)
        object.__setattr__(self, "residual_sparsity", float(self.residual_sparsity))
        for field in ("target_sparsity", "channel_sparsity"):
            value = getattr(self, field)
            if isinstance(value, Mapping):
                targets = dict(value)
                for name, target in targets.items():
                    if not isinstance(name, str):
                        raise errors.ConfigError(f"`{field}` keys must be layer (group) names; received {name!r}.")
                    _check_fraction(f"{field}['{name}']", target)
                object.__setattr__(self, field, types.MappingProxyType({k: float(v) for k, v in targets.items()}))
            else:
                _check_fraction(field, value)
        if isinstance(self.clusters, Mapping):
            clusters = {}
            for name, value in dict(self.clusters).items():
                if not isinstance(name, str):
                    raise errors.ConfigError(f"`clusters` keys must be layer names; received {name!r}.")
                clusters[name] = check_clusters(f"clusters['{name}']", value)
            object.__setattr__(self, "clusters", types.MappingProxyType(clusters))
        elif self.clusters is not None:
            object.__setattr__(self, "clusters", check_clusters("clusters", self.clusters))
        if self.shared_tables is not None and not isinstance(self.shared_tables, (bool, np.bool_)):
            raise errors.ConfigError(f"`shared_tables` must be True, False or None (decided per kernel); received "
                                     f"{self.shared_tables!r}.")
        for name in ("end_step", "begin_step", "frequency", "quant_start_step"):
            value = getattr(self, name)
            if value is None and name in ("end_step", "frequency"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise errors.ConfigError(f"`{name}` must be an int; received {value!r}.")
            object.__setattr__(self, name, int(value))
        _check_number("power", self.power)
        _check_fraction("initial_sparsity", self.initial_sparsity)
        if self.begin_step < 0:
            raise errors.ConfigError(f"`begin_step` must be >= 0; received {self.begin_step}.")
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise errors.ConfigError(
                f"`end_step` must be > begin_step={self.begin_step}; received {self.end_step}. It is the step "
                "at which the target sparsity is reached, e.g. half of the fine-tuning steps (or leave it None: "
                "half of the first fit)."
            )
        if self.frequency is not None and self.frequency < 1:
            raise errors.ConfigError(f"`frequency` must be >= 1; received {self.frequency}.")
        if self.power <= 0:
            raise errors.ConfigError(f"`power` must be > 0; received {self.power}.")
        if self.quant_start_step < 0:
            raise errors.ConfigError(f"`quant_start_step` must be >= 0; received {self.quant_start_step}.")
        if not isinstance(self.target_sparsity, Mapping) and self.initial_sparsity > self.target_sparsity:
            raise errors.ConfigError(
                f"`initial_sparsity` must be in [0, target_sparsity={self.target_sparsity}]; "
                f"received {self.initial_sparsity}."
            )
        if self.version != SCHEDULE_VERSION:
            raise errors.ConfigError(f"`version` must be {SCHEDULE_VERSION}; received {self.version!r}.")

    # --- When the fit sets the end ---------------------------------------------

    @property
    def is_resolved(self) -> bool:
        """Whether `end_step` is known (else the first fit sets it)."""
        return self.end_step is not None

    def resolved(self, total_steps: int) -> "JointSchedule":
        """This schedule with `end_step` set for a fit of `total_steps` steps (unchanged if it has one).

        The target is reached at half the fit (`PRUNE_END`) in about 16 mask
        updates, leaving the rest to recover at full sparsity.
        """
        if self.end_step is not None:
            return self
        if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
            raise errors.ConfigError(f"`total_steps` must be an int >= 1; received {total_steps!r}.")
        end = max(self.begin_step + 1, int(round(PRUNE_END * total_steps)))
        frequency = self.frequency or max(1, (end - self.begin_step) // UPDATES)
        return dataclasses.replace(self, end_step=end, frequency=frequency)

    def _require_end(self) -> int:
        if self.end_step is None:
            raise errors.ConfigError("this JointSchedule has no end_step yet: the first fit sets it (half of its "
                                     "steps), or give one: JointSchedule(..., end_step=...).")
        return self.end_step

    # --- Targets -------------------------------------------------------------

    @property
    def per_layer(self) -> bool:
        """True when `target_sparsity` is a dict of per-layer targets."""
        return isinstance(self.target_sparsity, Mapping)

    def target_for(self, layer_name: str) -> float | None:
        """The final sparsity of `layer_name`'s kernel (None: a per-layer plan that leaves it dense)."""
        if isinstance(self.target_sparsity, Mapping):
            return self.target_sparsity.get(layer_name)
        return float(self.target_sparsity)

    def clusters_for(self, layer_name: str) -> int | None:
        """The clusters of a layer's pruned kernels (None: every value kept)."""
        if isinstance(self.clusters, Mapping):
            return self.clusters.get(layer_name)
        return self.clusters

    @property
    def per_group_channels(self) -> bool:
        """True when `channel_sparsity` is a dict of per-group fractions (a budget plan)."""
        return isinstance(self.channel_sparsity, Mapping)

    @property
    def prunes_channels(self) -> bool:
        """Whether any channel group loses channels."""
        if isinstance(self.channel_sparsity, Mapping):
            return any(value > 0 for value in self.channel_sparsity.values())
        return self.channel_sparsity > 0

    def channel_target_for(self, group: str) -> float:
        """The fraction of `group`'s channels removed at the end (0 for a group a per-group plan does not name)."""
        if isinstance(self.channel_sparsity, Mapping):
            return float(self.channel_sparsity.get(group, 0.0))
        return float(self.channel_sparsity)

    def mean_target(self, sizes: Mapping[str, int] | None = None) -> float:
        """The target, or for a per-layer plan its mean weighted by `sizes` (plain mean without)."""
        targets = self.target_sparsity
        if not isinstance(targets, Mapping):
            return float(targets)
        if not targets:
            return 0.0
        weights = {name: (sizes or {}).get(name, 1) for name in targets}
        total = sum(weights.values())
        return sum(targets[n] * w for n, w in weights.items()) / total

    def weight_schedule_config(self, final_sparsity: float) -> dict[str, Any]:
        """What a pruned kernel's quantizer builds its mask schedule from: the user's `weight_schedule`
        serialized (`{"class_name", "config"}`), or `decay_arguments(final_sparsity)`."""
        if self.weight_schedule is not None:
            return _serialized(self.weight_schedule)
        return self.decay_arguments(final_sparsity)

    def decay_arguments(self, final_sparsity: float) -> dict[str, Any]:
        """Keyword arguments of TF-MOT's `PolynomialDecay` for one kernel with this target (`end_step` and
        `frequency` None until the fit sets them)."""
        return dict(
            initial_sparsity=min(float(self.initial_sparsity), float(final_sparsity)),
            final_sparsity=float(final_sparsity),
            begin_step=self.begin_step,
            end_step=self.end_step,
            power=float(self.power),
            frequency=self.frequency,
        )

    # --- Arithmetic (what the graph does, in numpy) --------------------------

    def sparsity_at(self, step: int, target: float | None = None) -> float:
        """PolynomialDecay's value at `step` (whether or not masks update then); a `weight_schedule`'s own."""
        if self.weight_schedule is not None:
            return _evaluated(self.weight_schedule, step)[1]
        if target is None:
            if isinstance(self.target_sparsity, Mapping):
                raise errors.ConfigError("a per-layer schedule has one target per layer: pass `target`.")
            target = float(self.target_sparsity)
        initial = min(float(self.initial_sparsity), target)
        end = self._require_end()
        progress = min(1.0, max(0.0, (step - self.begin_step) / (end - self.begin_step)))
        return target + (initial - target) * (1.0 - progress) ** self.power

    def is_update_step(self, step: int) -> bool:
        """True if masks update at `step`: on the frequency grid from begin_step, or at end_step."""
        if self.weight_schedule is not None:
            return _evaluated(self.weight_schedule, step)[0]
        end = self._require_end()
        if step == end:
            return True
        return self.begin_step <= step <= end and (step - self.begin_step) % (self.frequency or 1) == 0

    def update_steps(self) -> list[int]:
        """Every step at which masks update, in order (the last is always `end_step`)."""
        end = self._require_end()
        if self.weight_schedule is not None:
            return [step for step in range(end + 1) if self.is_update_step(step)]
        steps = list(range(self.begin_step, end + 1, self.frequency or 1))
        if steps[-1] != end:
            steps.append(end)
        return steps

    def last_update_step(self, steps_taken: int) -> int | None:
        """The most recent mask-update step at or before `steps_taken`, or None."""
        if self.weight_schedule is not None:
            return max((s for s in self.update_steps() if s <= steps_taken), default=None)
        end = self._require_end()
        if steps_taken < self.begin_step:
            return None
        if steps_taken >= end:
            return end
        frequency = self.frequency or 1
        return self.begin_step + ((steps_taken - self.begin_step) // frequency) * frequency

    def scheduled_sparsity(self, steps_taken: int, target: float | None = None) -> float:
        """Sparsity the masks hold after `steps_taken` training steps (0 before the first update).

        As in TF-MOT, the n-th training step (counting from 1) is step n.
        """
        last = self.last_update_step(steps_taken)
        return 0.0 if last is None else self.sparsity_at(last, target)

    def qat_active(self, steps_taken: int) -> bool:
        """Whether the last training step ran with fake quantization on."""
        return steps_taken > self.quant_start_step

    # --- Serialisation ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for field in ("target_sparsity", "channel_sparsity", "clusters"):
            if isinstance(data[field], Mapping):
                data[field] = dict(data[field])
        data["channel_scores"] = {group: list(scores) for group, scores in self.channel_scores.items()}
        data["weight_schedule"] = None if self.weight_schedule is None else _serialized(self.weight_schedule)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JointSchedule":
        """The schedule `to_dict` wrote (this version's, or tfjoint 0.3's)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise errors.ConfigError(f"unknown JointSchedule fields {unknown}; known: {sorted(known)}.")
        return cls(**data)

    @classmethod
    def from_plan(cls, plan, end_step: int | None = None, **fields) -> "JointSchedule":
        """The schedule that trains a `tfjoint.CompressionPlan`: its channels per group, its weight sparsity per
        layer and its weight sharing, reached at `end_step` (None: half of the first fit)."""
        given = sorted(set(fields) & {"target_sparsity", "channel_sparsity", "clusters"})
        if given:
            raise errors.ConfigError(f"a CompressionPlan already says {', '.join(given)}: give only timing fields "
                                     "beside it (end_step, frequency, quant_start_step, ...).")
        return cls(target_sparsity=dict(plan.weight_sparsity) if plan.weight_sparsity else 0.0,
                   channel_sparsity=dict(plan.channel_fractions), clusters=dict(plan.clusters) or None,
                   channel_scores=plan.channel_scores, end_step=end_step, **fields)

    @classmethod
    def following(cls, weight_schedule, end_step: int | None = None, **fields) -> "JointSchedule":
        """A schedule whose weight masks follow a TF-MOT `PruningSchedule` (its target: its sparsity at `end_step`).

        `end_step` defaults to the schedule's own (`get_config()["end_step"]`).
        """
        schedule = _pruning_schedule(weight_schedule)
        config = schedule.get_config().get("config", {})
        end = end_step if end_step is not None else config.get("end_step")
        if end is None or (isinstance(end, (int, np.integer)) and end < 0):
            raise errors.ConfigError(f"the pruning schedule {type(schedule).__name__} has no end_step: pass "
                                     "`end_step` (the step from which its sparsity holds).")
        fields.setdefault("target_sparsity", _evaluated(schedule, int(end))[1])
        fields.setdefault("begin_step", min(int(config.get("begin_step", 0)), int(end) - 1))
        return cls(end_step=int(end), weight_schedule=schedule, **fields)

    def replace(self, **changes) -> "JointSchedule":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def plan_schedule(
    total_steps: int,
    target_sparsity: float | Mapping[str, float],
    *,
    prune_end: float = 0.5,
    quant_start: float = 0.0,
    channel_sparsity: float | Mapping[str, float] = 0.0,
    updates: int = 16,
) -> JointSchedule:
    """A schedule for a fit of `total_steps` training steps.

    The target is reached at `prune_end` of the run (a fraction) after about
    `updates` mask updates, leaving the rest of the run to recover at full
    sparsity: at high sparsity, recovery time after `end_step` matters more
    than anything else. Fake quant starts at `quant_start` of the run.

    Example:
      >>> plan_schedule(1000, 0.8).end_step, plan_schedule(1000, 0.8).frequency
      (500, 31)

    Raises:
      errors.ConfigError: `total_steps` < 1 or a fraction outside its range.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps < 1:
        raise errors.ConfigError(f"`total_steps` must be an int >= 1; received {total_steps!r}.")
    for name, value, low_open in (("prune_end", prune_end, True), ("quant_start", quant_start, False)):
        _check_number(name, value)
        if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
            bounds = "(0, 1]" if low_open else "[0, 1]"
            raise errors.ConfigError(f"`{name}` must be a fraction of the run in {bounds}; received {value!r}.")
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 1:
        raise errors.ConfigError(f"`updates` must be an int >= 1; received {updates!r}.")
    end_step = max(1, int(round(prune_end * total_steps)))
    return JointSchedule(
        target_sparsity=target_sparsity,
        end_step=end_step,
        begin_step=0,
        frequency=max(1, end_step // updates),
        quant_start_step=int(math.floor(quant_start * total_steps)),
        channel_sparsity=channel_sparsity,
    )


def expected_zero_fraction(size: int, sparsity: float) -> float:
    """Fraction of zeros TF-MOT's mask update leaves in a tensor of `size` elements.

    TF-MOT keeps `max(round(size * (1 - sparsity)), 1)` weights, computed in
    float32 and rounded half to even (`tf.math.round`); float64 arithmetic
    would differ by one weight in some cases.
    """
    one = np.float32(1.0)
    kept = max(int(np.round(np.float32(size) * (one - np.float32(sparsity)))), 1)
    return 1.0 - kept / size


def kept_channels(channels: int, sparsity: float) -> int:
    """Channels a group of `channels` keeps at `sparsity`: TF-MOT's rounding, at least one."""
    one = np.float32(1.0)
    return max(int(np.round(np.float32(channels) * (one - np.float32(sparsity)))), 1)


def _pruning_schedule(value):
    """A TF-MOT `PruningSchedule` from itself or its serialized config."""
    import tensorflow_model_optimization as tfmot  # only for a schedule of the user's: the arithmetic needs no TF

    if isinstance(value, Mapping):
        from tfjoint._keras import keras

        with keras.utils.custom_object_scope({"ConstantSparsity": tfmot.sparsity.keras.ConstantSparsity,
                                              "PolynomialDecay": tfmot.sparsity.keras.PolynomialDecay}):
            try:
                value = keras.utils.deserialize_keras_object(dict(value))
            except Exception as error:
                raise errors.ConfigError(
                    f"`weight_schedule` {dict(value).get('class_name')!r} cannot be rebuilt from its config "
                    f"({error}): register the class with keras.utils.register_keras_serializable.") from error
    if not isinstance(value, tfmot.sparsity.keras.PruningSchedule):
        raise errors.ConfigError(f"`weight_schedule` must be a TF-MOT PruningSchedule (e.g. "
                                 f"tfmot.sparsity.keras.ConstantSparsity(0.5, 0)); received {type(value).__name__}.")
    return value


def _serialized(schedule) -> dict[str, Any]:
    from tfjoint._keras import keras

    name = keras.utils.get_registered_name(type(schedule))
    config = schedule.get_config()
    return {"class_name": name, "config": dict(config.get("config", config))}


def _evaluated(schedule, step: int) -> tuple[bool, float]:
    """(should prune, sparsity) of a TF-MOT schedule at `step`, as Python values."""
    should_prune, sparsity = schedule(np.int64(step))
    return bool(np.asarray(should_prune)), float(np.asarray(sparsity))
