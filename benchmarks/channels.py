"""Benchmark: channel pruning against unstructured pruning, both jointly with QAT, measured side by side.

    python benchmarks/channels.py --out=benchmarks/results        # full run (about 15 min on 2 cores)
    python benchmarks/channels.py --tiny --out=/tmp/bench         # smoke run

For each model and seed, from the same pre-trained float model and with the
same fine-tuning epochs, three tfjoint runs:

* unstructured: target_sparsity=0.8 (today's default recipe);
* channels50: channel_sparsity=0.5, no weight sparsity;
* channels50_weights50: channel_sparsity=0.5 and target_sparsity=0.5 within
  the kept channels.

Reported from the exported int8 files: weight parameters (elements of the
weight tensors, zeros included: what the int8 kernels compute with), non-zero
weights, gzip size, LiteRT int8 accuracy, and 1-thread latency relative to
the unstructured file, paired within interleaved rounds (see
`common.paired_latency_ratios`). MobileNetV2 trains on random data (timing and
size only), so its accuracy is not reported.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    TASKS,
    check_task_names,
    fine_tune_and_export,
    float_clone,
    gzip_size,
    mean_spread,
    median_and_quartiles,
    paired_latency_ratios,
    write_text,
)

import tfjoint  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for channels.json and channels.md.")
flags.DEFINE_list("models", ["digits", "residual", "mobilenet"], "Which models to run.")
flags.DEFINE_integer("seeds", 3, "Seeds for models whose accuracy is measured.", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Fine-tuning epochs (MobileNetV2: at most 4).", lower_bound=1)
flags.DEFINE_integer("rounds", 9, "Interleaved latency rounds per seed.", lower_bound=1)
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes.")

CONFIGS = {
    "unstructured": dict(target_sparsity=0.8, channel_sparsity=0.0),
    "channels50": dict(target_sparsity=0.0, channel_sparsity=0.5),
    "channels50_weights50": dict(target_sparsity=0.5, channel_sparsity=0.5),
}


def run_config(task, config, epochs, path):
    steps = epochs * int(np.ceil(len(task.data["x_train"]) / task.batch))
    schedule = tfjoint.inspect.plan_schedule(steps, config["target_sparsity"],
                                             channel_sparsity=config["channel_sparsity"])
    joint = tfjoint.prepare(float_clone(task.model, task.loss), schedule)
    report, fit_seconds = fine_tune_and_export(task, joint, joint, epochs, path)
    with open(path, "rb") as handle:
        content = handle.read()
    weights = report.flatbuffer.weights
    return content, {
        "float_accuracy": report.float_accuracy,
        "int8_accuracy": report.int8_accuracy,
        "weight_params": int(sum(w.size for w in weights)),
        "nonzero_weights": int(sum(w.size - w.zeros for w in weights)),
        "gzip_bytes": gzip_size(content),
        "size_bytes": len(content),
        "activation_bytes": report.memory["activation_bytes"],
        "fully_int8": report.fully_int8,
        "channels": report.per_layer_channels,
        "fit_seconds": fit_seconds,
    }


def run_model(name, seed, epochs, rounds, tiny, out):
    task = TASKS[name](seed, tiny)
    contents, rows = {}, {}
    for config_name, config in CONFIGS.items():
        path = os.path.join(out, f"channels_{name}_{seed}_{config_name}.tflite")
        contents[config_name], rows[config_name] = run_config(task, config, epochs, path)
        os.remove(path)
    ratios = paired_latency_ratios(contents, "unstructured", rounds)
    reference = rows["unstructured"]
    for config_name, row in rows.items():
        row.update(model=name, seed=seed, config=config_name, latency_ratio_rounds=ratios[config_name],
                   params_ratio=row["weight_params"] / reference["weight_params"],
                   gzip_ratio=row["gzip_bytes"] / reference["gzip_bytes"])
    return list(rows.values())


def summarize(rows):
    summary = []
    for name in dict.fromkeys(r["model"] for r in rows):
        for config in CONFIGS:
            group = [r for r in rows if r["model"] == name and r["config"] == config]
            latency = [x for r in group for x in r["latency_ratio_rounds"]]
            median, low, high = median_and_quartiles(latency)
            entry = {"model": name, "config": config, "seeds": len(group), "latency_ratio": median,
                     "latency_ratio_iqr": [low, high], "fully_int8": all(r["fully_int8"] for r in group)}
            for key in ("float_accuracy", "int8_accuracy", "weight_params", "nonzero_weights", "gzip_bytes",
                        "params_ratio", "gzip_ratio", "activation_bytes", "fit_seconds"):
                entry[key], entry[key + "_sd"] = mean_spread([r[key] for r in group])
            summary.append(entry)
    return summary


def markdown_table(summary, measured_accuracy) -> str:
    columns = ["model", "config", "float acc %", "int8 acc % (LiteRT)", "int8 weight params (÷ unstructured)",
               "non-zero weights", "int8 gzip KB", "activation arena KB", "int8 latency ÷ unstructured (IQR)",
               "fully int8"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for e in summary:
        def pct(key):
            if e["model"] not in measured_accuracy or e.get(key) is None:
                return "n/a (random data)"
            return f"{100 * e[key]:.2f} ± {100 * e[key + '_sd']:.2f}"

        low, high = e["latency_ratio_iqr"]
        lines.append("| " + " | ".join([
            e["model"], e["config"], pct("float_accuracy"), pct("int8_accuracy"),
            f"{e['weight_params']:,.0f} ({e['params_ratio']:.2f}×)", f"{e['nonzero_weights']:,.0f}",
            f"{e['gzip_bytes'] / 1024:.1f}", f"{e['activation_bytes'] / 1024:.1f}",
            f"{e['latency_ratio']:.2f} ({low:.2f}–{high:.2f})", "yes" if e["fully_int8"] else "NO"]) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    check_task_names(FLAGS.models)
    os.makedirs(FLAGS.out, exist_ok=True)
    started, rows = time.perf_counter(), []
    seeds, epochs, rounds = (1, 2, 2) if FLAGS.tiny else (FLAGS.seeds, FLAGS.epochs, FLAGS.rounds)
    for name in FLAGS.models:
        for seed in range(1 if name == "mobilenet" else seeds):
            print(f"[{time.perf_counter() - started:6.0f}s] {name} seed {seed}", flush=True)
            rows.extend(run_model(name, seed, min(epochs, 4) if name == "mobilenet" else epochs, rounds, FLAGS.tiny,
                                  FLAGS.out))
    summary = summarize(rows)
    table = markdown_table(summary, measured_accuracy={"digits", "residual"})
    command = "python benchmarks/channels.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - started
    write_text(os.path.join(FLAGS.out, "channels.json"), json.dumps(
        {"command": command, "seconds": seconds, "configs": CONFIGS, "summary": summary, "runs": rows},
        indent=2) + "\n")
    write_text(os.path.join(FLAGS.out, "channels.md"), f"`{command}` ({seconds:.0f} s)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
