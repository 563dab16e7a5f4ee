"""`run(config)`: the whole job the `tfjoint` command does, with no flags in sight.

load (or build the embedded digits default) -> prepare -> one fit -> strip ->
export_tflite (validate) -> plots, report.json, run_config.json.
"""

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np
from absl import logging

from tfjoint import errors, plots, schedule
from tfjoint._keras import check_float_model, keras
from tfjoint.training_callbacks import JointMonitor, layer_sparsity
from tfjoint.export import export_tflite
from tfjoint.preparation import prepare
from tfjoint.report import ExportReport, atomic_write_bytes
from tfjoint.saving import load_model
from tfjoint.stripping import strip

__all__ = ["RunConfig", "RunResult", "run", "plan_schedule", "infer_loss"]

REQUIRED_KEYS = ("x_train", "y_train", "x_val", "y_val")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; saved as run_config.json beside the outputs."""

    model: str | None = None
    data: str | None = None
    out: str = "tfjoint_out"
    target_sparsity: float = 0.8
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    quant_start: float = 0.0
    prune_end: float = 0.5
    max_accuracy_drop: float = 0.02
    min_agreement: float = 0.95
    min_sqnr_db: float = 15.0
    loss: str = "auto"
    float_epochs: int = 15
    seed: int = 0

    def __post_init__(self):
        if (self.model is None) != (self.data is None):
            given, missing = ("--model", "--data") if self.model else ("--data", "--model")
            raise errors.ConfigError(f"{given} needs {missing} too (or give neither to run the embedded digits default).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RunResult:
    report: ExportReport
    out_dir: str
    files: dict[str, str]


def plan_schedule(total_steps: int, prune_end: float, quant_start: float) -> dict[str, int]:
    """Pruning schedule arguments for a fit of `total_steps` steps.

    Masks update about 16 times on the way to the target, which is reached at
    `prune_end` of the run (end_step - begin_step a multiple of frequency).
    """
    target_end = max(1, int(round(prune_end * total_steps)))
    frequency = max(1, target_end // 16)
    end_step = max(frequency, (target_end // frequency) * frequency)
    return {"begin_step": 0, "end_step": end_step, "frequency": frequency,
            "quant_start_step": int(math.floor(quant_start * total_steps))}


def infer_loss(model, y: np.ndarray, requested: str):
    """The loss to fine-tune with; 'auto' infers it from the labels and the output layer."""
    activation = getattr(model.layers[-1], "activation", None)
    from_logits = getattr(activation, "__name__", "") not in ("softmax", "sigmoid")
    if requested == "auto":
        if np.issubdtype(y.dtype, np.integer) and (y.ndim == 1 or y.shape[-1] == 1):
            requested = "sparse_categorical_crossentropy"
        elif y.ndim == 2 and y.shape[-1] > 1 and np.all((y == 0) | (y == 1)) and np.all(y.sum(-1) == 1):
            requested = "categorical_crossentropy"
        else:
            requested = "mse"
    classes = {
        "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
    }
    if requested in classes:
        return classes[requested](from_logits=from_logits), ["accuracy"]
    return keras.losses.MeanSquaredError(), []


def _load_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise errors.DataError(f"--data: no file at '{path}' (expected an .npz with {', '.join(REQUIRED_KEYS)}).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except Exception as error:
        raise errors.DataError(f"--data: cannot read '{path}' as .npz: {error}") from error
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise errors.DataError(f"--data: '{path}' lacks {missing}; it has {sorted(data)}.")
    return data


def _load_float_model(path: str):
    try:
        model = load_model(path, compile=False)
    except FileNotFoundError as error:
        raise errors.DataError(f"--model: {error}") from error
    except errors.TfjointError:
        raise
    except Exception as error:
        raise errors.DataError(f"--model: cannot load '{path}': {str(error).splitlines()[0]}") from error
    check_float_model(model)
    return model


class _BatchLossRecorder(keras.callbacks.Callback):
    """Keeps the training loss of every batch, for the schedule plot."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", np.nan)))


