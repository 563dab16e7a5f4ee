"""`RunConfig` and the `tfjoint` command's flags, generated from its fields.

Every field of `RunConfig` is a flag of the same name, declared once here with
its help text, bounds or choices; the validation defaults come from
`tfjoint.Tolerances`. `RunConfig` checks the same bounds when built from
Python, so `run(RunConfig(...))` refuses what the command line would refuse.

This module imports neither TensorFlow nor the heavy parts of tfjoint, so
`tfjoint --help` is instant.
"""

import dataclasses
from typing import Any

from absl import flags

from tfjoint import errors
from tfjoint.export.validate import Tolerances
from tfjoint.losses import LOSSES

__all__ = ["RunConfig", "define_flags", "config_from_flags", "LOSSES"]

_TOLERANCES = Tolerances()


def _field(default, help: str, *, lower=None, upper=None, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "lower": lower, "upper": upper,
                                                        "choices": choices})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run of the `tfjoint` command needs; saved as run_config.json beside the outputs."""

    model: str | None = _field(None, "Saved float model: tf_keras or Keras 3, as .keras, .h5 or a SavedModel "
                                     "directory. Omit (with --data) to run the embedded digits default.")
    data: str | None = _field(None, ".npz file with x_train, y_train, x_val, y_val (and optionally x_calib).")
    out: str = _field("tfjoint_out", "Output directory (created if missing).")
    target_sparsity: float = _field(0.8, "Fraction of zeros in every pruned kernel (within its kept channels).",
                                    lower=0.0, upper=0.99)
    channel_sparsity: float = _field(0.0, "Fraction of output channels (filters, units) removed from every pruned "
                                          "Conv/Dense layer: a smaller, faster int8 model.", lower=0.0, upper=0.95)
    allocation: str = _field("sensitivity", "How the target is spread over layers: uniform, global (LAMP scores), "
                                            "erk (from shapes), or sensitivity (a per-layer scan on the validation "
                                            "data); the mean over pruned weights is the target either way.",
                             choices=("uniform", "global", "erk", "sensitivity"))
    distill: bool = _field(False, "Distill from the float model during fine-tuning (one extra forward per step).")
    distill_temperature: float = _field(4.0, "Distillation temperature (> 0).", lower=0.01)
    distill_alpha: float = _field(0.3, "Weight of the task loss in distillation (the rest goes to the teacher).",
                                  lower=0.0, upper=1.0)
    jit_compile: bool = _field(False, "Compile the fine-tuning step with XLA (see the README's benchmark: faster for "
                                      "small models on CPU, slower for MobileNetV2).")
    epochs: int = _field(10, "Fine-tuning epochs (joint pruning + QAT, one fit).", lower=1)
    batch_size: int = _field(32, "Fine-tuning batch size.", lower=1)
    learning_rate: float = _field(1e-3, "Adam learning rate for fine-tuning.", lower=0.0)
    quant_start: float = _field(0.0, "When fake quantization starts, as a fraction of the fine-tuning steps "
                                     "(0 = from the first step).", lower=0.0, upper=1.0)
    prune_end: float = _field(0.5, "When target sparsity is reached, as a fraction of the fine-tuning steps.",
                              lower=0.01, upper=1.0)
    max_accuracy_drop: float = _field(_TOLERANCES.max_accuracy_drop,
                                      "Fail if int8 accuracy is more than this below float (fraction).",
                                      lower=0.0, upper=1.0)
    min_agreement: float = _field(_TOLERANCES.min_agreement,
                                  "Fail if top-1 agreement of int8 with its Keras model is below this.",
                                  lower=0.0, upper=1.0)
    min_sqnr_db: float = _field(_TOLERANCES.min_sqnr_db,
                                "Fail if any int8 output's SQNR against its Keras model is below this (dB).")
    max_mse_increase: float = _field(_TOLERANCES.max_mse_increase,
                                     "Fail if a real-valued output's int8 MSE against the labels is more than "
                                     "this fraction above the float model's.", lower=0.0)
    loss: str = _field("auto", "Fine-tuning loss; auto: sparse categorical for integer labels, categorical for "
                               "one-hot, mse otherwise (from_logits from the output layer).", choices=LOSSES)
    float_epochs: int = _field(15, "Embedded default only: epochs to train the float digits CNN.", lower=1)
    seed: int = _field(0, "Random seed.")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            kind = _flag_kind(field)
            if value is None and kind == "string":
                continue
            expected = {"string": str, "enum": str, "float": (int, float), "integer": int, "boolean": bool}[kind]
            if (kind != "boolean" and isinstance(value, bool)) or not isinstance(value, expected):
                article = "an" if kind[0] in "aeiou" else "a"
                raise errors.ConfigError(f"--{field.name} must be {article} {kind}; received {value!r}.")
            if meta.get("choices") and value not in meta["choices"]:
                raise errors.ConfigError(f"--{field.name} must be one of {list(meta['choices'])}; received {value!r}.")
            if meta.get("lower") is not None and value < meta["lower"]:
                raise errors.ConfigError(f"--{field.name} must be >= {meta['lower']}; received {value!r}.")
            if meta.get("upper") is not None and value > meta["upper"]:
                raise errors.ConfigError(f"--{field.name} must be <= {meta['upper']}; received {value!r}.")
        if (self.model is None) != (self.data is None):
            given, missing = ("--model", "--data") if self.model else ("--data", "--model")
            raise errors.ConfigError(f"{given} needs {missing} too (or give neither to run the embedded digits default).")

    @property
    def tolerances(self) -> Tolerances:
        return Tolerances(max_accuracy_drop=self.max_accuracy_drop, min_agreement=self.min_agreement,
                          min_sqnr_db=self.min_sqnr_db, max_mse_increase=self.max_mse_increase)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flag_kind(field) -> str:
    if field.metadata.get("choices"):
        return "enum"
    return {str: "string", float: "float", int: "integer", bool: "boolean"}.get(field.type, "string")  # str | None


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Declares one flag per `RunConfig` field in `flag_values` (idempotent)."""
    for field in dataclasses.fields(RunConfig):
        if field.name in flag_values:
            continue
        meta, kind = field.metadata, _flag_kind(field)
        kwargs = dict(flag_values=flag_values)
        if kind == "enum":
            flags.DEFINE_enum(field.name, field.default, list(meta["choices"]), meta["help"], **kwargs)
        elif kind in ("float", "integer"):
            define = flags.DEFINE_float if kind == "float" else flags.DEFINE_integer
            define(field.name, field.default, meta["help"], lower_bound=meta.get("lower"),
                   upper_bound=meta.get("upper"), **kwargs)
        elif kind == "boolean":
            flags.DEFINE_boolean(field.name, field.default, meta["help"], **kwargs)
        else:
            flags.DEFINE_string(field.name, field.default, meta["help"], **kwargs)


def config_from_flags(values: flags.FlagValues = flags.FLAGS) -> RunConfig:
    """A `RunConfig` from the parsed flags."""
    return RunConfig(**{field.name: getattr(values, field.name) for field in dataclasses.fields(RunConfig)})
