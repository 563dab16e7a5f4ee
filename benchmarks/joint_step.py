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

With `--quantizer_ablation`, the steady phase also times TF-MOT's QAT model with
parts of its fake quantization taken out (traced with TF-MOT's `quant_ops`
functions replaced, so the model is otherwise the same): what each part of
QAT's step costs.

* tfmot_qat_fixed_ranges: the activations' moving-average range updates out;
* tfmot_qat_weights_only: the activations' fake quantization out;
* tfmot_qat_activations_only: the weights' fake quantization out.

joint ÷ TF-MOT QAT and joint ÷ TF-MOT prune are paired within each round.
"""

import json
import os
import sys
import time

import numpy as np
import tensorflow_model_optimization as tfmot
from absl import app, flags
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

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
flags.DEFINE_boolean("quantizer_ablation", False, "Also time TF-MOT's QAT step with parts of its fake "
                     "quantization taken out (steady phase, models TF-MOT's QAT takes).")

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


def _fixed_range_quantize(inputs, min_var, max_var, per_channel=False, ema_decay=0.999, name_prefix="",
                          is_training=True, num_bits=8, narrow_range=False, symmetric=False):
    """TF-MOT's MovingAvgQuantize without its range update: the fake quantization alone."""
    del ema_decay, name_prefix, is_training, symmetric
    return quant_ops._FakeQuantWithMinMaxVars(inputs, min_var, max_var, per_channel, num_bits, narrow_range)


def _unquantized(inputs, *args, **kwargs):
    del args, kwargs
    return inputs


ABLATIONS = {"tfmot_qat_fixed_ranges": {"MovingAvgQuantize": _fixed_range_quantize},
             "tfmot_qat_weights_only": {"MovingAvgQuantize": _unquantized},
             "tfmot_qat_activations_only": {"LastValueQuantize": _unquantized}}


def ablations(task) -> dict:
    """TF-MOT's QAT model, traced with parts of `quant_ops` replaced (the trace keeps them out afterwards)."""
    x, y = task.data["x_train"][: task.batch], task.data["y_train"][: task.batch]
    models = {}
    for name, replaced in ABLATIONS.items():
        kept = {attribute: getattr(quant_ops, attribute) for attribute in replaced}
        try:
            for attribute, function in replaced.items():
                setattr(quant_ops, attribute, function)
            model = _compiled(tfmot.quantization.keras.quantize_model(float_clone(task.model, task.loss)), task)
            model.fit(x, y, batch_size=task.batch, epochs=1, verbose=0)  # traced now, with the replacement
        finally:
            for attribute, function in kept.items():
                setattr(quant_ops, attribute, function)
        models[name] = (model, [])
    return models


def fake_quant_kernel_ms(shape=(32, 48, 48, 48), rounds: int = 7, calls: int = 20) -> dict:
    """Forward and backward of one activation's fake quantization, in ms beyond an unquantized pass.

    TF's fused operator (`fake_quant_with_min_max_vars`, what TF-MOT's
    quantizers call) against the same straight-through estimator written as
    TF elementwise operations: whether a quantizer in TF operations could be
    cheaper than the fused one.
    """
    import tensorflow as tf

    x = tf.random.normal(shape, seed=0)
    low, high = tf.Variable(-3.0), tf.Variable(3.0)

    @tf.custom_gradient
    def elementwise(values, minimum, maximum):
        def gradient(upstream):
            return tf.where((values >= minimum) & (values <= maximum), upstream, tf.zeros_like(upstream)), None, None
        return tf.quantization.fake_quant_with_min_max_vars(values, minimum, maximum), gradient

    functions = {"unquantized": lambda v: v,
                 "fused": lambda v: tf.quantization.fake_quant_with_min_max_vars(v, low, high),
                 "elementwise": lambda v: elementwise(v, tf.identity(low), tf.identity(high))}

    def step(function):
        @tf.function
        def run(values):
            with tf.GradientTape() as tape:
                tape.watch(values)
                loss = tf.reduce_sum(tf.square(function(values)))
            return tape.gradient(loss, values)
        return run

    steps = {name: step(function) for name, function in functions.items()}
    timings = {name: [] for name in steps}
    for run in steps.values():
        run(x).numpy()
    for _ in range(rounds):
        for name, run in steps.items():
            started = time.perf_counter()
            for _ in range(calls):
                run(x).numpy()
            timings[name].append(1000 * (time.perf_counter() - started) / calls)
    base = float(np.median(timings["unquantized"]))
    return {"shape": list(shape), "unquantized_ms": base,
            **{f"{name}_ms": float(np.median(timings[name])) - base for name in ("fused", "elementwise")}}


def _past_the_schedule(models, task, steps):
    """Trains every model `steps` steps, so the timed steps come after its schedule."""
    x, y = task.data["x_train"][: task.batch * steps], task.data["y_train"][: task.batch * steps]
    for model, callbacks in models.values():
        model.fit(x, y, batch_size=task.batch, epochs=1, verbose=0, callbacks=list(callbacks))


def profile(task, rounds: int, steps: int, frequency: int, ablate: bool = False) -> dict:
    result = {}
    # steady: the schedule ends within the warm-up fit
    steady = configurations(task, end_step=2, frequency=1)
    if ablate and task.tfmot_qat:
        steady.update(ablations(task))
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
    timed = {name for phases in results.values() for entry in phases.values() for name in entry["summary"]}
    columns = COLUMNS + tuple(name for name in ABLATIONS if name in timed)
    lines = ["| model | phase | float step ms | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for name, phases in results.items():
        for phase, entry in phases.items():
            cells = []
            for column in columns:
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
        results[name] = profile(task, rounds if name != "mobilenet" else max(2, rounds // 2), steps, FLAGS.frequency,
                                ablate=FLAGS.quantizer_ablation)
    table = markdown(results)
    kernel = None
    if FLAGS.quantizer_ablation:
        kernel = fake_quant_kernel_ms((4, 8, 8, 8) if FLAGS.tiny else (32, 48, 48, 48))
    if kernel:
        table += (f"\n\nOne activation's fake quantization, forward and backward, beyond an unquantized pass "
                  f"({kernel['unquantized_ms']:.2f} ms) on {kernel['shape']}: TF's fused operator "
                  f"{kernel['fused_ms']:.2f} ms, the same estimator in elementwise TF operations "
                  f"{kernel['elementwise_ms']:.2f} ms.")
    command = "python benchmarks/joint_step.py " + " ".join(sys.argv[1:])
    seconds = time.perf_counter() - started
    write_text(os.path.join(FLAGS.out, "joint_step.json"),
               json.dumps({"command": command, "seconds": seconds, "results": results,
                           "fake_quant_kernel": kernel}, indent=2,
                          default=lambda v: v.tolist() if isinstance(v, np.ndarray) else float(v)) + "\n")
    write_text(os.path.join(FLAGS.out, "joint_step.md"),
               f"`{command}` ({seconds:.0f} s)\n\nStep time ÷ the float model's step in the same round: median "
               f"(interquartile range) over rounds.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
