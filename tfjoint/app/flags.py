"""`RunConfig` and the `tfjoint` command's flags, generated from its fields.

Every field of `RunConfig` is a flag of the same name, declared once here with
its help text, bounds or choices; the validation defaults come from
`tfjoint.Tolerances`. `RunConfig` checks the same bounds when built from
Python, so `run(RunConfig(...))` refuses what the command line would refuse.

This module imports neither TensorFlow nor the heavy parts of tfjoint, so
`tfjoint --help` is instant.
"""

import dataclasses
import textwrap
import typing
from typing import Any

from absl import flags

from tfjoint import errors
from tfjoint.export.options import Tolerances
from tfjoint.losses import LOSSES

__all__ = ["RunConfig", "define_flags", "config_from_flags", "help_text", "GROUPS", "LOSSES", "RUNTIMES_FOR_TARGET",
           "FLAG_ALIASES"]

# Where --target validates the file.
RUNTIMES_FOR_TARGET = {"phone": ("litert",), "micro": ("tflm",)}
# Old flag names that still work: alias -> the flag it stands for.
FLAG_ALIASES = {"arena_kb": "ram_kb"}
# --shared_tables -> JointSchedule(shared_tables=...): None decides per kernel.
SHARED_TABLES = {"auto": None, "always": True, "never": False}

_TOLERANCES = Tolerances()


# The groups `tfjoint --help` lists the flags in, in this order.
GROUPS = ("model and data", "schedule", "channels, allocation and budgets", "device and validation", "outputs")


def _field(default, help: str, *, group: str, lower=None, upper=None, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "lower": lower, "upper": upper,
                                                        "choices": choices, "group": group})