def _kernel_of(model, layer_name):
    layer = model.get_layer(layer_name)
    return layer.kernel.numpy() if hasattr(layer, "kernel") else None


def run(config: RunConfig) -> RunResult:
    """Runs the job; raises `ValidationError` (report inside) if the export fails validation."""
    keras.utils.set_random_seed(config.seed)
    if config.model is None:
        from tfjoint import digits

        logging.info("No --model/--data: training the embedded digits CNN (%d epochs).", config.float_epochs)
        data = digits.load_digits(seed=config.seed)
        float_model = digits.train_float_model(data, epochs=config.float_epochs, seed=config.seed)
    else:
        data = _load_npz(config.data)
        float_model = _load_float_model(config.model)
    os.makedirs(config.out, exist_ok=True)

    x_train, y_train = data["x_train"].astype(np.float32), data["y_train"]
    loss, metrics = infer_loss(float_model, y_train, config.loss)
    total_steps = schedule.steps_for(config.epochs, len(x_train), config.batch_size)
    plan = plan_schedule(total_steps, config.prune_end, config.quant_start)
    logging.info("Fine-tuning %d steps; pruning plan %s.", total_steps, plan)

    joint = prepare(float_model, target_sparsity=config.target_sparsity, **plan)
    joint.compile(keras.optimizers.Adam(config.learning_rate), loss, metrics=metrics)
    recorder = _BatchLossRecorder()
    history = joint.fit(x_train, y_train, epochs=config.epochs, batch_size=config.batch_size, verbose=1,
                        callbacks=[JointMonitor(), recorder])
    achieved = layer_sparsity(joint)
    deployable = strip(joint)

    files = {name: os.path.join(config.out, name) for name in (
        "model.tflite", "float_model.tflite", "report.json", "run_config.json", "sparsity_per_layer.png",
        "schedule.png", "weights_histogram.png")}
    atomic_write_bytes(files["run_config.json"], (json.dumps(config.to_dict(), indent=2) + "\n").encode())
    calibration = data.get("x_calib", x_train[:200])
    failure = None
    try:
        report = export_tflite(
            deployable, files["model.tflite"], representative_data=calibration,
            validation_data=(data["x_val"], data["y_val"]), float_model=float_model,
            max_accuracy_drop=config.max_accuracy_drop, min_agreement=config.min_agreement,
            min_sqnr_db=config.min_sqnr_db, measure_latency=True,
            keep_rejected=os.path.join(config.out, "model.rejected.tflite"), float_path=files["float_model.tflite"],
            verbose=True,
        )
    except errors.ValidationError as error:
        report, failure = error.report, error
    report.save_json(files["report.json"])

    pruned = [name for name in report.per_layer_sparsity if name in achieved]
    histogram_layer = max(pruned, key=lambda n: report.per_layer_sparsity[n]["size"], default=None)
    plots.sparsity_per_layer(files["sparsity_per_layer.png"], config.target_sparsity, report.per_layer_sparsity)
    plots.schedule_and_loss(
        files["schedule.png"], total_steps=total_steps, target_sparsity=config.target_sparsity, plan=plan,
        epoch_steps=history.history.get("tfjoint/step", []), epoch_sparsity=history.history.get("tfjoint/sparsity", []),
        batch_losses=recorder.losses,
    )
    if histogram_layer is not None:
        after = plots.int8_weights_of(files["model.tflite"] if failure is None else report.tflite_path,
                                      report.per_layer_sparsity[histogram_layer]["tflite_tensors"])
        plots.weight_histograms(files["weights_histogram.png"], histogram_layer, _kernel_of(float_model, histogram_layer), after)
    else:
        files.pop("weights_histogram.png")
    if failure is not None:
        files.pop("model.tflite")
        raise failure
    return RunResult(report=report, out_dir=config.out, files=files)
