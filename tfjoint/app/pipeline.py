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
import sys

import numpy as np
from absl import logging

import tfjoint
from tfjoint import errors
from tfjoint._files import atomic_write_text
from tfjoint._keras import check_float_model, keras, tf
from tfjoint._progress import Phases
from tfjoint.app import datasets, plots
from tfjoint.app.flags import RUNTIMES_FOR_TARGET, SHARED_TABLES, RunConfig
from tfjoint.export.report import ExportReport
from tfjoint.losses import infer_loss
from tfjoint.prune.schedule import plan_schedule
from tfjoint.quantize.clusters import MIN_SAVING_BYTES, best_lut_saving
from tfjoint.tflite import tflm
from tfjoint.train import readback
from tfjoint.train.callbacks import SPARSITY_KEY, STEP_KEY

__all__ = ["RunConfig", "RunResult", "RunFailed", "run", "steps_for", "distribution_strategy", "RUNTIMES_FOR_TARGET"]

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


def import_user_modules(imports: str | None) -> list[str]:
    """Imports the modules --imports names (a module name, looked up from the current directory too, or a .py file),
    so that the custom layers they register load; the modules' names."""
    import importlib
    import importlib.util

    names = []
    for item in [part.strip() for part in (imports or "").split(",") if part.strip()]:
        try:
            if item.endswith(".py"):
                if not os.path.isfile(item):
                    raise FileNotFoundError(f"no file {item!r}")
                name = os.path.splitext(os.path.basename(item))[0]
                spec = importlib.util.spec_from_file_location(name, item)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                if os.getcwd() not in sys.path:
                    sys.path.insert(0, os.getcwd())  # as `python -m` would find it
                name = importlib.import_module(item).__name__
        except Exception as error:  # noqa: BLE001  (any failure of the user's module is theirs to see)
            raise errors.DataError(f"--imports: importing {item!r} failed ({type(error).__name__}: {error}). Give a "
                                   "module importable from the current directory (my_layers) or a .py file "
                                   "(path/to/my_layers.py).") from error
        names.append(name)
    return names


def _load_float_model(path: str, unsafe_load: bool = False, sample_inputs=None):
    """The --model file as a tf_keras float model (a Keras 3 file is rebuilt and checked, on `sample_inputs` when
    given); code in it runs only with --unsafe_load."""
    try:
        model = tfjoint.load_model(path, compile=False, safe_mode=not unsafe_load, sample_inputs=sample_inputs)
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


