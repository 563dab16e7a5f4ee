"""Which weights of a model carry channel masks, for `prepare`: its channel groups, and each member's spec.

A channel group (`prune.channel_groups`) is a set of filters that go
together; every layer whose weights (or output) hold those channels gets a
spec saying which segments of its channels belong to which group, on which
axes its masks sit, the schedule its group ramps on, and whether it is a
producer (its filters are ranked for the group).
"""

from __future__ import annotations

from typing import Mapping

from absl import logging

from tfjoint import errors
from tfjoint.prune.channel_groups import ChannelPlan, plan_channel_groups
from tfjoint.prune.schedule import JointSchedule
from tfjoint.registry import OUTPUT, kind_of, prunable_kinds_sentence

__all__ = ["channel_specs"]


def _specs(model, plan: ChannelPlan, schedule: JointSchedule) -> dict[str, dict]:
    """The channel spec (see `JointQuantizeConfig`) of every layer whose weights carry a channel mask."""
    prunable = {name: group for name, group in plan.prunable_groups.items() if schedule.channel_target_for(name) > 0}
    specs = {}
    for layer in model.layers:
        kind = kind_of(layer)
        axes = kind.channels.axes if kind is not None else {}
        if not axes or layer.name not in plan.layers:
            continue
        segments: list[tuple[str | None, int]] = [(group if group in prunable else None, size)
                                                  for group, size in plan.layer_segments(layer.name)]
        groups = [group for group, _ in segments if group is not None]
        if not groups:
            continue
        present = {name: axis for name, axis in axes.items()
                   if name == OUTPUT or getattr(layer, name, None) is not None}
        own = next((g for g in groups if layer.name in prunable[g].producers), None)
        # A producer's schedule ramps its own group; every other member follows the masks its groups' producers set.
        decay = schedule.decay_arguments(schedule.channel_target_for(own or groups[0]))
        specs[layer.name] = {"segments": segments, "axes": present, "schedule": decay,
                             "criterion": schedule.channel_criterion, "producer": own is not None}
        if own is not None and own in schedule.channel_scores:
            scores = schedule.channel_scores[own]
            if len(scores) != prunable[own].channels:
                raise errors.ConfigError(
                    f"`channel_scores['{own}']` has {len(scores)} scores; group '{own}' of model '{model.name}' has "
                    f"{prunable[own].channels} channels. Plan for this model (tfjoint.plan_for_budget(model, ...)).")
            specs[layer.name]["scores"] = list(scores)
    return specs


def _per_group_targets(plan: ChannelPlan, targets: Mapping[str, float], model) -> dict[str, float]:
    """A per-group channel plan keyed by this model's group names (a key may name any producer of its group)."""
    owner = {producer: name for name, group in plan.groups.items() for producer in group.producers}
    resolved, unknown = {}, []
    for key, fraction in targets.items():
        group = key if key in plan.groups else owner.get(key)
        if group is None:
            unknown.append(key)
        elif group in plan.prunable_groups:
            resolved[group] = float(fraction)
    if unknown:
        raise errors.ConfigError(
            f"the channel plan names groups that model '{model.name}' does not have: {sorted(unknown)}. Its channel "
            f"groups are {sorted(plan.prunable_groups)}: plan for this model (tfjoint.plan_for_budget(model, ...)).")
    return resolved


def channel_specs(model, schedule: JointSchedule, pruned: Mapping) -> tuple[JointSchedule, dict[str, dict]]:
    """Channel specs for the quantize scheme (the pruned Conv/Dense layers produce channel groups), and the
    schedule with a per-group plan keyed by this model's group names.

    Raises:
      errors.ConfigError: channels asked for but none can be removed, or a
        plan naming groups the model does not have.
    """
    per_group = isinstance(schedule.channel_sparsity, Mapping)
    if not per_group and not schedule.prunes_channels:
        return schedule, {}
    producers = {name for name in pruned if getattr(kind_of(model.get_layer(name)), "is_producer", False)}
    plan = plan_channel_groups(model, producers)
    for frozen in plan.frozen_notes(include_outputs=False):
        logging.warning("tfjoint channel pruning: %s.", frozen)
    if isinstance(schedule.channel_sparsity, Mapping):
        schedule = schedule.replace(channel_sparsity=_per_group_targets(plan, schedule.channel_sparsity, model))
    elif not plan.prunable_groups:
        reasons = "; ".join(plan.frozen_notes()) or "it has no layer whose channels tfjoint removes"
        raise errors.ConfigError(
            f"`channel_sparsity`={schedule.channel_sparsity} but no channels of model '{model.name}' can be removed: "
            f"{reasons} ({prunable_kinds_sentence()}). Use channel_sparsity=0 (weight sparsity still applies), or "
            "prune a model with hidden layers of those kinds.")
    return schedule, _specs(model, plan, schedule)
