"""Stage 1 of `export_tflite`: what is converted, and what the report says about how it was trained.

A prepared model is stripped here (the one place this happens); a stripped or
TF-MOT quantization-aware model is taken as it is; a float model is
post-training quantized. The result is a frozen `Source` with its own notes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfjoint import errors
from tfjoint._keras import distribution_strategy_of
from tfjoint.export.options import QAT
from tfjoint.findings import Finding, Kind, note
from tfjoint.prune.schedule import JointSchedule
from tfjoint.train.model_kind import ModelKind
from tfjoint.train.readback import original_channels, pruning_plan, quantized_steps, schedule_of
from tfjoint.train.strip import float_twin, strip

__all__ = ["Source", "quantization_source"]


@dataclasses.dataclass(frozen=True)
class Source:
    """The Keras model(s) that are converted, and how they were trained.

    Attributes:
      kind: what the user handed in.
      qat_model: the quantization-aware model, or None (a float model, or one
        whose fake quantization never trained).
      float_model: the float weights for post-training quantization (a
        stripped model's twin, or the float model given), or None.
      pruned_float: the stripped model's float twin (its pruned, fine-tuned
        weights without fake quantization), for the report's accuracy steps;
        None for a float model.
      schedule: the `JointSchedule` it was trained with, when known.
      plan: the final sparsity of every pruned kernel, when known.
      original_channels: output channels before channel pruning, by layer.
      notes: what this stage had to say.
    """

    kind: ModelKind
    qat_model: Any | None
    float_model: Any | None
    pruned_float: Any | None
    schedule: JointSchedule | None
    plan: dict[str, float] | None
    original_channels: dict[str, int]
    notes: tuple[Finding, ...] = ()


def _trained_on_several_workers(model) -> bool:
    """Whether the model's variables live in a MultiWorkerMirroredStrategy across several workers."""
    resolver = getattr(distribution_strategy_of(model), "cluster_resolver", None)
    if resolver is None:
        return False
    return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def _schedule_of(model, kind: ModelKind) -> JointSchedule | None:
    return schedule_of(model) if kind in (ModelKind.PREPARED, ModelKind.STRIPPED) else None


def _float_source(model, quantization: str, representative_given: bool) -> Source:
    if not representative_given:
        raise errors.ModelStructureError(
            f"model '{model.name}' is neither prepared with tfjoint nor quantization-aware, so it has no trained "
            "int8 ranges. Prepare and fit it with tfjoint first, or pass `representative_data` for full-integer "
            "post-training quantization.")
    if quantization == QAT:
        raise errors.ConfigError(
            f"`quantization`='qat' but model '{model.name}' is a float model: it has no trained int8 ranges. "
            "Prepare and fit it with tfjoint first, or use quantization='ptq' (or 'auto') with "
            "`representative_data`.")
    return Source(ModelKind.FLOAT, None, model, None, None, None, {}, (note(
        Kind.SOURCE, "model was not quantization-aware: used full-integer post-training quantization with "
                     "representative_data"),))


def quantization_source(model, kind: ModelKind, quantization: str, representative_given: bool) -> Source:
    """Strips a prepared model; takes a QAT model as is; a float model is post-training quantized.

    Raises:
      errors.ConfigError: a multi-worker model (strip it on every worker
        first), `quantization`='qat' for a float model, or a model that never
        trained with fake quantization and no data to calibrate it.
      errors.ModelStructureError: a float model without representative data.
    """
    if kind is ModelKind.PREPARED and _trained_on_several_workers(model):
        raise errors.ConfigError(
            f"model '{model.name}' was trained with MultiWorkerMirroredStrategy: reading its synchronized variables "
            "is a collective operation every worker must join. Call tfjoint.strip(model) on every worker, then "
            "export_tflite the stripped model on the chief only.")
    if kind is ModelKind.FLOAT:
        return _float_source(model, quantization, representative_given)
    planned_schedule, plan = _schedule_of(model, kind), pruning_plan(model)
    qat_model = strip(model) if kind is ModelKind.PREPARED else model
    pruned_float = float_twin(qat_model)
    twin = pruned_float if representative_given and quantization != QAT else None
    notes = []
    steps = quantized_steps(model)
    if steps == 0 and planned_schedule is not None and planned_schedule.quant_start_step == 0:
        notes.append(note(Kind.SOURCE, f"model '{model.name}' was never trained: its int8 activation ranges are the "
                                       "initial ones"))
    elif steps == 0 and planned_schedule is not None:
        # Trained, but fake quantization never ran: the ranges are the initial ones, not trained ones.
        never = (f"model '{model.name}' never trained with fake quantization: its training stopped before "
                 f"quant_start_step={planned_schedule.quant_start_step}, so its int8 ranges were never observed")
        if twin is None:
            raise errors.ConfigError(
                f"{never}. Train past step {planned_schedule.quant_start_step}, or pass `representative_data` "
                "(with quantization='auto' or 'ptq') to calibrate post-training.")
        notes.append(note(Kind.SOURCE, f"{never}: post-training quantization only"))
        qat_model = None
    return Source(kind, qat_model, twin, pruned_float, planned_schedule, plan, original_channels(model), tuple(notes))
