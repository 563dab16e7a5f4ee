"""Benchmark: tfjoint's one fit against TF-MOT's best path, side by side in one process.

    python benchmarks/joint_vs_sequential.py --out=benchmarks/results            # full run (~40 min, 2 cores)
    python benchmarks/joint_vs_sequential.py --tiny --out=/tmp/bench             # smoke run (tests use this)

For each model and seed, from the same pre-trained float model and with the
same total number of fine-tuning epochs (the target sparsity is reached
halfway, at `end_step`, by every system):

* tfmot_prune_qat: prune_low_magnitude + PolynomialDecay fit (half the
  epochs) -> strip_pruning -> quantize_apply(Default8BitPrunePreserveQuantizeScheme)
  fit (other half) -> int8 TFLite. Not for Conv1D, which TF-MOT's QAT refuses.
* tfmot_prune_ptq: prune fit (all epochs) -> strip -> full-integer
  post-training quantization with a representative dataset.
* tfjoint_qs<f>: prepare with `quant_start_step` at fraction f of the fit
  (0, a quarter, a half = end_step, three quarters) -> one fit ->
  export_tflite(quantization="auto"): the QAT file and the post-training
  file of the same pruned weights, the better shipped.

TF-MOT's best path, per model, is the one with the better mean accuracy on
the selection split. Every export chooses (or is checked) on the selection
half of the validation data; the accuracy in the table is the shipped file's
on the other half (the test split), run in LiteRT. Tolerances are off so
nothing is hidden.

Step times are steady-state: after fine-tuning, the float model, TF-MOT's
pruning model, TF-MOT's QAT model and tfjoint's default model (in its
quantized phase) train on the same batches in interleaved rounds; each
round's median step is divided by the float model's in that round, and
tfjoint's step is also paired with TF-MOT's prune and QAT steps of the same
round. The fine-tune wall time is each system's whole fit (tracing, the
mask-update ramp, phase switches included).

"pruned sparsity" counts only the kernels the system pruned (the target
applies to them); "all weights" also counts kernels left dense.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
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
    median_and_quartiles,
    pruned_layer_names,
    steady_step_ratios,
    write_text,
)

import tfjoint  # noqa: E402
from tfjoint.tflite.runtimes import TFLiteModel  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for results.json and table.md.")
flags.DEFINE_list("models", ["digits", "conv1d", "conv1d_dense_head", "conv1d_bn", "mobilenet"],
                  "Which models to run.")
flags.DEFINE_integer("seeds", 3, "Seeds per system (accuracy is reported as mean and spread).", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Total fine-tuning epochs per system.", lower_bound=2)
flags.DEFINE_float("target_sparsity", 0.8, "Target sparsity for every system.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_list("quant_starts", ["0", "0.25", "0.5", "0.75"],
                  "tfjoint's quant_start_step, as fractions of the fit (end_step is at 0.5).")
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes: 1 seed, 2 epochs, small data, tiny MobileNet.")


# --- Systems ---------------------------------------------------------------------


def _schedule(steps_per_epoch, prune_epochs):
    prune_steps = steps_per_epoch * prune_epochs
    frequency = max(1, prune_steps // 8)  # the same schedule for every system
    return max(frequency, prune_steps // frequency * frequency), frequency


def _splits(data):
    """The validation data halved: the selection split (what exports check and choose on) and the test split."""
    half = len(data["x_val"]) // 2
    return (data["x_val"][:half], data["y_val"][:half]), (data["x_val"][half:], data["y_val"][half:])


def _export(model, path, data, float_model, representative=None, quantization="auto"):
    selection, _ = _splits(data)
    return tfjoint.export_tflite(model, path, representative_data=representative, validation_data=selection,
                                 float_model=float_model, measure_latency=True, quantization=quantization,
                                 **NO_TOLERANCE)


def test_accuracy(path, task) -> float:
    """The file's top-1 accuracy on the test split, in LiteRT (XNNPACK, as the export validates)."""
    _, (x_test, y_test) = _splits(task.data)
    with open(path, "rb") as handle:
        content = handle.read()
    model = TFLiteModel(content, task.model.input_names, task.model.output_names)
    [outputs] = model.predict([x_test])
    return float(np.mean(np.argmax(outputs, axis=-1) == y_test))


