"""Benchmark: the first epoch of a joint fit, whose time is mostly tracing, against TF-MOT's QAT model's.

    python benchmarks/first_epoch.py --out=benchmarks/results      # full run (about 10 min on 2 cores)
    python benchmarks/first_epoch.py --tiny --out=/tmp/bench       # smoke run

`tf.function` traces a function a second time when its first trace created
variables, and tf_keras's train step creates the optimizer's slots and the
compiled metrics there. tfjoint's `fit` builds both first
(`tfjoint.train.first_trace`). Configurations, each in a fresh process (so no
trace or autograph cache is shared), in shuffled order within each round:

* tfjoint: `tfjoint.prepare` + `fit`, as shipped;
* tfjoint_two_traces: the same with the build before tracing switched off
  (what tfjoint 0.4.0 did);
* tfmot_qat: TF-MOT's `quantize_model` + `fit`: QAT alone, tf_keras's fit.

Each process fits one epoch (timed: the first), then one more (a later
epoch: the steps without tracing), with `metrics=["accuracy"]`. Ratios are
paired within each round.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TASKS, check_task_names, float_clone, median_and_quartiles, write_text  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for first_epoch.json and first_epoch.md.")
flags.DEFINE_list("models", ["digits", "mobilenet"], "Which models to run.")
flags.DEFINE_integer("rounds", 3, "Rounds; each runs every configuration once, in a fresh process.", lower_bound=1)
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes.")
flags.DEFINE_string("measure", None, "Internal: model:config:round, run in this process; prints one JSON line.")

CONFIGS = ("tfjoint", "tfjoint_two_traces", "tfmot_qat")


def _measure(model_name: str, config: str, tiny: bool) -> dict:
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    import tfjoint
    import tfjoint.train.phases

    task = TASKS[model_name](0, tiny)
    data = task.data
    steps = -(-len(data["x_train"]) // task.batch)
    if config == "tfmot_qat":
        trained = tfmot.quantization.keras.quantize_model(float_clone(task.model, task.loss))
    else:
        if config == "tfjoint_two_traces":
            tfjoint.train.phases.build_before_tracing = lambda *args, **kwargs: None
        trained = tfjoint.prepare(float_clone(task.model, task.loss),
                                  tfjoint.JointSchedule(0.8, end_step=steps, frequency=max(steps // 4, 1)),
                                  check=False)
    trained.compile(keras.optimizers.Adam(1e-3), task.loss, metrics=["accuracy"])
    traces = []
    step = trained.train_step
    trained.train_step = lambda batch: traces.append(1) or step(batch)
    seconds = []
    for epoch in range(2):
        started = time.perf_counter()
        trained.fit(data["x_train"], data["y_train"], batch_size=task.batch, epochs=epoch + 1, initial_epoch=epoch,
                    verbose=0)
        seconds.append(time.perf_counter() - started)
    return {"first_epoch_s": seconds[0], "later_epoch_s": seconds[1], "traces": len(traces), "steps": steps}


def _in_process(model_name: str, config: str, tiny: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), f"--measure={model_name}:{config}:0"]
    result = subprocess.run(command + (["--tiny"] if tiny else []), capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{model_name} {config} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def _cell(values) -> str:
    median, low, high = median_and_quartiles(values)
    return f"{median:.2f} ({low:.2f}–{high:.2f})"


def main(argv):
    del argv
    if FLAGS.measure:
        model_name, config, _ = FLAGS.measure.split(":")
        print(json.dumps(_measure(model_name, config, FLAGS.tiny)))
        return
    check_task_names(FLAGS.models)
    os.makedirs(FLAGS.out, exist_ok=True)
    started = time.time()
    results = {}
    order = np.random.default_rng(0)
    for model_name in FLAGS.models:
        runs: dict[str, list[dict]] = {config: [] for config in CONFIGS}
        for _ in range(FLAGS.rounds):
            for index in order.permutation(len(CONFIGS)):
                config = CONFIGS[index]
                runs[config].append(_in_process(model_name, config, FLAGS.tiny))
        results[model_name] = runs
    seconds = time.time() - started
    with open(os.path.join(FLAGS.out, "first_epoch.json") + ".tmp", "w") as handle:
        json.dump({"results": results, "seconds": seconds, "argv": sys.argv[1:]}, handle, indent=1)
    os.replace(os.path.join(FLAGS.out, "first_epoch.json") + ".tmp", os.path.join(FLAGS.out, "first_epoch.json"))
    lines = [f"`python benchmarks/first_epoch.py {' '.join(sys.argv[1:])}` ({seconds:.0f} s)", "",
             "Seconds: median (interquartile range) over rounds; each run in a fresh process. Ratios paired by round.",
             "", "| model | configuration | steps | traces of the train step | first epoch s | later epoch s "
             "| first ÷ tfjoint_two_traces | first ÷ tfmot_qat |", "|---|---|---|---|---|---|---|---|"]
    for model_name, runs in results.items():
        for config in CONFIGS:
            first = [r["first_epoch_s"] for r in runs[config]]
            ratios = [[a["first_epoch_s"] / b["first_epoch_s"] for a, b in zip(runs[config], runs[reference])]
                      for reference in ("tfjoint_two_traces", "tfmot_qat")]
            lines.append(f"| {model_name} | {config} | {runs[config][0]['steps']} | "
                         f"{statistics.median(r['traces'] for r in runs[config]):.0f} | {_cell(first)} | "
                         f"{_cell([r['later_epoch_s'] for r in runs[config]])} | {_cell(ratios[0])} | "
                         f"{_cell(ratios[1])} |")
    write_text(os.path.join(FLAGS.out, "first_epoch.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
