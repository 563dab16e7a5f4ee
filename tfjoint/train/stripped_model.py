"""`StrippedModel`, what `tfjoint.strip` returns: TF-MOT's QAT layers, and the record of how they were trained.

A stripped model is TF-MOT's own quantization-aware model (QuantizeWrapperV2,
QuantizeLayer, trained ranges, pruned zeros in the weights) in a Functional
model that also carries its `TrainingRecord`: the schedule it was trained
with, each pruned kernel's final sparsity, the channels before channel
pruning, and the steps it took. The record is part of the model's config, so
a `.keras` file of it keeps it, and `export_tflite` reports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from tfjoint._keras import keras, serializable
from tfjoint.prune.schedule import JointSchedule

__all__ = ["TrainingRecord", "StrippedModel"]


@dataclasses.dataclass(frozen=True)
class TrainingRecord:
    """How a stripped model was trained.

    Attributes:
      schedule: the `JointSchedule` it was prepared with.
      plan: the final sparsity of each pruned kernel, by the user's layer name.
      original_channels: output channels of each channel-carrying layer before
        channel pruning.
      steps_taken: training steps it took (None if nothing counted them).
    """

    schedule: JointSchedule
    plan: Mapping[str, float] = dataclasses.field(default_factory=dict)
    original_channels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    steps_taken: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "plan": dict(self.plan),
                "original_channels": dict(self.original_channels), "steps_taken": self.steps_taken}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingRecord:
        return cls(schedule=JointSchedule.from_dict(data["schedule"]), plan=dict(data.get("plan") or {}),
                   original_channels=dict(data.get("original_channels") or {}), steps_taken=data.get("steps_taken"))

    @property
    def quantized_steps(self) -> int | None:
        """Training steps that ran with fake quantization (0: the int8 ranges never trained); None if unknown."""
        if self.steps_taken is None:
            return None
        return max(0, self.steps_taken - self.schedule.quant_start_step)


_RECORD_KEY = "tfjoint_training"


@serializable
class StrippedModel(keras.Model):
    """A Functional model of TF-MOT's quantization-aware layers that carries its `TrainingRecord`.

    Args:
      inputs, outputs, name, trainable: those of `keras.Model(inputs, outputs)`.
      training: (keyword) the `TrainingRecord`.
    """

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        record = kwargs.pop("training", None)
        super().__init__(inputs, outputs, name=name, trainable=trainable, **kwargs)
        self._tfjoint_training = record

    @property
    def training(self) -> TrainingRecord | None:
        """How the model was trained (None for one rebuilt without its record)."""
        return self._tfjoint_training

    def get_config(self):
        config = super().get_config()
        if self._tfjoint_training is not None:
            config[_RECORD_KEY] = self._tfjoint_training.to_dict()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        record = config.pop(_RECORD_KEY, None)
        model = super().from_config(config, custom_objects)
        model.set_training(TrainingRecord.from_dict(record) if record is not None else None)
        return model

    def set_training(self, record: TrainingRecord | None) -> None:
        """Records how the model was trained (loading does)."""
        self._tfjoint_training = record
