"""`run(config)`: the whole job the `tfjoint` command does, with no flags in sight.

load (or build the embedded digits default) -> plan the schedule -> prepare ->
one fit -> strip -> export_tflite (validate) -> plots, report.json,
run_config.json. The same public stages a user calls from Python.

With `TF_CONFIG` set it trains with `tf.distribute.MultiWorkerMirroredStrategy`
(every worker runs the same command; only the chief writes outputs), and with
several GPUs visible with `MirroredStrategy`.
"""

import dataclasses
import json
import math
import os

import numpy as np
from absl import logging

import tfjoint
from tfjoint import errors
from tfjoint._files import atomic_write_text
from tfjoint._keras import check_float_model, tf
from tfjoint.app import plots
from tfjoint.app.flags import RunConfig
from tfjoint.export.report import ExportReport
from tfjoint.losses import infer_loss

keras = tfjoint.keras

__all__ = ["RunConfig", "RunResult", "run", "steps_for", "distribution_strategy"]

REQUIRED_KEYS = ("x_train", "y_train", "x_val", "y_val")


@dataclasses.dataclass
class RunResult:
    """What a run produced. On a non-chief worker `report` is None and nothing was written."""

    report: ExportReport | None
    out_dir: str
    files: dict[str, str]
    schedule: "tfjoint.JointSchedule"
    is_chief: bool = True


def steps_for(epochs: int, samples: int, batch_size: int) -> int:
    """Training steps `fit` runs for `epochs` over `samples` examples."""
    return epochs * math.ceil(samples / batch_size)


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


def _load_float_model(path: str, sample_inputs):
    """The --model file as a tf_keras float model (a Keras 3 file is rebuilt and checked on `sample_inputs`)."""
    try:
        model = tfjoint.load_model(path, compile=False, sample_inputs=sample_inputs)
    except FileNotFoundError as error:
        raise errors.DataError(f"--model: {error}") from error
    check_float_model(model, argument="--model")
    return model


def distribution_strategy():
    """MultiWorkerMirroredStrategy if TF_CONFIG is set, MirroredStrategy for several GPUs, else the default."""
    if os.environ.get("TF_CONFIG"):
        # Every worker must build the same float model and see the same data order.
        tf.config.experimental.enable_op_determinism()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


