"""`prepare`'s one schedule argument (and the keywords of tfjoint 0.3, deprecated), as one `JointSchedule`.

`schedule` may be a `JointSchedule`, a `CompressionPlan` (from
`plan_for_budget`), a TF-MOT `PruningSchedule`, a float (a target sparsity,
with the defaults for the rest) or a dict `{layer: sparsity}` (from
`allocate_sparsity`). The deprecated keywords still build one, with a
`DeprecationWarning` naming the field that replaces each.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint.plan.budget import CompressionPlan
from tfjoint.prune.schedule import JointSchedule

__all__ = ["joint_schedule", "SCHEDULE_KEYWORDS", "SELECTION_KEYWORDS", "CHECK_KEYWORDS"]

# prepare's keywords of tfjoint 0.3 that are fields of JointSchedule now.
SCHEDULE_KEYWORDS = ("target_sparsity", "end_step", "begin_step", "initial_sparsity", "power", "frequency",
                     "quant_start_step", "channel_sparsity", "clusters", "channel_criterion")
SELECTION_KEYWORDS = ("prune_only", "exclude", "prune_depthwise")
CHECK_KEYWORDS = ("check_conversion", "runtimes")


def _warn(name: str, replacement: str) -> None:
    warnings.warn(f"prepare({name}=...) is deprecated and will be removed in tfjoint 0.5: {replacement}.",
                  DeprecationWarning, stacklevel=4)


def _from_keywords(schedule, keywords: dict[str, Any]) -> JointSchedule:
    """A schedule from prepare's old keywords: beside a plan or a TF-MOT schedule (timing only), or alone."""
    for name in keywords:
        _warn(name, f"pass tfjoint.JointSchedule({name}=...) as the schedule")
    if isinstance(schedule, JointSchedule):
        raise errors.ConfigError(f"pass either `schedule` or {', '.join(f'`{n}`' for n in sorted(keywords))}, not "
                                 f"both: the schedule already holds them ({schedule.to_dict()}).")
    if isinstance(schedule, CompressionPlan):
        return JointSchedule.from_plan(schedule, **keywords)
    if isinstance(schedule, tfmot.sparsity.keras.PruningSchedule):
        if "target_sparsity" in keywords:
            raise errors.ConfigError(f"pass either a PruningSchedule or `target_sparsity`, not both: "
                                     f"{type(schedule).__name__} says how sparse every pruned kernel gets.")
        return JointSchedule.following(schedule, keywords.pop("end_step", None), **keywords)
    if schedule is not None:
        if "target_sparsity" in keywords:
            raise errors.ConfigError("pass the target sparsity once: as `schedule` or as `target_sparsity`.")
        keywords["target_sparsity"] = schedule
    if "target_sparsity" not in keywords:
        raise errors.ConfigError("prepare needs a schedule: a target sparsity (prepare(model, 0.8)), a "
                                 "tfjoint.JointSchedule, a tfjoint.CompressionPlan or a TF-MOT PruningSchedule.")
    return JointSchedule(**keywords)


def joint_schedule(schedule, keywords: Mapping[str, Any]) -> JointSchedule:
    """The one `JointSchedule` from `prepare`'s schedule argument and the (deprecated) keywords actually given.

    Raises:
      errors.ConfigError: no schedule, a schedule given twice, or a value of
        the wrong type.
    """
    keywords = {name: value for name, value in keywords.items() if value is not None}
    if keywords:
        return _from_keywords(schedule, dict(keywords))
    if isinstance(schedule, JointSchedule):
        return schedule
    if isinstance(schedule, CompressionPlan):
        return JointSchedule.from_plan(schedule)
    if isinstance(schedule, tfmot.sparsity.keras.PruningSchedule):
        return JointSchedule.following(schedule)
    if isinstance(schedule, (int, float, Mapping)) and not isinstance(schedule, bool):
        return JointSchedule(target_sparsity=schedule)
    if schedule is None:
        raise errors.ConfigError("prepare needs a schedule: a target sparsity (prepare(model, 0.8)), a "
                                 "tfjoint.JointSchedule, a tfjoint.CompressionPlan (from tfjoint.plan_for_budget) or a "
                                 "TF-MOT PruningSchedule.")
    raise errors.ConfigError(
        f"`schedule` must be a target sparsity (a float, or a dict {{layer: sparsity}}), a tfjoint.JointSchedule, a "
        f"tfjoint.CompressionPlan (from plan_for_budget) or a TF-MOT PruningSchedule; received "
        f"{type(schedule).__name__} {schedule!r:.80}.")
