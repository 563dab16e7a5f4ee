"""`ExportOptions` and `Tolerances`: how `export_tflite` converts, validates, measures and writes, in one value.

Everything `export_tflite` takes besides the model, the path and the data
lives here, so every stage reads one object instead of a dozen keywords; the
tolerances are a value of their own inside it.
"""

from __future__ import annotations

import dataclasses
import math
import os

from tfjoint import errors
from tfjoint.plan.budget import Budget

__all__ = ["ExportOptions", "Tolerances", "QUANTIZATIONS", "COMPRESSIONS", "QAT", "POST_TRAINING"]

QUANTIZATIONS = ("auto", "qat", "ptq")
COMPRESSIONS = ("none", "tflm", "lut")
QAT, POST_TRAINING = "qat", "post_training"  # a candidate file's quantization


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """How much the int8 file may differ before `export_tflite` refuses to write it.

    The one home of the validation defaults: `export_tflite`, the command's
    flags and `RunConfig` all take theirs from here.

    The default gate checks what quantization did: the int8 file against the
    Keras model it was converted from (the quantization-aware model, or for
    post-training quantization the pruned float model). What pruning and
    fine-tuning cost is the user's choice and is reported, not gated, unless
    `max_total_drop` asks for it.

    Attributes:
      max_accuracy_drop: largest accuracy (fraction) the int8 file may lose
        against the Keras model it was converted from, per labelled
        classifier output, in every runtime.
      min_agreement: smallest top-1 agreement of the int8 file with that
        Keras model, per classifier output.
      min_sqnr_db: smallest SQNR (dB) of any int8 output against that Keras model.
      max_mse_increase: largest relative increase of the int8 MSE against the
        labels over that Keras model's, per real-valued output: 0.5 lets int8
        be 1.5x as far off.
      max_total_drop: largest accuracy (fraction) the int8 file may lose
        against `float_model` (pruning, fine-tuning and quantization
        together); None (default): not gated, only reported.
    """

    max_accuracy_drop: float = 0.02
    min_agreement: float = 0.95
    min_sqnr_db: float = 15.0
    max_mse_increase: float = 0.5
    max_total_drop: float | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name == "max_total_drop":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise errors.ConfigError(f"`{field.name}` must be a number; received {value!r}.")
            object.__setattr__(self, field.name, float(value))
        for name in ("max_accuracy_drop", "min_agreement", "max_total_drop"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise errors.ConfigError(f"`{name}` must be a fraction in [0, 1]; received {value!r}.")
        if self.max_mse_increase < 0:
            raise errors.ConfigError(f"`max_mse_increase` must be >= 0; received {self.max_mse_increase!r}.")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Tolerances":
        """A copy with the given fields changed; None values keep the current one."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


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
      compression: what the written file drops or compresses for TFLM,
        losslessly (TFLM computes exactly what it computes with the int8
        file, checked): "none" (default): the converter's file, which
        LiteRT runs too; "tflm": TFLM's flatbuffer reduction
        (`tfjoint.tflite.tflm_reduction`): one zero point per weight and
        bias tensor instead of one per channel, no tensor names, about a
        fifth of a small convolutional file; "lut": that, and TFLM's
        look-up-table compression of the weights (`TFLM_DECODE` operators),
        for a model trained with `prepare(clusters=...)`. Both are files for
        TFLM only (LiteRT refuses them): `runtimes` must be ("tflm",).
      streaming: write a file that runs one hop of frames per call and
        carries its state (an LSTM's hidden and cell state, a convolution's
        last frames) as int8 inputs and outputs, instead of one that unrolls
        the whole sequence: a sequence model's flash and RAM then no longer
        grow with the sequence (`tfjoint.tflite.streaming`; the report's
        `streaming` section says which tensors to carry). It is validated
        frame by frame against the whole-sequence model. Needs a model
        trained with tfjoint (the states keep QAT's ranges).
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
    streaming: bool = False
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
        _check_bool("streaming", self.streaming)
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
