"""Benchmark: the joint training step with and without XLA (`compile(jit_compile=True)`), paired rounds.

    python benchmarks/xla.py --out=benchmarks/results      # full run (about 5 min on 2 cores)
    python benchmarks/xla.py --tiny --out=/tmp/bench       # smoke run

For each model, four copies from the same pre-trained float weights: the float
model and the prepared model, each compiled with and without XLA. Each
prepared copy first runs a short fit that takes it past the end of its
pruning schedule (the mask-update ramp is not what is timed), then all four
train on the same batches in interleaved, shuffled rounds; each round's
median step is divided by the same round's plain float step, and the
XLA/plain ratio of the joint step is paired within each round. Accuracy is
not measured here: tests/test_xla.py checks that XLA trains and predicts the
same model.
"""

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tf_keras as keras  # noqa: E402
from common import TASKS, check_task_names, float_clone, median_and_quartiles, steady_step_ratios, write_text  # noqa: E402

import tfjoint  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for xla.json and xla.md.")
flags.DEFINE_list("models", ["digits", "mobilenet"], "Which models to run.")
flags.DEFINE_integer("rounds", 9, "Interleaved timing rounds.", lower_bound=1)
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes.")


def timed_models(task):
    data, batch = task.data, task.batch
    models = {}
    for xla in (False, True):
        suffix = ":xla" if xla else ""
        plain = float_clone(task.model, task.loss)
        plain.compile(keras.optimizers.Adam(1e-3), task.loss, jit_compile=xla)
        models["float" + suffix] = (plain, [])
        joint = tfjoint.prepare(float_clone(task.model, task.loss), tfjoint.JointSchedule(0.8, end_step=4, frequency=2))
        joint.compile(keras.optimizers.Adam(1e-3), task.loss, jit_compile=xla)
        joint.fit(data["x_train"][: 8 * batch], data["y_train"][: 8 * batch], batch_size=batch, verbose=0)
        models["joint" + suffix] = (joint, [])
    return models


def main(argv):
    del argv
    check_task_names(FLAGS.models)
    os.makedirs(FLAGS.out, exist_ok=True)
    started, results = time.perf_counter(), {}
    rounds = 2 if FLAGS.tiny else FLAGS.rounds
    for name in FLAGS.models:
        print(f"[{time.perf_counter() - started:6.0f}s] {name}", flush=True)
        task = TASKS[name](0, FLAGS.tiny)
        per_round, float_seconds = steady_step_ratios(timed_models(task), task.data, task.batch, rounds=rounds,
                                                      steps=4 if FLAGS.tiny else 20)
        paired = [x / p for x, p in zip(per_round["joint:xla"], per_round["joint"])]
        results[name] = {"float_step_s": float_seconds, "rounds": per_round,
                         "joint_xla_over_joint": median_and_quartiles(paired),
                         "float_xla_over_float": median_and_quartiles(per_round["float:xla"]),
                         "joint_over_float": median_and_quartiles(per_round["joint"])}
    lines = ["| model | float step ms | joint ÷ float | joint XLA ÷ joint (IQR) | float XLA ÷ float (IQR) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        joint, low, high = r["joint_xla_over_joint"]
        floats, flow, fhigh = r["float_xla_over_float"]
        lines.append(f"| {name} | {1000 * r['float_step_s']:.1f} | {r['joint_over_float'][0]:.2f} | "
                     f"{joint:.2f} ({low:.2f}–{high:.2f}) | {floats:.2f} ({flow:.2f}–{fhigh:.2f}) |")
    table = "\n".join(lines)
    command = "python benchmarks/xla.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - started
    write_text(os.path.join(FLAGS.out, "xla.json"),
               json.dumps({"command": command, "seconds": seconds, "results": results}, indent=2) + "\n")
    write_text(os.path.join(FLAGS.out, "xla.md"), f"`{command}` ({seconds:.0f} s)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