_DATA, _SCHEDULE, _CHANNELS, _DEVICE, _OUTPUTS = GROUPS


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run of the `tfjoint` command needs; saved as run_config.json beside the outputs."""

    model: str | None = _field(None, "Saved float model: tf_keras or Keras 3, as .keras, .h5 or a SavedModel "
                                     "directory. Omit (with --data) to run the embedded digits default.",
                               group=_DATA)
    data: str | None = _field(None, "Training data: an .npz with x_train, y_train, x_val, y_val (and optionally "
                                    "x_calib), or a folder of images with one sub-folder per class (as "
                                    "keras.utils.image_dataset_from_directory reads it; needs --image_size).",
                              group=_DATA)
    unsafe_load: bool = _field(False, "Load --model even if the file holds Python code that loading runs (a lambda "
                                      "stored as bytecode). Only for a file you trust: by default such a file is "
                                      "refused before any of its code runs.", group=_DATA)
    imports: str | None = _field(None, "Python modules to import before loading --model, comma-separated (a module "
                                       "name, found from the current directory too, or a .py file): where your "
                                       "custom layers are defined and registered "
                                       "(keras.saving.register_keras_serializable, tfjoint.register_layer). Code "
                                       "you name here runs; nothing is imported because the file names it.",
                                 group=_DATA)
    color_mode: str = _field("auto", "For an image folder: how images are read. auto: as many channels as the "
                                     "model's input has (1 grayscale, 3 rgb, 4 rgba).",
                             choices=("auto", "grayscale", "rgb", "rgba"), group=_DATA)
    image_size: str | None = _field(None, "For an image folder: the size images are resized to, as HEIGHTxWIDTH "
                                          "(or one number for square images), e.g. 96x96.", group=_DATA)
    validation_split: float = _field(0.2, "For an image folder: the share of images held out for validation "
                                          "(seeded by --seed); calibration samples come from the training share.",
                                     group=_DATA, lower=0.05, upper=0.5)
    loss: str = _field("auto", "Fine-tuning loss; auto: sparse categorical for integer labels, categorical for "
                               "one-hot, mse otherwise (from_logits from the output layer).", choices=LOSSES,
                       group=_DATA)
    float_epochs: int = _field(15, "Embedded default only: epochs to train the float digits CNN.", lower=1,
                               group=_DATA)
    seed: int = _field(0, "Random seed.", group=_DATA)
    target_sparsity: float | None = _field(None, "Fraction of zeros in every pruned kernel (within its kept "
                                                 "channels). Default: 0.8 for --target=phone (zeros shrink the "
                                                 "download); 0 for --target=micro or a budget, where unstructured "
                                                 "zeros save neither flash nor RAM (TFLM stores weights dense).",
                                           lower=0.0, upper=0.99, group=_SCHEDULE)
    epochs: int = _field(10, "Fine-tuning epochs (joint pruning + QAT, one fit).", lower=1, group=_SCHEDULE)
    batch_size: int = _field(32, "Fine-tuning batch size.", lower=1, group=_SCHEDULE)
    learning_rate: float = _field(1e-3, "Adam learning rate for fine-tuning.", lower=0.0, group=_SCHEDULE)
    quant_start: float = _field(0.0, "When fake quantization starts, as a fraction of the fine-tuning steps "
                                     "(0 = from the first step).", lower=0.0, upper=1.0, group=_SCHEDULE)
    prune_end: float = _field(0.5, "When target sparsity is reached, as a fraction of the fine-tuning steps.",
                              lower=0.01, upper=1.0, group=_SCHEDULE)
    distill: bool | None = _field(None, "Distill from the float model during fine-tuning (one extra forward per "
                                        "step). Default: on for a classifier with a budget (--flash_kb, --ram_kb, "
                                        "--mmacs), whose plan removes channels the float model had; off otherwise. "
                                        "--nodistill turns it off.", group=_SCHEDULE)
    distill_temperature: float = _field(4.0, "Distillation temperature (> 0).", lower=0.01, group=_SCHEDULE)
    distill_alpha: float = _field(0.3, "Weight of the task loss in distillation (the rest goes to the teacher).",
                                  lower=0.0, upper=1.0, group=_SCHEDULE)
    jit_compile: bool = _field(False, "Compile the fine-tuning step with XLA (see the README's benchmark: faster for "
                                      "small models on CPU, slower for MobileNetV2).", group=_SCHEDULE)
    channel_sparsity: float = _field(0.0, "Fraction of output channels (filters, units) removed from every pruned "
                                          "convolution and dense layer: a smaller, faster int8 model.", lower=0.0,
                                     upper=0.95,
                                     group=_CHANNELS)
    residual_sparsity: float = _field(0.0, "For a transformer: fraction of its residual width (the channels its "
                                           "embeddings, LayerNorms and Adds carry) removed from every layer "
                                           "writing or reading it, before the fit.", lower=0.0, upper=0.95,
                                      group=_CHANNELS)
    allocation: str = _field("sensitivity", "How the target is spread over layers: uniform, global (LAMP scores), "
                                            "erk (from shapes), or sensitivity (a per-layer scan on the validation "
                                            "data); the mean over pruned weights is the target either way.",
                             choices=("uniform", "global", "erk", "sensitivity"), group=_CHANNELS)
    max_sparsity: float = _field(0.98, "No layer's weight sparsity above this, whatever the allocation.",
                                 lower=0.0, upper=0.99, group=_CHANNELS)
    clusters: int | None = _field(None, "Weight sharing, in the same fit: the distinct values every pruned kernel "
                                        "keeps per table (3-256, zero among them; 16 = 4-bit indices). With "
                                        "--target=micro --compression=lut, TFLM's LUT compression turns it into "
                                        "flash; on a phone it shrinks only the gzip download.", lower=3, upper=256,
                                  group=_CHANNELS)
    shared_tables: str = _field("auto", "With --clusters, whether a convolution's channels share one table of "
                                        "values instead of a table each: auto where a table each would cost the "
                                        "file more than the compression saves; always (more flash saved, a "
                                        "coarser fit); never.", choices=tuple(SHARED_TABLES), group=_CHANNELS)
    flash_kb: float | None = _field(None, "Budget: largest .tflite file, in KiB. With --arena_kb and/or --mmacs, "
                                          "tfjoint plans which channels to remove (per layer group) to meet them, "
                                          "and checks the file against them (the arena in TFLM).", lower=0.001,
                                    group=_CHANNELS)
    ram_kb: float | None = _field(None, "Budget: most RAM the model may take on the device, in KiB, measured in "
                                        "TensorFlow Lite Micro: the tensor arena, plus the alternate memory DECODE "
                                        "writes LUT-compressed weights into (--arena_kb is its old name).",
                                  lower=0.001, group=_CHANNELS)
    mmacs: float | None = _field(None, "Budget: most multiply-accumulates per inference, in millions.", lower=1e-6,
                                 group=_CHANNELS)
    target: str = _field("phone", "Where the model runs. phone: validate in LiteRT (XNNPACK, as Android and Linux "
                                  "apps run it). micro: validate in TensorFlow Lite Micro (needs tfjoint[micro]) and "
                                  "write model_data.h/.cc with kTensorArenaSize.", choices=("phone", "micro"),
                         group=_DEVICE)
    quantization: str = _field("auto", "auto: ship the better of the QAT file and post-training quantization of the "
                                       "same pruned weights (both validated); qat or ptq: only that one.",
                               choices=("auto", "qat", "ptq"), group=_DEVICE)
    compression: str = _field("auto", "What the file for a microcontroller drops or compresses (TFLM then "
                                      "computes exactly what the int8 file computes, checked). tflm: TFLM's "
                                      "flatbuffer reduction, one zero point per weight tensor and no names (about a "
                                      "fifth of a small convolutional file; LiteRT cannot read it). lut: that, and "
                                      "TFLM's look-up-table compression of weights trained with --clusters "
                                      "(TFLM_DECODE operators); with a budget and no --clusters, the plan chooses "
                                      "2-, 4- or 8-bit weights per layer beside channels; the report and "
                                      "model_data.h give the arena and the alternate decompression memory. none: "
                                      "the converter's file. auto: tflm for --target=micro, none for phone.",
                              choices=("auto", "none", "tflm", "lut"), group=_DEVICE)
    streaming: bool = _field(False, "For a sequence model (recurrent layers, convolutions over time): write a "
                                    "file that runs one hop of frames per call and carries its state between calls "
                                    "as int8 tensors (model_data.h says which), instead of one that unrolls the "
                                    "whole sequence: flash and RAM no longer grow with the sequence's length. "
                                    "Validated frame by frame against the streaming Keras model.", group=_DEVICE)
    max_accuracy_drop: float = _field(_TOLERANCES.max_accuracy_drop,
                                      "Fail if int8 accuracy is more than this below the Keras model it was "
                                      "converted from (what quantization cost), in every runtime.",
                                      lower=0.0, upper=1.0, group=_DEVICE)
    min_agreement: float = _field(_TOLERANCES.min_agreement,
                                  "Fail if top-1 agreement of int8 with its Keras model is below this.",
                                  lower=0.0, upper=1.0, group=_DEVICE)
    min_sqnr_db: float = _field(_TOLERANCES.min_sqnr_db,
                                "Fail if any int8 output's SQNR against its Keras model is below this (dB).",
                                group=_DEVICE)
    max_mse_increase: float = _field(_TOLERANCES.max_mse_increase,
                                     "Fail if a real-valued output's int8 MSE against the labels is more than "
                                     "this fraction above its Keras model's.", lower=0.0, group=_DEVICE)
    max_total_drop: float | None = _field(None, "Fail if int8 accuracy is more than this below the float model's "
                                                "(pruning, fine-tuning and quantization together). Default: not "
                                                "gated; the report says where the accuracy went.",
                                          lower=0.0, upper=1.0, group=_DEVICE)
    out: str = _field("tfjoint_out", "Output directory (created if missing).", group=_OUTPUTS)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value, meta = getattr(self, field.name), field.metadata
            kind = _flag_kind(field)
            if value is None and (kind == "string" or field.default is None):
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
            raise errors.ConfigError(
                f"{given} needs {missing} too (or give neither to run the embedded digits default).")
        if self.image_size is not None:
            self.image_shape  # checks the format
        if self.compression == "lut" and self.target != "micro":
            raise errors.ConfigError(f"--compression=lut writes TFLM_DECODE operators, which only TensorFlow Lite "
                                     f"Micro runs, but --target={self.target}: use --target=micro, or drop "
                                     "--compression (on a phone --clusters shrinks the gzip download).")
        if self.compression == "tflm" and self.target != "micro":
            raise errors.ConfigError(f"--compression=tflm writes a file only TensorFlow Lite Micro reads (one zero "
                                     f"point for many scales; LiteRT refuses it), but --target={self.target}: use "
                                     "--target=micro, or drop --compression.")
        if self.compression == "lut" and self.clusters is None and not self.budget_given:
            raise errors.ConfigError("--compression=lut needs --clusters (at most 128: LUT indices are 1 to 7 bits), "
                                     "or a budget (--flash_kb) for the plan to choose 2-, 4- or 8-bit weights per "
                                     "layer. Try --clusters=16.")
        if self.residual_sparsity and self.budget_given:
            raise errors.ConfigError(f"--residual_sparsity={self.residual_sparsity} and a budget (--flash_kb, "
                                     "--ram_kb, --mmacs): the budget planner does not count the residual width. Drop "
                                     "one.")
        if self.streaming and self.quantization == "ptq":
            raise errors.ConfigError("--streaming needs the quantization-aware file (its states keep the int8 ranges "
                                     "QAT trained for them); received --quantization=ptq. Use --quantization=auto "
                                     "or qat.")
        if self.compression == "lut" and self.clusters is not None and self.clusters > 128:
            raise errors.ConfigError(f"--compression=lut needs --clusters of at most 128 (LUT indices are 1 to 7 "
                                     f"bits); received --clusters={self.clusters}. Try --clusters=16.")

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """--image_size as (height, width)."""
        if self.image_size is None:
            return None
        parts = str(self.image_size).lower().replace(",", "x").split("x")
        try:
            sides = [int(part) for part in parts]
        except ValueError:
            sides = []
        if len(sides) not in (1, 2) or min(sides, default=0) < 1:
            raise errors.ConfigError(f"--image_size must be HEIGHTxWIDTH (e.g. 96x96) or one number; received "
                                     f"{self.image_size!r}.")
        return (sides[0], sides[-1])

    @property
    def budget_given(self) -> bool:
        return any(value is not None for value in (self.flash_kb, self.ram_kb, self.mmacs))

    @property
    def distills(self) -> bool:
        """--distill, or by default whether a budget is given: a keyword-spotting DS-CNN planned to 20 KB / 12 KB
        kept 82.9 ± 3.1% in TFLM without distillation and 84.1 ± 0.9% with it, against 84.4 ± 1.8% in float
        (benchmarks/budget.py --kws, 3 seeds)."""
        return self.budget_given if self.distill is None else self.distill

    @property
    def budget(self):
        """--flash_kb, --ram_kb and --mmacs as a `tfjoint.Budget` (None without any)."""
        if not self.budget_given:
            return None
        from tfjoint.plan.budget import Budget

        return Budget(flash_bytes=None if self.flash_kb is None else int(self.flash_kb * 1024),
                      ram_bytes=None if self.ram_kb is None else int(self.ram_kb * 1024),
                      macs=None if self.mmacs is None else int(self.mmacs * 1e6))

    @property
    def runtimes(self) -> tuple[str, ...]:
        """Where --target validates the file (and where prepare's check converts it for)."""
        return RUNTIMES_FOR_TARGET[self.target]

    def export_options(self, out: str, compression: str, budget=None):
        """The `tfjoint.ExportOptions` these flags ask for, writing the rejected and float files under `out`."""
        import os

        from tfjoint.export.options import ExportOptions

        return ExportOptions(quantization=self.quantization, runtimes=self.runtimes, tolerances=self.tolerances,
                             budget=budget, compression=compression, streaming=self.streaming,
                             # On a microcontroller this host's timings say nothing.
                             measure_latency=self.target == "phone",
                             keep_rejected=os.path.join(out, "model.rejected.tflite"),
                             float_path=os.path.join(out, "float_model.tflite"))

    @property
    def tolerances(self) -> Tolerances:
        return Tolerances(max_accuracy_drop=self.max_accuracy_drop, min_agreement=self.min_agreement,
                          min_sqnr_db=self.min_sqnr_db, max_mse_increase=self.max_mse_increase,
                          max_total_drop=self.max_total_drop)

    @property
    def resolved_target_sparsity(self) -> float:
        """--target_sparsity, or its default for the target: 0.8 on a phone, 0 on a microcontroller or a budget."""
        if self.target_sparsity is not None:
            return self.target_sparsity
        return 0.0 if self.target == "micro" or self.budget_given else 0.8

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flag_kind(field) -> str:
    if field.metadata.get("choices"):
        return "enum"
    kinds = {str: "string", float: "float", int: "integer", bool: "boolean"}
    types = [t for t in typing.get_args(field.type) if t is not type(None)] or [field.type]  # X | None -> X
    return kinds.get(types[0], "string")


def help_text(program: str = "tfjoint") -> str:
    """The command's own flags, by group, with their defaults (what `tfjoint --help` prints)."""
    lines = [
        f"usage: {program} [--model=float.keras --data=data.npz|images/] [--out=DIR] [flags]",
        "",
        "Prunes and quantizes a Keras model in one fit, then exports a fully int8 .tflite validated where it will",
        "run (LiteRT on a phone, TensorFlow Lite Micro on a microcontroller). Without --model and --data it runs",
        "the embedded digits example (about 30 s).",
    ]
    fields = dataclasses.fields(RunConfig)
    for group in GROUPS:
        lines += ["", f"{group}:"]
        for field in (f for f in fields if f.metadata["group"] == group):
            meta = field.metadata
            choices = f" One of: {', '.join(meta['choices'])}." if meta.get("choices") else ""
            default = "none" if field.default is None else str(field.default).lower() if isinstance(
                field.default, bool) else field.default
            lines.append(f"  --{field.name}  (default: {default})")
            lines += textwrap.wrap(f"{meta['help']}{choices}", width=100, initial_indent="      ",
                                   subsequent_indent="      ")
    lines += ["", "Also: --verbosity=1 shows TensorFlow's own log lines; --helpfull lists absl's flags too.",
              "Exit status: 0 passed validation; 1 failed validation, or the file could not be made or run where it",
              "must (report.json and error.log written); 2 bad flags or inputs, refused before any work starts; 3 an",
              "unexpected error (one line here; the traceback in <out>/error.log)."]
    return "\n".join(lines)


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
    for alias, name in FLAG_ALIASES.items():
        if alias not in flag_values:
            flags.DEFINE_alias(alias, name, flag_values=flag_values)


def config_from_flags(values: flags.FlagValues = flags.FLAGS) -> RunConfig:
    """A `RunConfig` from the parsed flags."""
    return RunConfig(**{field.name: getattr(values, field.name) for field in dataclasses.fields(RunConfig)})