class _BatchLossRecorder(keras.callbacks.Callback):
    """Keeps the training loss of every batch, for the schedule plot."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", np.nan)))


def _inputs(config: RunConfig):
    if config.model is None:
        from tfjoint.app import digits

        logging.info("No --model/--data: training the embedded digits CNN (%d epochs).", config.float_epochs)
        data = digits.load_digits(seed=config.seed)
        return data, digits.train_float_model(data, epochs=config.float_epochs, seed=config.seed)
    data = _load_npz(config.data)
    return data, _load_float_model(config.model, data.get("x_calib", data["x_train"][:256]))


def run(config: RunConfig) -> RunResult:
    """Runs the job; raises `ValidationError` (report inside) if the export fails validation."""
    if not isinstance(config, RunConfig):
        raise errors.ConfigError(f"run() takes a RunConfig; received {type(config).__name__}.")
    keras.utils.set_random_seed(config.seed)
    strategy = distribution_strategy()
    data, float_model = _inputs(config)
    x_train, y_train = data["x_train"].astype(np.float32), data["y_train"]
    loss, metrics = infer_loss(float_model, y_train, config.loss)
    total_steps = steps_for(config.epochs, len(x_train), config.batch_size)
    plan = tfjoint.allocate_sparsity(float_model, config.target_sparsity, method=config.allocation,
                                     validation_data=(data["x_val"], data["y_val"]))
    logging.info("Allocation (%s): %s.", config.allocation, dict(plan))
    schedule = tfjoint.plan_schedule(total_steps, plan if config.allocation != "uniform" else config.target_sparsity,
                                     prune_end=config.prune_end, quant_start=config.quant_start,
                                     channel_sparsity=config.channel_sparsity)
    logging.info("Fine-tuning %d steps; schedule %s.", total_steps, schedule.to_dict())

    with strategy.scope():
        joint = tfjoint.prepare(float_model, schedule=schedule)
        trained = joint
        if config.distill:
            trained = tfjoint.Distiller(joint, float_model, temperature=config.distill_temperature,
                                        alpha=config.distill_alpha)
        trained.compile(keras.optimizers.Adam(config.learning_rate), loss, metrics=metrics,
                        jit_compile=config.jit_compile)
    recorder = _BatchLossRecorder()
    history = trained.fit(x_train, y_train, epochs=config.epochs, batch_size=config.batch_size, verbose=1,
                          callbacks=tfjoint.callbacks() + [recorder])
    # Every worker strips: reading synchronized variables is collective under MultiWorkerMirroredStrategy.
    deployable = tfjoint.strip(joint)
    if not _is_chief(strategy):
        logging.info("Worker done; the chief writes the outputs.")
        return RunResult(report=None, out_dir=config.out, files={}, schedule=schedule, is_chief=False)
    resolved = {"loss": keras.losses.serialize(loss), "schedule": schedule.to_dict(),
                "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync}
    return _export_and_plot(config, resolved, deployable, float_model, data, schedule, plan, history, recorder)


def _export_and_plot(config, resolved, deployable, float_model, data, schedule, plan, history, recorder) -> RunResult:
    os.makedirs(config.out, exist_ok=True)
    files = {name: os.path.join(config.out, name) for name in (
        "model.tflite", "float_model.tflite", "report.json", "run_config.json", "sparsity_per_layer.png",
        "schedule.png", "weights_histogram.png")}
    # The flags as given, and what they resolved to (loss, schedule), to repeat or audit the run.
    atomic_write_text(files["run_config.json"], json.dumps(dict(config.to_dict(), resolved=resolved), indent=2) + "\n")
    calibration = data.get("x_calib", data["x_train"][:200])
    failure = None
    try:
        report = tfjoint.export_tflite(
            deployable, files["model.tflite"], schedule=schedule, representative_data=calibration,
            validation_data=(data["x_val"], data["y_val"]), float_model=float_model, tolerances=config.tolerances,
            measure_latency=True, keep_rejected=os.path.join(config.out, "model.rejected.tflite"),
            float_path=files["float_model.tflite"], verbose=True,
        )
    except errors.ValidationError as error:
        report, failure = error.report, error
    report.allocation = plan.to_dict()
    report.save_json(files["report.json"])
    if plan.curves:
        files["sensitivity.png"] = os.path.join(config.out, "sensitivity.png")
        plots.sensitivity(files["sensitivity.png"], plan)
    if report.per_layer_error:
        files["per_layer_error.png"] = os.path.join(config.out, "per_layer_error.png")
        plots.per_layer_error(files["per_layer_error.png"], report.per_layer_error,
                              [layer.name for layer in float_model.layers])

    plots.sparsity_per_layer(files["sparsity_per_layer.png"], schedule, report.per_layer_sparsity,
                             report.per_layer_channels)
    plots.schedule_and_loss(
        files["schedule.png"], schedule=schedule, total_steps=steps_for(config.epochs, len(data["x_train"]),
                                                                        config.batch_size),
        epoch_steps=history.history.get("tfjoint/step", []), epoch_sparsity=history.history.get("tfjoint/sparsity", []),
        batch_losses=recorder.losses,
    )
    pruned = {name: entry for name, entry in report.per_layer_sparsity.items() if entry.get("planned")}
    largest = max(pruned, key=lambda n: pruned[n]["size"], default=None)
    if largest is not None:
        tensors = set(pruned[largest]["tflite_tensors"])
        after = [w.values.ravel() for w in report.flatbuffer.weights if w.tensor_name in tensors]
        plots.weight_histograms(files["weights_histogram.png"], largest,
                                float_model.get_layer(largest).get_weights()[0],
                                np.concatenate(after) if after else np.zeros(0, np.int8))
    else:
        files.pop("weights_histogram.png")
    if failure is not None:
        files.pop("model.tflite")
        raise failure
    written = tfjoint.write_c_array(files["model.tflite"], config.out, "model_data")
    files.update({"model_data.h": written.header, "model_data.cc": written.source})
    return RunResult(report=report, out_dir=config.out, files=files, schedule=schedule)
