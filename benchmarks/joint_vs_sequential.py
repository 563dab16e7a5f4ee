"""Benchmark: tfjoint's one fit against TF-MOT's sequential recipe, side by side in one process.

    python benchmarks/joint_vs_sequential.py --out=benchmarks/results            # full run (~10-15 min, 2 cores)
    python benchmarks/joint_vs_sequential.py --tiny --out=/tmp/bench             # smoke run (tests use this)

For each model and seed, from the same pre-trained float model and with the
same total number of fine-tuning epochs:

* tfmot_sequential: prune_low_magnitude + PolynomialDecay fit (half the epochs)
  -> strip_pruning -> quantize_apply(Default8BitPrunePreserveQuantizeScheme)
  fit (other half) -> int8 TFLite. For Conv1D, which TF-MOT's QAT refuses,
  its best path: prune fit (all epochs) -> strip -> full-integer post-training
  quantization with a representative dataset.
* tfjoint: prepare -> one fit (all epochs; target sparsity reached halfway,
  like the sequential prune phase) -> export_tflite.
* tfjoint_qat_late (digits only): the same with fake quant starting when
  pruning ends, the evidence behind the default `quant_start_step=0`.

Both int8 files go through the same `tfjoint.export_tflite` measurement
(LiteRT, flatbuffer read-back), with tolerances off so nothing is hidden.
Per-step times are steady-state: after fine-tuning, every trained model (the
float model, TF-MOT's pruning model, TF-MOT's QAT model, tfjoint's model)
trains on the same batches in interleaved rounds; each round's median step is
divided by the float model's in that round, and the median of those ratios is
reported (steps of a few milliseconds on a shared machine vary by +-10% from
round to round; ratios taken within a round do not drift). The mask-update
ramp is in the fine-tuning wall time instead.

"Keras acc" is each system's own Keras model before conversion: for TF-MOT's
Conv1D path that is the pruned *float* model, which shows what 80% sparsity
alone costs that model. "pruned sparsity" counts only the kernels the system
pruned (the target applies to them); "all weights" also counts kernels left
dense (depthwise, or a layer excluded from pruning).
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tensorflow_model_optimization as tfmot  # noqa: E402
from common import (  # noqa: E402
    NO_TOLERANCE,
    TASKS,
    StepTimer,
    Task,
    check_task_names,
    entropy_bound_bytes,
    float_clone,
    gzip_size,
    mean_spread,
    pruned_layer_names,
    steady_step_ratios,
    write_text,
)

import tfjoint  # noqa: E402
from tfjoint import keras  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for results.json and table.md.")
flags.DEFINE_list("models", ["digits", "conv1d", "conv1d_dense_head", "conv1d_bn", "mobilenet"],
                  "Which models to run.")
flags.DEFINE_integer("seeds", 3, "Seeds per system (accuracy is reported as mean and spread).", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Total fine-tuning epochs per system.", lower_bound=2)
flags.DEFINE_float("target_sparsity", 0.8, "Target sparsity for every system.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes: 1 seed, 2 epochs, small data, tiny MobileNet.")


# --- Systems ---------------------------------------------------------------------


def _schedule(steps_per_epoch, prune_epochs):
    prune_steps = steps_per_epoch * prune_epochs
    frequency = max(1, prune_steps // 8)  # the same schedule for every system
    return max(frequency, prune_steps // frequency * frequency), frequency


def _export(model, path, data, float_model, representative=None):
    return tfjoint.export_tflite(model, path, representative_data=representative,
                                 validation_data=(data["x_val"], data["y_val"]), float_model=float_model,
                                 measure_latency=True, **NO_TOLERANCE)


def run_tfmot_sequential(task: Task, epochs, sparsity, path):
    """TF-MOT's recipe on a copy of the task's model (prune_low_magnitude wraps, and trains, the layers it is given)."""
    model, data, batch, loss = float_clone(task.model, task.loss), task.data, task.batch, task.loss
    spe = int(np.ceil(len(data["x_train"]) / batch))
    prune_epochs = epochs // 2 if task.tfmot_qat else epochs
    end_step, frequency = _schedule(spe, epochs // 2)  # target reached halfway, as for tfjoint
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step, frequency=frequency)
    pruned_names = set(pruned_layer_names(task))
    # TF-MOT's documented way to prune chosen layers; the layers (and weights) are the copy's own.
    pruned = keras.models.clone_model(model, clone_function=lambda layer: (
        tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in pruned_names
        else layer))
    pruned.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    prune_timer = StepTimer()
    pruned.fit(data["x_train"], data["y_train"], batch_size=batch, epochs=prune_epochs, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), prune_timer])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    result = {"fit_seconds": prune_timer.fit_seconds,
              "timed": {"prune": (pruned, [tfmot.sparsity.keras.UpdatePruningStep()])}}
    if not task.tfmot_qat:
        report = _export(stripped, path, data, task.model, representative=data["x_calib"])
        result["note"] = "TF-MOT QAT refuses Conv1D: prune -> strip -> full-integer post-training quantization"
        return result, report
    qat = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(stripped),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    qat.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    qat_timer = StepTimer()
    qat.fit(data["x_train"], data["y_train"], batch_size=batch, epochs=epochs - prune_epochs, verbose=0,
            callbacks=[qat_timer])
    result["fit_seconds"] += qat_timer.fit_seconds
    result["timed"]["qat"] = (qat, [])
    return result, _export(qat, path, data, task.model)


def run_tfjoint(task: Task, epochs, sparsity, path, quant_start_fraction=0.0):
    data, batch = task.data, task.batch
    spe = int(np.ceil(len(data["x_train"]) / batch))
    end_step, frequency = _schedule(spe, epochs // 2)
    joint = tfjoint.prepare(float_clone(task.model, task.loss), target_sparsity=sparsity, end_step=end_step,
                            frequency=frequency, quant_start_step=int(quant_start_fraction * spe * epochs),
                            prune_only=pruned_layer_names(task))
    joint.compile(keras.optimizers.Adam(1e-3), task.loss, metrics=["accuracy"])
    timer = StepTimer()
    joint.fit(data["x_train"], data["y_train"], batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    return {"fit_seconds": timer.fit_seconds, "timed": {"joint": (joint, [])}}, _export(joint, path, data, task.model)


def flatbuffer_measures(path, pruned_names) -> dict:
    """Read back from the file: sparsity of the pruned kernels, and gzip size against the entropy bound."""
    with open(path, "rb") as handle:
        content = handle.read()
    summary = tfjoint.read_flatbuffer(content)
    candidates = {name: name for name in pruned_names} | {f"quant_{name}": name for name in pruned_names}
    zeros, size, found = 0, 0, set()
    for layer, weights in summary.weights_of(candidates).items():
        zeros += sum(w.zeros for w in weights)
        size += sum(w.size for w in weights)
        found.add(candidates[layer])
    missing = sorted(set(pruned_names) - found)
    if missing:
        raise RuntimeError(f"{path}: no weight tensor found for pruned layers {missing}")
    bound = sum(entropy_bound_bytes(w.size, w.size - w.zeros) for w in summary.weights)
    return {"pruned_sparsity": zeros / size if size else None, "entropy_bound_bytes": bound,
            "gzip_over_bound": gzip_size(content) / bound if bound else None}


def measure_system(name, timings, report, path, pruned_names):
    row = {
        "system": name,
        "float_accuracy": report.float_accuracy,
        "keras_accuracy": report.keras_accuracy,  # the exported Keras model, before conversion
        "int8_accuracy": report.int8_accuracy,
        "top1_agreement": report.top1_agreement,
        "weight_sparsity": report.weight_sparsity,
        "fully_int8": report.fully_int8,
        "size_bytes": report.size_bytes,
        "gzip_size_bytes": report.gzip_size_bytes,
        "float_gzip_size_bytes": report.float_gzip_size_bytes,
        "latency_ratio": report.latency_ratio,
        "fit_seconds": timings["fit_seconds"],
        "notes": [timings["note"]] if "note" in timings else [],
    }
    row.update(flatbuffer_measures(path, pruned_names))
    return row


def run_model(task_name, seed, epochs, sparsity, tiny, out):
    task = TASKS[task_name](seed, tiny)
    # Every system starts from its own copy of the pre-trained weights and is
    # compared with the untouched original.
    systems = [("tfmot_sequential", lambda p: run_tfmot_sequential(task, epochs, sparsity, p)),
               ("tfjoint", lambda p: run_tfjoint(task, epochs, sparsity, p))]
    if task_name == "digits":
        systems.append(("tfjoint_qat_late", lambda p: run_tfjoint(task, epochs, sparsity, p, quant_start_fraction=0.5)))
    rows, timed = [], {"float": (float_clone(task.model, task.loss), [])}
    reference_weights = [w.copy() for w in task.model.get_weights()]
    for name, run in systems:
        path = os.path.join(out, f"{task_name}_seed{seed}_{name}.tflite")
        timings, report = run(path)
        rows.append(measure_system(name, timings, report, path, pruned_layer_names(task)))
        timed.update({f"{name}:{kind}": entry for kind, entry in timings["timed"].items()})
    unchanged = all(np.array_equal(a, b) for a, b in zip(reference_weights, task.model.get_weights()))
    heavy = task_name == "mobilenet"
    per_round, float_seconds = steady_step_ratios(timed, task.data, task.batch,
                                                  rounds=1 if tiny else (5 if heavy else 9), steps=4 if tiny else 20)
    for row in rows:
        for key, ratios in per_round.items():
            system, _, kind = key.partition(":")
            if system == row["system"]:
                row[f"{kind}_step_ratio"] = float(np.median(ratios))
                row[f"{kind}_step_ratio_rounds"] = ratios
        if "joint_step_ratio_rounds" in row and "tfmot_sequential:qat" in per_round:
            # Paired within each round: tfjoint's step over TF-MOT's QAT-only step.
            row["joint_over_tfmot_qat_rounds"] = [
                joint / qat for joint, qat in zip(row["joint_step_ratio_rounds"], per_round["tfmot_sequential:qat"])]
        row.update(model=task_name, seed=seed, float_step_s=float_seconds, dense_layers=list(task.dense),
                   reference_unchanged=unchanged)
    return rows


# --- Summary ---------------------------------------------------------------------


def summarize(rows):
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["system"]), []).append(row)
    summary = []
    for (model, system), group in groups.items():
        entry = {"model": model, "system": system, "seeds": len(group)}
        for key in ("float_accuracy", "keras_accuracy", "int8_accuracy", "top1_agreement", "weight_sparsity",
                    "pruned_sparsity", "gzip_size_bytes",
                    "size_bytes", "float_gzip_size_bytes", "fit_seconds", "prune_step_ratio", "qat_step_ratio",
                    "joint_step_ratio", "latency_ratio", "gzip_over_bound"):
            entry[key], entry[key + "_sd"] = mean_spread([r.get(key) for r in group])
        paired = [ratio for r in group for ratio in r.get("joint_over_tfmot_qat_rounds", [])]
        if paired:
            entry["joint_over_tfmot_qat"] = float(np.median(paired))
            entry["joint_over_tfmot_qat_quartiles"] = [float(q) for q in np.percentile(paired, [25, 75])]
        entry["fully_int8"] = all(r["fully_int8"] for r in group)
        entry["notes"] = sorted({n for r in group for n in r["notes"]})
        summary.append(entry)
    return summary


def markdown_table(summary) -> str:
    def pct(entry, key):
        if entry.get(key) is None:
            return "n/a"
        return f"{100 * entry[key]:.2f} ± {100 * entry[key + '_sd']:.2f}"

    def num(entry, key, fmt="{:.2f}"):
        return "n/a" if entry.get(key) is None else fmt.format(entry[key])

    columns = ["model", "system", "float acc %", "Keras acc %", "int8 acc % (LiteRT)", "top-1 agree %",
               "sparsity in .tflite %: pruned (all weights)",
               "int8 gzip KB (float32)", "gzip ÷ entropy bound", "fine-tune s", "step ÷ float step",
               "int8 ÷ float32 latency", "fully int8"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for e in summary:
        steps = ", ".join(
            f"{label} {e[key]:.2f}" for label, key in (("prune", "prune_step_ratio"), ("QAT", "qat_step_ratio"),
                                                        ("joint", "joint_step_ratio")) if e.get(key) is not None)
        if e.get("joint_over_tfmot_qat") is not None:
            low, high = e["joint_over_tfmot_qat_quartiles"]
            steps += f" (= {e['joint_over_tfmot_qat']:.2f}× QAT, IQR {low:.2f}–{high:.2f})"
        size = f"{e['gzip_size_bytes'] / 1024:.1f} ({(e['float_gzip_size_bytes'] or 0) / 1024:.0f})"
        sparsity = f"{pct(e, 'pruned_sparsity')} ({num(e, 'weight_sparsity', '{:.2%}')})"
        cells = [e["model"], e["system"], pct(e, "float_accuracy"), pct(e, "keras_accuracy"), pct(e, "int8_accuracy"),
                 pct(e, "top1_agreement"), sparsity, size, num(e, "gzip_over_bound") + "x",
                 num(e, "fit_seconds", "{:.1f}"),
                 steps, num(e, "latency_ratio"), "yes" if e["fully_int8"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    seeds, epochs = (1, 2) if FLAGS.tiny else (FLAGS.seeds, FLAGS.epochs)
    os.makedirs(FLAGS.out, exist_ok=True)
    check_task_names(FLAGS.models)
    started = time.perf_counter()
    rows = []
    for task_name in FLAGS.models:
        task_seeds = 1 if task_name == "mobilenet" else seeds  # timing and size only
        for seed in range(task_seeds):
            print(f"[{time.perf_counter() - started:6.0f}s] {task_name} seed {seed}", flush=True)
            rows.extend(run_model(task_name, seed, min(epochs, 4) if task_name == "mobilenet" else epochs,
                                  FLAGS.target_sparsity, FLAGS.tiny, FLAGS.out))
    summary = summarize(rows)
    table = markdown_table(summary)
    command = "python benchmarks/joint_vs_sequential.py " + " ".join(sys.argv[1:])
    result = {"command": command, "seconds": time.perf_counter() - started, "epochs": epochs, "seeds": seeds,
              "target_sparsity": FLAGS.target_sparsity, "summary": summary, "runs": rows}
    write_text(os.path.join(FLAGS.out, "results.json"), json.dumps(result, indent=2) + "\n")
    write_text(os.path.join(FLAGS.out, "table.md"), f"`{command}` ({result['seconds']:.0f} s)\n\n{table}\n")
    for path in os.listdir(FLAGS.out):
        if path.endswith(".tflite"):
            os.remove(os.path.join(FLAGS.out, path))
    print(table)
    print(f"wrote {FLAGS.out}/results.json and table.md in {result['seconds']:.0f} s")


if __name__ == "__main__":
    app.run(main)
