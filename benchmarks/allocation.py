"""Benchmark: per-layer sparsity allocation and distillation, against uniform sparsity, at equal size.

    python benchmarks/allocation.py --out=benchmarks/results      # full run (about 25 min on 2 cores)
    python benchmarks/allocation.py --tiny --out=/tmp/bench       # smoke run

For each model, seed and overall sparsity, from the same pre-trained float
model and with the same fine-tuning epochs: every allocation method
(uniform, global/LAMP, ERK, sensitivity), each with and without distillation
from the float model. Every plan has the same size-weighted mean sparsity over
the pruned kernels, so the int8 files hold the same number of non-zero
weights; what differs is where. Reported: LiteRT int8 accuracy (mean and
spread over seeds), the plans, the allocation (scan) time and the fit time.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TASKS, check_task_names, fine_tune_and_export, float_clone, mean_spread, write_text  # noqa: E402

import tfjoint  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for allocation.json and allocation.md.")
flags.DEFINE_list("models", ["digits", "conv1d"], "Which models to run.")
flags.DEFINE_list("sparsities", ["0.8", "0.9", "0.95"], "Overall sparsities.")
flags.DEFINE_list("methods", ["uniform", "global", "erk", "sensitivity"], "Allocation methods.")
flags.DEFINE_integer("seeds", 3, "Seeds.", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Fine-tuning epochs.", lower_bound=1)
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes.")


def run_one(task, plan, distill: bool, epochs: int, path: str) -> dict:
    steps = epochs * int(np.ceil(len(task.data["x_train"]) / task.batch))
    student = tfjoint.prepare(float_clone(task.model, task.loss), tfjoint.inspect.plan_schedule(steps, plan))
    trained = tfjoint.Distiller(student, task.model) if distill else student
    report, fit_seconds = fine_tune_and_export(task, student, trained, epochs, path)
    os.remove(path)
    return {"int8_accuracy": report.int8_accuracy, "float_accuracy": report.float_accuracy,
            "weight_sparsity_in_file": report.weight_sparsity, "fit_seconds": fit_seconds,
            "fully_int8": report.fully_int8}


def run_model(name, seed, sparsities, methods, epochs, tiny, out):
    task = TASKS[name](seed, tiny)
    rows = []
    for sparsity in sparsities:
        for method in methods:
            plan = tfjoint.allocate_sparsity(task.model, sparsity, method=method, verbose=False,
                                             validation_data=(task.data["x_val"], task.data["y_val"]))
            for distill in (False, True):
                path = os.path.join(out, f"allocation_{name}_{seed}.tflite")
                row = run_one(task, plan if method != "uniform" else sparsity, distill, epochs, path)
                row.update(model=name, seed=seed, sparsity=sparsity, method=method, distill=distill,
                           plan=dict(plan), plan_mean=plan.mean_sparsity, allocation_seconds=plan.seconds)
                rows.append(row)
                print(f"  {name} s={sparsity} {method:<11} distill={distill!s:<5} int8 {row['int8_accuracy']:.4f}",
                      flush=True)
    return rows


def summarize(rows):
    summary = []
    keys = dict.fromkeys((r["model"], r["sparsity"], r["method"], r["distill"]) for r in rows)
    for model, sparsity, method, distill in keys:
        group = [r for r in rows if (r["model"], r["sparsity"], r["method"], r["distill"]) ==
                 (model, sparsity, method, distill)]
        uniform = {r["seed"]: r["int8_accuracy"] for r in rows
                   if (r["model"], r["sparsity"], r["method"], r["distill"]) == (model, sparsity, "uniform", False)}
        entry = {"model": model, "sparsity": sparsity, "method": method, "distill": distill, "seeds": len(group),
                 "fully_int8": all(r["fully_int8"] for r in group),
                 "plan": {k: float(np.mean([r["plan"][k] for r in group])) for k in group[0]["plan"]}}
        for key in ("int8_accuracy", "float_accuracy", "fit_seconds", "allocation_seconds", "plan_mean"):
            entry[key], entry[key + "_sd"] = mean_spread([r[key] for r in group])
        # Paired by seed: the same float model, the same data, only the allocation (and distillation) differ.
        entry["gain_over_uniform"], entry["gain_over_uniform_sd"] = mean_spread(
            [r["int8_accuracy"] - uniform[r["seed"]] for r in group if r["seed"] in uniform])
        summary.append(entry)
    return summary


def markdown_table(summary) -> str:
    columns = ["model", "sparsity", "allocation", "distill", "float acc %", "int8 acc % (LiteRT)",
               "gain over uniform (pt, paired)", "plan (per layer)", "allocation s", "fit s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for e in summary:
        plan = ", ".join(f"{k} {v:.2f}" for k, v in e["plan"].items())
        lines.append("| " + " | ".join([
            e["model"], f"{e['sparsity']:.2f}", e["method"], "yes" if e["distill"] else "no",
            f"{100 * e['float_accuracy']:.2f}", f"{100 * e['int8_accuracy']:.2f} ± {100 * e['int8_accuracy_sd']:.2f}",
            f"{100 * e['gain_over_uniform']:+.2f} ± {100 * e['gain_over_uniform_sd']:.2f}", plan,
            f"{e['allocation_seconds']:.2f}", f"{e['fit_seconds']:.1f}"]) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    check_task_names(FLAGS.models)
    os.makedirs(FLAGS.out, exist_ok=True)
    sparsities = [float(s) for s in FLAGS.sparsities]
    seeds, epochs = (1, 2) if FLAGS.tiny else (FLAGS.seeds, FLAGS.epochs)
    started, rows = time.perf_counter(), []
    for name in FLAGS.models:
        for seed in range(seeds):
            print(f"[{time.perf_counter() - started:6.0f}s] {name} seed {seed}", flush=True)
            rows.extend(run_model(name, seed, sparsities, FLAGS.methods, epochs, FLAGS.tiny, FLAGS.out))
    summary = summarize(rows)
    table = markdown_table(summary)
    command = "python benchmarks/allocation.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - started
    write_text(os.path.join(FLAGS.out, "allocation.json"),
               json.dumps({"command": command, "seconds": seconds, "summary": summary, "runs": rows}, indent=2) + "\n")
    write_text(os.path.join(FLAGS.out, "allocation.md"), f"`{command}` ({seconds:.0f} s)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
