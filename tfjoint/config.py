"""`JointConfig`: the validated, serialisable description of one joint run."""

import dataclasses
from typing import Any

from tfjoint import errors

__all__ = ["JointConfig", "CONFIG_VERSION"]

CONFIG_VERSION = 1


@dataclasses.dataclass(frozen=True)
class JointConfig:
    """What to prune, how fast, and when fake quantization switches on.

    Steps count training batches seen by the prepared model (a counter kept in
    the model's weights, so it survives saving and re-compiling).

    Attributes:
      target_sparsity: fraction of zeros every pruned kernel ends with, in [0, 1).
      end_step: step of the last mask update; sparsity equals `target_sparsity`
        from then on. `end_step - begin_step` must be a multiple of `frequency`,
        or TF-MOT's schedule would never reach the target.
      begin_step: step of the first mask update.
      initial_sparsity: sparsity at `begin_step`, in [0, target_sparsity].
      power: exponent of TF-MOT's PolynomialDecay.
      frequency: masks update every `frequency` steps.
      quant_start_step: training steps run in float before fake quantization
        switches on (0: every step is fake-quantized). Before it, activation
        ranges are observed but values pass through in float. At inference fake
        quant is always on, so evaluation shows the int8 model.
      prune_depthwise: also prune DepthwiseConv2D kernels (TF-MOT never does).
    """

    target_sparsity: float
    end_step: int
    begin_step: int = 0
    initial_sparsity: float = 0.0
    power: float = 3.0
    frequency: int = 100
    quant_start_step: int = 0
    prune_depthwise: bool = False
    version: int = CONFIG_VERSION

    def __post_init__(self):
        def fail(name, value, expected):
            raise errors.ConfigError(f"`{name}` must be {expected}; received {value!r}.")

        for name in ("end_step", "begin_step", "frequency", "quant_start_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                fail(name, value, "an int")
        for name in ("target_sparsity", "initial_sparsity", "power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail(name, value, "a number")
        if not 0.0 <= self.target_sparsity < 1.0:
            fail("target_sparsity", self.target_sparsity, "in [0, 1) (e.g. 0.8 for 80% zeros)")
        if not 0.0 <= self.initial_sparsity <= self.target_sparsity:
            fail("initial_sparsity", self.initial_sparsity, f"in [0, target_sparsity={self.target_sparsity}]")
        if self.begin_step < 0:
            fail("begin_step", self.begin_step, ">= 0")
        if self.end_step < 0:
            fail("end_step", self.end_step, ">= 0")
        if self.end_step <= self.begin_step:
            fail("end_step", self.end_step, f"> begin_step={self.begin_step}")
        if self.frequency < 1:
            fail("frequency", self.frequency, ">= 1")
        if self.power <= 0:
            fail("power", self.power, "> 0")
        if self.quant_start_step < 0:
            fail("quant_start_step", self.quant_start_step, ">= 0")
        span = self.end_step - self.begin_step
        if span % self.frequency:
            suggestion = self.begin_step + max(1, round(span / self.frequency)) * self.frequency
            raise errors.ConfigError(
                f"`end_step - begin_step` ({self.end_step} - {self.begin_step} = {span}) must be a "
                f"multiple of `frequency` ({self.frequency}): TF-MOT's schedule only updates masks "
                "every `frequency` steps, so it would never reach `target_sparsity`. Use "
                f"end_step={suggestion}, or a `frequency` that divides {span}."
            )
        if self.version != CONFIG_VERSION:
            fail("version", self.version, f"{CONFIG_VERSION}")

    def polynomial_decay_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `tfmot.sparsity.keras.PolynomialDecay`."""
        return dict(
            initial_sparsity=self.initial_sparsity,
            final_sparsity=self.target_sparsity,
            begin_step=self.begin_step,
            end_step=self.end_step,
            power=self.power,
            frequency=self.frequency,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JointConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise errors.ConfigError(f"unknown JointConfig fields {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**data)