def _tfmot_pruned(task: Task, epochs, prune_epochs, sparsity):
    """TF-MOT's pruning fit on a copy of the task's model (prune_low_magnitude wraps the layers it is given)."""
    model, data, batch, loss = float_clone(task.model, task.loss), task.data, task.batch, task.loss
    spe = int(np.ceil(len(data["x_train"]) / batch))
    end_step, frequency = _schedule(spe, epochs // 2)  # target reached halfway, as for tfjoint
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0, end_step=end_step, frequency=frequency)
    pruned_names = set(pruned_layer_names(task))
    # TF-MOT's documented way to prune chosen layers; the layers (and weights) are the copy's own.
    pruned = keras.models.clone_model(model, clone_function=lambda layer: (
        tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in pruned_names
        else layer))
    pruned.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    timer = StepTimer()
    pruned.fit(data["x_train"], data["y_train"], batch_size=batch, epochs=prune_epochs, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), timer])
    return pruned, timer.fit_seconds


def run_tfmot_prune_ptq(task: Task, epochs, sparsity, path):
    """TF-MOT prune (all epochs) -> strip -> full-integer post-training quantization."""
    pruned, seconds = _tfmot_pruned(task, epochs, epochs, sparsity)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    report = _export(stripped, path, task.data, task.model, representative=task.data["x_calib"])
    return {"fit_seconds": seconds, "timed": {"prune": (pruned, [tfmot.sparsity.keras.UpdatePruningStep()])}}, report


