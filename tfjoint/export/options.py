"""`ExportOptions`: how `export_tflite` converts, validates, measures and writes, in one frozen value.

The tolerances are their own value (`tfjoint.Tolerances`); the rest of what
`export_tflite` takes besides the model, the path and the data lives here, so
every stage reads one object instead of a dozen keywords.
"""

from __future__ import annotations

import dataclasses
import os

from tfjoint import errors
from tfjoint.export.validate import Tolerances
from tfjoint.prune.budget import Budget

__all__ = ["ExportOptions", "QUANTIZATIONS", "COMPRESSIONS", "QAT", "POST_TRAINING"]

QUANTIZATIONS = ("auto", "qat", "ptq")
COMPRESSIONS = ("none", "lut")
QAT, POST_TRAINING = "qat", "post_training"  # a candidate file's quantization


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise errors.ConfigError(f"`{name}` must be True or False; received {value!r}.")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How `tfjoint.export_tflite` converts, validates, measures and writes.

    Attributes:
      quantization: "auto" (default): with `representative_data` and a
        quantization-aware model, also convert its pruned float weights with
        full-integer post-training quantization, validate both files in the
        same runtimes, and ship the better; "qat": the quantization-aware file
        only; "ptq": post-training quantization only.
      runtimes: where to validate: "litert" (LiteRT's default interpreter with
        XNNPACK, as phones run it), "litert_reference" (LiteRT's reference
        kernels), "tflm" (TensorFlow Lite Micro, as microcontrollers run it).
        Validation fails if any of them breaks a tolerance; the headline
        figures are the first's.
      tolerances: the `Tolerances` the file must meet.
      budget: a `tfjoint.Budget` (flash, arena, MACs) the file must meet,
        checked on the file itself (the arena in TFLM).
      compression: "none" (default) or "lut": TFLM's look-up-table
        compression of the weights (`TFLM_DECODE` operators), for a model
        trained with `prepare(clusters=...)`; needs "tflm" among `runtimes`.
      measure_latency: time single-sample invokes of the int8 and float32
        files and measure the peak resident memory of running each.
      explain_layers: compute `per_layer_error` (None: on for files up to 200
        weight operators).
      keep_rejected: where to write the flatbuffer if validation fails.
      float_path: where to write the float32 .tflite of `float_model`.
      batch_size: samples per interpreter call during validation.
      verbose: show a progress bar during validation.
    """

    quantization: str = "auto"
    runtimes: tuple[str, ...] = ("litert",)
    tolerances: Tolerances = dataclasses.field(default_factory=Tolerances)
    budget: Budget | None = None
    compression: str = "none"
    measure_latency: bool = False
    explain_layers: bool | None = None
    keep_rejected: str | None = None
    float_path: str | None = None
    batch_size: int = 64
    verbose: bool = False

    def __post_init__(self):
        if self.quantization not in QUANTIZATIONS:
            raise errors.ConfigError(f"`quantization` must be one of {list(QUANTIZATIONS)}; received "
                                     f"{self.quantization!r}.")
        if self.compression not in COMPRESSIONS:
            raise errors.ConfigError(f"`compression` must be one of {list(COMPRESSIONS)}; received "
                                     f"{self.compression!r}.")
        if isinstance(self.runtimes, str):
            object.__setattr__(self, "runtimes", (self.runtimes,))
        if not isinstance(self.tolerances, Tolerances):
            raise errors.ConfigError(f"`tolerances` must be a tfjoint.Tolerances; received "
                                     f"{type(self.tolerances).__name__}.")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise errors.ConfigError(f"`budget` must be a tfjoint.Budget; received {type(self.budget).__name__}.")
        batch = self.batch_size
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise errors.ConfigError(f"`batch_size` must be an int >= 1; received {batch!r}.")
        _check_bool("measure_latency", self.measure_latency)
        _check_bool("verbose", self.verbose)
        if self.explain_layers is not None:
            _check_bool("explain_layers", self.explain_layers)
        for name in ("keep_rejected", "float_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise errors.ConfigError(f"`{name}` must be a file path; received {type(value).__name__} {value!r}.")
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))

    def replace(self, **changes) -> ExportOptions:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)