class _BatchLossRecorder(keras.callbacks.Callback):  # type: ignore[name-defined]  # tf_keras has no type stubs
    """Keeps the training loss of every batch, for the schedule plot."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", np.nan)))


def _inputs(config: RunConfig, phases):
    if config.model is None:
        from tfjoint.app import digits

        with phases.run("float training", f"the embedded digits CNN, {config.float_epochs} epochs"):
            data = digits.load_digits(seed=config.seed)
            return data, digits.train_float_model(data, epochs=config.float_epochs, seed=config.seed)
    assert config.data is not None  # RunConfig requires --data with --model
    with phases.run("loading", f"{config.model} and {config.data}"):
        import_user_modules(config.imports)
        datasets.check_exists(config.data)
        if os.path.isdir(config.data):  # a folder of images is read in the model's colour mode
            model = _load_float_model(config.model, config.unsafe_load)
            color_mode = datasets.color_mode_for(model, config.color_mode)
            data = datasets.load_data(config.data, config.image_shape, config.validation_split, config.seed,
                                      color_mode)
        else:  # arrays first: a Keras 3 model is rebuilt and checked on them (their sequence length, say)
            data = datasets.load_data(config.data, config.image_shape, config.validation_split, config.seed)
            model = _load_float_model(config.model, config.unsafe_load, data["x_train"][:16])
        datasets.check_against_model(data, model, config.data)
    return data, model


def _allocation(config: RunConfig, float_model, data, phases):
    """The per-layer weight sparsity plan; its errors name the flags a command user can change."""
    target = config.resolved_target_sparsity
    method = config.allocation if target > 0 else "uniform"  # nothing to spread: no scan
    with phases.run("allocation", method):
        try:
            return tfjoint.allocate_sparsity(float_model, target, method=method, max_sparsity=config.max_sparsity,
                                             validation_data=(data["x_val"], data["y_val"]))
        except errors.TargetUnreachableError as error:
            raise errors.ConfigError(
                f"--target_sparsity={target} cannot be reached with every layer at most "
                f"--max_sparsity={config.max_sparsity} (the layers it may prune are too small a share): lower "
                "--target_sparsity, raise --max_sparsity, or use --allocation=uniform.") from error


def _budget_plan(config: RunConfig, float_model, data, phases):
    """With --flash_kb/--ram_kb/--mmacs: the channels to remove to meet them (None without budgets)."""
    if not config.budget_given:
        return None
    if config.channel_sparsity:
        raise errors.ConfigError(f"--channel_sparsity={config.channel_sparsity} and a budget (--flash_kb, --ram_kb, "
                                 "--mmacs) both say which channels go: drop --channel_sparsity, the budget plans them.")
    with phases.run("budget plan"):
        return tfjoint.plan_for_budget(float_model, config.budget, validation_data=(data["x_val"], data["y_val"]),
                                       weight_bits=weight_bits_for(config))


def distills(config: RunConfig, loss, multi_label: bool = False) -> bool:
    """--distill; by default, under a budget, for a classifier (its softened outputs are what distillation
    passes on; a regression model is left to its own loss, and a multi-label one too: the Distiller softens a
    distribution over classes, which independent labels are not)."""
    if config.distill is not None:
        return config.distill
    if multi_label:
        return False
    classifies = isinstance(loss, (keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalCrossentropy,
                                   keras.losses.BinaryCrossentropy))
    return config.distills and classifies


def weight_bits_for(config: RunConfig) -> tuple[int, ...]:
    """The bit widths a budget plan may store kernels with: with --compression=lut and no --clusters, 8, 4 or 2 per
    layer (the plan chooses, beside channels); otherwise 8."""
    return (8, 4, 2) if config.compression == "lut" and config.clusters is None else (8,)


def compression_for(config: RunConfig, budget_plan) -> str:
    """--compression (auto: "tflm" on a microcontroller, "none" on a phone), unless a budget plan chose to store
    every kernel with 8 bits (then nothing is LUT-compressed; the file is still reduced for TFLM)."""
    if config.compression == "auto":
        return "tflm" if config.target == "micro" else "none"
    if config.compression == "lut" and config.clusters is None and not (budget_plan and budget_plan.clusters):
        logging.info("tfjoint: the budget plan keeps 8-bit weights everywhere: the file is not LUT-compressed")
        return "tflm"
    return config.compression


class RunFailed(errors.TfjointError):
    """A run that failed after training started: `report.json` and `error.log` are written (`files`), and `cause`
    is the error (a tfjoint error: the file could not be made or validated; anything else: a bug)."""

    def __init__(self, message: str, cause: BaseException, files: dict[str, str]):
        super().__init__(message)
        self.cause = cause
        self.files = files


def _schedule(config: RunConfig, total_steps: int, plan, budget_plan) -> "tfjoint.JointSchedule":
    """The flags, the allocation and the budget plan as the one `JointSchedule` the fit trains."""
    channels = dict(budget_plan.channel_fractions) if budget_plan else config.channel_sparsity
    clusters = dict(budget_plan.clusters) if budget_plan and budget_plan.clusters else config.clusters
    scores = budget_plan.channel_scores if budget_plan else {}  # the heads the planner's scan ranked
    return plan_schedule(total_steps, plan if plan.method != "uniform" else plan.target, prune_end=config.prune_end,
                         quant_start=config.quant_start, channel_sparsity=channels).replace(
        clusters=clusters, channel_scores=scores, shared_tables=SHARED_TABLES[config.shared_tables],
        residual_sparsity=config.residual_sparsity)


def _refuse_lut_that_cannot_pay(prepared) -> None:
    """--compression=lut where no clustered kernel could save bytes even at best (DECODE's tables, metadata and
    copy of the scales outweigh the indices' saving): refused before training, not after it."""
    savings = {pk.layer_name: (best_lut_saving(pk.kernel.shape, pk.quantizer.clusters, pk.quantizer.cluster_axis,
                                               pk.quantizer.shared_table), int(np.prod(pk.kernel.shape)))
               for pk in readback.pruned_kernels(prepared) if pk.quantizer.clusters is not None}
    if not savings or max(saving for saving, _ in savings.values()) >= MIN_SAVING_BYTES:
        return
    layer, (saving, size) = max(savings.items(), key=lambda item: item[1][0])
    outcome = f"would save {saving} bytes at most" if saving > 0 else f"would add {-saving} bytes even at best"
    raise errors.ConfigError(
        f"--compression=lut: no clustered kernel is large enough for TFLM's LUT compression to pay: the best, "
        f"'{layer}' ({size} weights), {outcome} (its indices against DECODE's tables, metadata and copy of the "
        f"quantization parameters; it must save {MIN_SAVING_BYTES}). Use --compression=tflm (TFLM's flatbuffer "
        "reduction alone) for a model this small.")


def run(config: RunConfig) -> RunResult:
    """Runs the job; raises `ValidationError` (report inside) if the export fails validation, and `RunFailed` (report
    and error.log written) if anything else fails after training started."""
    if not isinstance(config, RunConfig):
        raise errors.ConfigError(f"run() takes a RunConfig; received {type(config).__name__}.")
    keras.utils.set_random_seed(config.seed)
    phases = Phases("tfjoint")
    strategy = distribution_strategy()
    if config.target == "micro":
        tflm.require_tflm("--target=micro")
    data, float_model = _inputs(config, phases)
    x_train, y_train = data["x_train"].astype(np.float32), data["y_train"]
    loss, metrics = infer_loss(float_model, y_train, config.loss)
    distill = distills(config, loss, multi_label=np.ndim(y_train) == 2 and np.shape(y_train)[-1] > 1
                       and isinstance(loss, keras.losses.BinaryCrossentropy))
    total_steps = steps_for(config.epochs, len(x_train), config.batch_size)
    budget_plan = _budget_plan(config, float_model, data, phases)
    if budget_plan is not None:
        logging.info("tfjoint: %s", plan_accuracy_sentence(budget_plan))
    plan = _allocation(config, float_model, data, phases)
    logging.info("tfjoint: weight sparsity per layer (%s): %s", plan.method,
                 {name: round(value, 3) for name, value in plan.items()})
    schedule = _schedule(config, total_steps, plan, budget_plan)
    logging.info("tfjoint: fine-tuning %d steps; schedule %s", total_steps, schedule.to_dict())

    with strategy.scope(), phases.run("prepare", "pruning + QAT wrappers, and a conversion check"):
        checks = config.runtimes + (("streaming",) if config.streaming else ())
        # Training samples rank the residual channels --residual_sparsity removes (by the LayerNorms' outputs).
        samples = x_train[:256] if config.residual_sparsity else None
        joint = tfjoint.prepare(float_model, schedule, sample_inputs=samples, check=checks)
        if compression_for(config, budget_plan) == "lut":
            _refuse_lut_that_cannot_pay(joint)
        trained = joint
        if distill:
            if config.distill is None:
                logging.info("tfjoint: distilling from the float model, the default for a classifier under a budget "
                             "(--nodistill turns it off)")
            trained = tfjoint.Distiller(joint, float_model, temperature=config.distill_temperature,
                                        alpha=config.distill_alpha)
        in_scope = [m if isinstance(m, str) else type(m).from_config(m.get_config()) for m in metrics]  # variables
        trained.compile(keras.optimizers.Adam(config.learning_rate), loss, metrics=in_scope,  # in the strategy's
                        jit_compile=config.jit_compile)                                      # scope
    resolved = {"loss": keras.losses.serialize(loss), "schedule": schedule.to_dict(),
                "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                "runtimes": list(config.runtimes), "distill": distill,
                "budget_plan": budget_plan.to_dict() if budget_plan else None}
    known = {"allocation": plan.to_dict(), "plan": budget_plan.to_dict() if budget_plan else None,
             "schedule": schedule.to_dict()}
    recorder = _BatchLossRecorder()
    try:
        # A terminal gets Keras's progress bar; a log file one line per epoch (a bar there is thousands of \r and \b).
        history = trained.fit(x_train, y_train, epochs=config.epochs, batch_size=config.batch_size,
                              verbose=1 if sys.stdout.isatty() else 2,
                              callbacks=tfjoint.callbacks() + [recorder])
        known["history"] = {key: [float(v) for v in values] for key, values in history.history.items()}
        # Every worker strips: reading synchronized variables is collective under MultiWorkerMirroredStrategy.
        deployable = tfjoint.strip(joint)
        if not _is_chief(strategy):
            logging.info("Worker done; the chief writes the outputs.")
            return RunResult(report=None, out_dir=config.out, files={}, schedule=schedule, is_chief=False)
        return _export_and_plot(config, resolved, deployable, float_model, data, schedule, plan, budget_plan,
                                history, recorder)
    except errors.ValidationError:
        raise  # its report is written
    except Exception as error:  # noqa: BLE001  (after the fit, nothing is lost: what is known goes to report.json)
        raise _failed_after_training(config, resolved, known, error) from error


def _failed_after_training(config: RunConfig, resolved: dict, known: dict, error: BaseException) -> RunFailed:
    """Writes report.json (what is known, and the error) and error.log (the traceback); the error to raise."""
    import traceback

    os.makedirs(config.out, exist_ok=True)
    files = {"report.json": os.path.join(config.out, "report.json"),
             "error.log": os.path.join(config.out, "error.log"),
             "run_config.json": os.path.join(config.out, "run_config.json")}
    text = "".join(traceback.format_exception(error))
    atomic_write_text(files["error.log"], text)
    atomic_write_text(files["run_config.json"], json.dumps(dict(config.to_dict(), resolved=resolved), indent=2,
                                                           default=str) + "\n")
    device = isinstance(error, errors.DeviceError)
    report = {"status": "FAILED after training", "passed": False, "validated": False,
              "error": {"type": type(error).__name__, "message": str(error), "tfjoint_error":
                        isinstance(error, errors.TfjointError), "operator": getattr(error, "operator", None) if
                        device else None, "tensor": getattr(error, "tensor", None) if device else None,
                        "traceback": files["error.log"]},
              "runtimes": list(config.runtimes), "run": known}
    atomic_write_text(files["report.json"], json.dumps(report, indent=2, default=str) + "\n")
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return RunFailed(f"failed after training ({type(error).__name__}): {_clipped(first)} Nothing was lost: "
                     f"{files['report.json']} has what is known, {files['error.log']} the traceback.", error, files)


def _clipped(message: str, limit: int = 500) -> str:
    """`message` within `limit` characters for the one line the command prints: its start and its end, where a
    tfjoint error says what to do (the whole message is in report.json)."""
    if len(message) <= limit:
        return message
    end = message[-(limit // 2):]
    sentence = end.find(". ")
    end = end[sentence + 2:] if 0 <= sentence < len(end) - 40 else end
    return f"{message[:limit - len(end) - 5]} ... {end}"


def plan_accuracy_sentence(budget_plan) -> str:
    """What the sensitivity scan predicts a budget plan costs, said before training."""
    predicted = budget_plan.predicted
    removed = ", ".join(f"{group} {fraction:.0%}" for group, fraction in budget_plan.channel_fractions.items())
    accuracy, float_accuracy = predicted.get("accuracy_before_fine_tuning"), predicted.get("float_accuracy")
    if accuracy is not None and float_accuracy is not None:
        figure = f"accuracy {accuracy:.1%} (float {float_accuracy:.1%})"
    else:
        figure = (f"validation loss {predicted.get('loss_before_fine_tuning', float('nan')):.4g} (float "
                  f"{predicted.get('float_loss', float('nan')):.4g})")
    shared = ", ".join(f"{layer} {clusters.bit_length() - 1}-bit" for layer, clusters in budget_plan.clusters.items())
    also = f" and stores kernels with fewer bits ({shared})" if shared else ""
    return (f"the budget plan removes channels ({removed or 'none'}){also}; with that done and no fine-tuning the "
            f"model has {figure}: the fine-tuning recovers from there")


def fine_tuning_shortfall(report: ExportReport, budget_plan, distilled: bool = False) -> str | None:
    """A sentence when the fine-tuned model ends far below what it should: the plan's untrained prediction, or the
    float model; with what helps (distillation only where it was not used)."""
    distil = "" if distilled else ", or distil from the float model (--distill)"
    trained = report.pruned_accuracy if report.pruned_accuracy is not None else report.keras_accuracy
    float_accuracy = report.float_accuracy
    if trained is None or float_accuracy is None:
        return None
    predicted = budget_plan.predicted.get("accuracy_before_fine_tuning") if budget_plan is not None else None
    if predicted is not None and trained < predicted - 0.02:
        return (f"the fine-tuned model scores {trained:.1%}, below the {predicted:.1%} the budget plan measured with "
                f"its channels removed and no fine-tuning at all: fine-tuning made it worse. Train longer "
                f"(--epochs) or with a lower --learning_rate{distil}.")
    if trained < float_accuracy - 0.05:
        return (f"the fine-tuned model scores {trained:.1%}, {float_accuracy - trained:.1%} below the float model's "
                f"{float_accuracy:.1%}: it has not recovered from what was removed. Train longer (--epochs){distil}, "
                "or remove less (--target_sparsity, --channel_sparsity, a larger budget).")
    return None


def _export_and_plot(config, resolved, deployable, float_model, data, schedule, plan, budget_plan, history,
                     recorder) -> RunResult:
    os.makedirs(config.out, exist_ok=True)
    files = {name: os.path.join(config.out, name) for name in (
        "model.tflite", "float_model.tflite", "report.json", "run_config.json", "sparsity_per_layer.png",
        "schedule.png", "weights_histogram.png")}
    # The flags as given, and what they resolved to (loss, schedule), to repeat or audit the run.
    atomic_write_text(files["run_config.json"], json.dumps(dict(config.to_dict(), resolved=resolved), indent=2) + "\n")
    calibration = data.get("x_calib", data["x_train"][:200])
    options = config.export_options(config.out, compression_for(config, budget_plan),
                                    budget_plan.budget if budget_plan else None)
    failure = None
    try:
        report = tfjoint.export_tflite(deployable, files["model.tflite"], representative_data=calibration,
                                       validation_data=(data["x_val"], data["y_val"]), float_model=float_model,
                                       options=options)
    except errors.ValidationError as error:
        report, failure = error.report, error
    shortfall = fine_tuning_shortfall(report, budget_plan, resolved["distill"])
    if shortfall:
        logging.warning("tfjoint: %s", shortfall)
    report.save_json(files["report.json"], run={
        "allocation": plan.to_dict(), "plan": budget_plan.to_dict() if budget_plan else None, "shortfall": shortfall,
        "distill": resolved["distill"], "history": {key: [float(v) for v in values]
                                                for key, values in history.history.items()}})
    _plot(config, files, report, float_model, data, schedule, plan, budget_plan, history, recorder)
    if failure is not None:
        files.pop("model.tflite")
        raise failure
    if config.target == "micro":
        written = tfjoint.write_c_array(files["model.tflite"], config.out, "model_data", **report.device_memory)
        files.update({"model_data.h": written.header, "model_data.cc": written.source})
    return RunResult(report=report, out_dir=config.out, files=files, schedule=schedule)


def _plot(config, files, report, float_model, data, schedule, plan, budget_plan, history, recorder) -> None:
    """The run's figures, from the report and the training history (each path added to `files`)."""
    if budget_plan is not None:
        files["budget.png"] = os.path.join(config.out, "budget.png")
        plots.channels_for_budget(files["budget.png"], report.per_layer_channels, report.budget, budget_plan)
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
        files["schedule.png"], schedule=schedule, sizes=plan.sizes,
        total_steps=steps_for(config.epochs, len(data["x_train"]), config.batch_size),
        epoch_steps=history.history.get(STEP_KEY, []), epoch_sparsity=history.history.get(SPARSITY_KEY, []),
        batch_losses=recorder.losses,
    )
    pruned = {name: entry for name, entry in report.per_layer_sparsity.items() if entry.get("planned")}
    largest = max(pruned, key=lambda n: pruned[n]["size"], default=None)
    if largest is not None and report.flatbuffer is not None:
        tensors = set(pruned[largest]["tflite_tensors"])
        after = [w.values.ravel() for w in report.flatbuffer.weights
                 if w.tensor_name in tensors and w.values is not None]
        plots.weight_histograms(files["weights_histogram.png"], largest,
                                float_model.get_layer(largest).get_weights()[0],
                                np.concatenate(after) if after else np.zeros(0, np.int8))
    else:
        files.pop("weights_histogram.png")