def run_tfmot_prune_qat(task: Task, epochs, sparsity, path):
    """TF-MOT prune (half the epochs) -> strip -> PrunePreserve QAT (the other half)."""
    data, batch, loss = task.data, task.batch, task.loss
    pruned, seconds = _tfmot_pruned(task, epochs, epochs // 2, sparsity)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    qat = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(stripped),
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    qat.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    qat_timer = StepTimer()
    qat.fit(data["x_train"], data["y_train"], batch_size=batch, epochs=epochs - epochs // 2, verbose=0,
            callbacks=[qat_timer])
    return {"fit_seconds": seconds + qat_timer.fit_seconds, "timed": {"qat": (qat, [])}}, \
        _export(qat, path, data, task.model, quantization="qat")


def run_tfjoint(task: Task, epochs, sparsity, path, quant_start_fraction):
    data, batch = task.data, task.batch
    spe = int(np.ceil(len(data["x_train"]) / batch))
    end_step, frequency = _schedule(spe, epochs // 2)
    joint = tfjoint.prepare(float_clone(task.model, task.loss),
                            tfjoint.JointSchedule(sparsity, end_step=end_step, frequency=frequency,
                                                  quant_start_step=int(round(quant_start_fraction * spe * epochs))),
                            layers=tfjoint.LayerSelection(prune_only=pruned_layer_names(task)))
    joint.compile(keras.optimizers.Adam(1e-3), task.loss, metrics=["accuracy"])
    timer = StepTimer()
    joint.fit(data["x_train"], data["y_train"], batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    report = _export(joint, path, data, task.model, representative=data["x_calib"])
    return {"fit_seconds": timer.fit_seconds, "timed": {"joint": (joint, [])}}, report


def flatbuffer_measures(path, pruned_names) -> dict:
    """Read back from the file: sparsity of the pruned kernels, and gzip size against the entropy bound."""
    with open(path, "rb") as handle:
        content = handle.read()
    summary = tfjoint.inspect.read_flatbuffer(content)
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


def measure_system(name, timings, report, path, task):
    candidates = report.quantization_candidates
    row = {
        "system": name,
        "float_accuracy": report.float_accuracy,
        "keras_accuracy": report.keras_accuracy,  # the exported Keras model, before conversion (selection split)
        "selection_accuracy": report.int8_accuracy,
        "int8_accuracy": test_accuracy(path, task),  # the shipped file, test split
        "shipped": report.quantization,
        "qat_file_accuracy": candidates.get("qat", {}).get("int8_accuracy"),  # selection split
        "ptq_file_accuracy": candidates.get("post_training", {}).get("int8_accuracy"),
        "top1_agreement": report.top1_agreement,
        "weight_sparsity": report.weight_sparsity,
        "fully_int8": report.fully_int8,
        "size_bytes": report.size_bytes,
        "gzip_size_bytes": report.gzip_size_bytes,
        "float_gzip_size_bytes": report.float_gzip_size_bytes,
        "latency_ratio": report.latency_ratio,
        "fit_seconds": timings["fit_seconds"],
        "export_seconds": sum(report.stage_seconds.values()),
        "notes": [timings["note"]] if "note" in timings else [],
    }
    row.update(flatbuffer_measures(path, pruned_layer_names(task)))
    return row


def _systems(task_name, task, epochs, sparsity):
    systems = []
    if task.tfmot_qat:
        systems.append(("tfmot_prune_qat", lambda p: run_tfmot_prune_qat(task, epochs, sparsity, p)))
    systems.append(("tfmot_prune_ptq", lambda p: run_tfmot_prune_ptq(task, epochs, sparsity, p)))
    for fraction in FLAGS.quant_starts:
        systems.append((f"tfjoint_qs{float(fraction):.2f}",
                        lambda p, f=float(fraction): run_tfjoint(task, epochs, sparsity, p, f)))
    return systems


def run_model(task_name, seed, epochs, sparsity, tiny, out):
    task = TASKS[task_name](seed, tiny)
    # Every system starts from its own copy of the pre-trained weights and is
    # compared with the untouched original.
    rows, timed = [], {"float": (float_clone(task.model, task.loss), [])}
    reference_weights = [w.copy() for w in task.model.get_weights()]
    timed_joint = f"tfjoint_qs{float(FLAGS.quant_starts[0]):.2f}"  # its step, past the schedule, in its QAT phase
    for name, run in _systems(task_name, task, epochs, sparsity):
        path = os.path.join(out, f"{task_name}_seed{seed}_{name}.tflite")
        timings, report = run(path)
        rows.append(measure_system(name, timings, report, path, task))
        if name.startswith("tfmot") or name == timed_joint:
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
        for reference in ("tfmot_prune_ptq:prune", "tfmot_prune_qat:qat"):
            if "joint_step_ratio_rounds" in row and reference in per_round:
                # Paired within each round: tfjoint's step over TF-MOT's prune-only or QAT-only step.
                kind = reference.partition(":")[2]
                row[f"joint_over_tfmot_{kind}_rounds"] = [
                    joint / other for joint, other in zip(row["joint_step_ratio_rounds"], per_round[reference])]
        row.update(model=task_name, seed=seed, float_step_s=float_seconds, dense_layers=list(task.dense),
                   reference_unchanged=unchanged)
    return rows


# --- Summary ---------------------------------------------------------------------


MEANED = ("float_accuracy", "keras_accuracy", "selection_accuracy", "int8_accuracy", "qat_file_accuracy",
          "ptq_file_accuracy", "top1_agreement", "weight_sparsity", "pruned_sparsity", "gzip_size_bytes",
          "size_bytes", "float_gzip_size_bytes", "fit_seconds", "export_seconds", "prune_step_ratio",
          "qat_step_ratio", "joint_step_ratio", "latency_ratio", "gzip_over_bound")


def summarize(rows):
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["system"]), []).append(row)
    summary = []
    for (model, system), group in groups.items():
        entry = {"model": model, "system": system, "seeds": len(group)}
        for key in MEANED:
            entry[key], entry[key + "_sd"] = mean_spread([r.get(key) for r in group])
        entry["shipped"] = {q: sum(r["shipped"] == q for r in group) for q in sorted({r["shipped"] for r in group})}
        for kind in ("prune", "qat"):
            paired = [ratio for r in group for ratio in r.get(f"joint_over_tfmot_{kind}_rounds", [])]
            if paired:
                entry[f"joint_over_tfmot_{kind}"] = median_and_quartiles(paired)
        entry["fully_int8"] = all(r["fully_int8"] for r in group)
        entry["notes"] = sorted({n for r in group for n in r["notes"]})
        summary.append(entry)
    _against_tfmot_best(summary, rows)
    return summary


def _against_tfmot_best(summary, rows):
    """TF-MOT's best path per model (better mean accuracy on the selection split) and tfjoint against it."""
    for model in sorted({e["model"] for e in summary}):
        tfmot = [e for e in summary if e["model"] == model and e["system"].startswith("tfmot")]
        best = max(tfmot, key=lambda e: e["selection_accuracy"] if e["selection_accuracy"] is not None else -1)
        best_fit = {r["seed"]: r["fit_seconds"] for r in rows if r["model"] == model and r["system"] == best["system"]}
        for entry in summary:
            if entry["model"] != model:
                continue
            entry["tfmot_best"] = best["system"]
            if entry["int8_accuracy"] is not None and best["int8_accuracy"] is not None:
                entry["accuracy_over_best"] = entry["int8_accuracy"] - best["int8_accuracy"]
            ratios = [r["fit_seconds"] / best_fit[r["seed"]] for r in rows
                      if r["model"] == model and r["system"] == entry["system"]]
            entry["wall_over_best"] = float(np.median(ratios))  # paired by seed


def markdown_table(summary) -> str:
    def pct(entry, key):
        if entry.get(key) is None:
            return "n/a"
        return f"{100 * entry[key]:.2f} ± {100 * entry[key + '_sd']:.2f}"

    def num(entry, key, fmt="{:.2f}"):
        return "n/a" if entry.get(key) is None else fmt.format(entry[key])

    columns = ["model", "system", "float acc %", "int8 acc % (test split, LiteRT)", "Δ vs TF-MOT best (pt)",
               "shipped", "QAT file / PTQ file acc % (selection)", "sparsity in .tflite %: pruned (all weights)",
               "int8 gzip KB", "fine-tune s", "÷ TF-MOT best fine-tune", "export s", "fully int8"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for e in summary:
        best = " (best)" if e["system"] == e.get("tfmot_best") else ""
        shipped = ", ".join(f"{q} {n}/{e['seeds']}" for q, n in e["shipped"].items())
        files = f"{num(e, 'qat_file_accuracy', '{:.2%}')} / {num(e, 'ptq_file_accuracy', '{:.2%}')}"
        sparsity = f"{pct(e, 'pruned_sparsity')} ({num(e, 'weight_sparsity', '{:.2%}')})"
        delta = "" if best else ("n/a" if e.get("accuracy_over_best") is None
                                 else f"{100 * e['accuracy_over_best']:+.2f}")
        cells = [e["model"], e["system"] + best, pct(e, "float_accuracy"), pct(e, "int8_accuracy"), delta,
                 shipped, files.replace("%", ""), sparsity, f"{e['gzip_size_bytes'] / 1024:.1f}",
                 num(e, "fit_seconds", "{:.1f}"), "" if best else num(e, "wall_over_best"),
                 num(e, "export_seconds", "{:.1f}"), "yes" if e["fully_int8"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_table(summary) -> str:
    lines = ["| model | TF-MOT prune ÷ float | TF-MOT QAT ÷ float | tfjoint (QAT phase) ÷ float | "
             "tfjoint ÷ TF-MOT prune (IQR) | tfjoint ÷ TF-MOT QAT (IQR) |", "|---|---|---|---|---|---|"]
    for model in sorted({e["model"] for e in summary}):
        entries = [e for e in summary if e["model"] == model]

        def find(key):
            return next((e[key] for e in entries if e.get(key) is not None), None)

        def paired(key):
            value = find(key)
            return "n/a" if value is None else f"{value[0]:.2f} ({value[1]:.2f}–{value[2]:.2f})"

        cells = [f"{find(k):.2f}" if find(k) is not None else "n/a"
                 for k in ("prune_step_ratio", "qat_step_ratio", "joint_step_ratio")]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {paired('joint_over_tfmot_prune')} | "
                     f"{paired('joint_over_tfmot_qat')} |")
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
    table = markdown_table(summary) + "\n\nSteady-state step time, median over paired rounds:\n\n" + step_table(summary)
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
