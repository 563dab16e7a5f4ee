"""Benchmark: where the joint training step's time goes, against TF-MOT's prune-only and QAT-only steps.

    python benchmarks/joint_step.py --out=benchmarks/results      # full run (about 10 min on 2 cores)
    python benchmarks/joint_step.py --tiny --out=/tmp/bench       # smoke run

For each model, copies of the same pre-trained float model are trained, each
in one configuration, on the same batches in interleaved, shuffled rounds
(`common.steady_step_ratios`): each round's median step is divided by the
same round's float step. Two phases are timed:

* steady: after the pruning schedule ended (no mask updates), as most of a
  long fine-tune runs;
* ramp: during the schedule, with a mask update every `--frequency` steps
  (TF-MOT's default 100 is too rare to show in 20 steps: 4 shows the cost).

Configurations (the differences between them attribute tfjoint's step):

* tfmot_prune: `prune_low_magnitude` + `UpdatePruningStep`;
* tfmot_qat: `quantize_model` (not for Conv1D models, which it refuses);
* tfjoint_float_phase: `tfjoint.prepare` before `quant_start_step`: pruning
  only, the fake quantizers skipped (the Conv1D -> Conv2D rewrite included);
* tfjoint_qat_only: `tfjoint.prepare` with no layer pruned;
* tfjoint_joint: `tfjoint.prepare` pruning and fake-quantizing every step.

joint ÷ TF-MOT QAT and joint ÷ TF-MOT prune are paired within each round.
"""

import json
import os
import sys
import time

import numpy as np
import tensorflow_model_optimization as tfmot
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tf_keras as keras  # noqa: E402
from common import (  # noqa: E402
    TASKS,
    check_task_names,
    float_clone,
    median_and_quartiles,
    pruned_layer_names,
    steady_step_ratios,
    write_text,
)

import tfjoint  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for joint_step.json and joint_step.md.")
flags.DEFINE_list("models", ["conv1d_bn", "digits", "mobilenet"], "Which models to run.")
flags.DEFINE_integer("rounds", 9, "Interleaved timing rounds per phase.", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Timed steps per model per round.", lower_bound=4)
flags.DEFINE_integer("frequency", 4, "Mask-update frequency in the ramp phase.", lower_bound=1)
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes.")

FAR = 10**9  # a step no run reaches


def _compiled(model, task):
    model.compile(keras.optimizers.Adam(1e-3), task.loss)
    return model


def _tfmot_prune(task, end_step, frequency):
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=end_step, frequency=frequency)
    names = set(pruned_layer_names(task))
    model = keras.models.clone_model(float_clone(task.model, task.loss), clone_function=lambda layer: (
        tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule) if layer.name in names else layer))
    return _compiled(model, task), [tfmot.sparsity.keras.UpdatePruningStep()]


def _tfjoint(task, end_step, frequency, quant_start_step=0, prune=True):
    exclude = None if prune else list(tfjoint.inspect.prunable_layers(task.model))
    model = tfjoint.prepare(float_clone(task.model, task.loss),
                            tfjoint.JointSchedule(0.8, end_step=end_step, frequency=frequency,
                                                  quant_start_step=quant_start_step),
                            layers=tfjoint.LayerSelection(prune_only=pruned_layer_names(task) if prune else None,
                                                          exclude=exclude))
    return _compiled(model, task), []


def configurations(task, end_step, frequency) -> dict:
    models = {"float": (float_clone(task.model, task.loss), []),
              "tfmot_prune": _tfmot_prune(task, end_step, frequency),
              "tfjoint_float_phase": _tfjoint(task, end_step, frequency, quant_start_step=FAR),
              "tfjoint_qat_only": _tfjoint(task, end_step, frequency, prune=False),
              "tfjoint_joint": _tfjoint(task, end_step, frequency)}
    if task.tfmot_qat:
        models["tfmot_qat"] = (_compiled(tfmot.quantization.keras.quantize_model(
            float_clone(task.model, task.loss)), task), [])
    return models


def _past_the_schedule(models, task, steps):
    """Trains every model `steps` steps, so the timed steps come after its schedule."""
    x, y = task.data["x_train"][: task.batch * steps], task.data["y_train"][: task.batch * steps]
    for model, callbacks in models.values():
        model.fit(x, y, batch_size=task.batch, epochs=1, verbose=0, callbacks=list(callbacks))


def profile(task, rounds: int, steps: int, frequency: int) -> dict:
    result = {}
    # steady: the schedule ends within the warm-up fit
    steady = configurations(task, end_step=2, frequency=1)
    _past_the_schedule(steady, task, 4)
    per_round, float_s = steady_step_ratios(steady, task.data, task.batch, rounds=rounds, steps=steps)
    result["steady"] = {"float_step_s": float_s, "rounds": per_round}
    # ramp: every timed step lies within the schedule
    ramp = configurations(task, end_step=FAR // frequency * frequency, frequency=frequency)
    per_round, float_s = steady_step_ratios(ramp, task.data, task.batch, rounds=rounds, steps=steps)
    result["ramp"] = {"float_step_s": float_s, "rounds": per_round}
    for phase in ("steady", "ramp"):
        rounds_of = result[phase]["rounds"]
        summary = {name: median_and_quartiles(ratios) for name, ratios in rounds_of.items()}
        for reference in ("tfmot_qat", "tfmot_prune"):
            if reference in rounds_of:
                summary[f"joint_over_{reference}"] = median_and_quartiles(
                    [j / r for j, r in zip(rounds_of["tfjoint_joint"], rounds_of[reference])])
        result[phase]["summary"] = summary
    return result


COLUMNS = ("tfmot_prune", "tfmot_qat", "tfjoint_float_phase", "tfjoint_qat_only", "tfjoint_joint",
           "joint_over_tfmot_prune", "joint_over_tfmot_qat")


def markdown(results) -> str:
    lines = ["| model | phase | float step ms | " + " | ".join(COLUMNS) + " |", "|---|---|---|" + "---|" * len(COLUMNS)]
    for name, phases in results.items():
        for phase, entry in phases.items():
            cells = []
            for column in COLUMNS:
                if column not in entry["summary"]:
                    cells.append("n/a")
                    continue
                median, low, high = entry["summary"][column]
                cells.append(f"{median:.2f} ({low:.2f}–{high:.2f})")
            lines.append(f"| {name} | {phase} | {1000 * entry['float_step_s']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    check_task_names(FLAGS.models)
    os.makedirs(FLAGS.out, exist_ok=True)
    started, results = time.perf_counter(), {}
    rounds, steps = (2, 4) if FLAGS.tiny else (FLAGS.rounds, FLAGS.steps)
    for name in FLAGS.models:
        print(f"[{time.perf_counter() - started:6.0f}s] {name}", flush=True)
        task = TASKS[name](0, FLAGS.tiny)
        results[name] = profile(task, rounds if name != "mobilenet" else max(2, rounds // 2), steps, FLAGS.frequency)
    table = markdown(results)
    command = "python benchmarks/joint_step.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - started
    write_text(os.path.join(FLAGS.out, "joint_step.json"),
               json.dumps({"command": command, "seconds": seconds, "results": results}, indent=2,
                          default=lambda v: v.tolist() if isinstance(v, np.ndarray) else float(v)) + "\n")
    write_text(os.path.join(FLAGS.out, "joint_step.md"),
               f"`{command}` ({seconds:.0f} s)\n\nStep time ÷ the float model's step in the same round: median "
               f"(interquartile range) over rounds.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
