"""Benchmark: what `prepare`'s conversion check costs, and where `export_tflite`'s time goes, on MobileNetV2-0.35.

    python benchmarks/prepare_export_time.py --out=benchmarks/results     # full run (about 5 min on 2 cores)
    python benchmarks/prepare_export_time.py --tiny --out=/tmp/bench      # smoke run

MobileNetV2 (alpha 0.35, 96x96, 10 classes, weights=None, Keras 3), in one
process: `tfjoint.prepare` with and without `check_conversion`, alternated
over `--rounds` rounds (the first call of each also pays for TensorFlow's
one-time tracing, so rounds after the first are the steady figure); then a
short fit and `export_tflite` with only `representative_data` (the case the
issue timed at 26-30 s in the first release and 59 s before this round), its
stages from `report.stage_seconds`.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tf_keras  # noqa: E402
from common import write_text  # noqa: E402

import tfjoint  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for prepare_export_time.json and .md.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds of prepare with and without the conversion check.",
                     lower_bound=1)
flags.DEFINE_boolean("tiny", False, "Smoke-test sizes.")


def main(argv):
    del argv
    import keras  # Keras 3, as a user's model comes in

    side, rounds = (32, 1) if FLAGS.tiny else (96, FLAGS.rounds)
    model = keras.applications.MobileNetV2(input_shape=(side, side, 3), alpha=0.35, weights=None, classes=10)
    rng = np.random.default_rng(0)
    x = rng.random((64, side, side, 3), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    timings = {True: [], False: []}
    for _ in range(rounds):
        for check in (True, False):
            started = time.perf_counter()
            joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2), sample_inputs=x[:4],
                                    check=check)
            timings[check].append(time.perf_counter() - started)
    joint.compile(tf_keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=16, epochs=1, verbose=0)
    started = time.perf_counter()
    report = tfjoint.export_tflite(tfjoint.strip(joint), os.path.join(FLAGS.out, "mobilenet_v2.tflite"),
                                   representative_data=x[:32])
    export_seconds = time.perf_counter() - started
    os.remove(report.tflite_path)
    later = slice(1, None) if rounds > 1 else slice(None)
    with_check, without = float(np.median(timings[True][later])), float(np.median(timings[False][later]))
    result = {"side": side, "prepare_seconds": {"with_check": timings[True], "without_check": timings[False]},
              "conversion_check_seconds": with_check - without, "export_seconds": export_seconds,
              "export_stage_seconds": report.stage_seconds, "fully_int8": report.fully_int8}
    command = "python benchmarks/prepare_export_time.py " + " ".join(sys.argv[1:])
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in report.stage_seconds.items())
    table = (f"| MobileNetV2-0.35 {side}×{side} | prepare s: with the check / without (median of rounds after the "
             f"first) | export s (representative_data only) | export stages s |\n|---|---|---|---|\n"
             f"| fully int8: {'yes' if report.fully_int8 else 'NO'} | {with_check:.1f} / {without:.1f} "
             f"(check {with_check - without:.1f}) | {export_seconds:.1f} | {stages} |")
    write_text(os.path.join(FLAGS.out, "prepare_export_time.json"),
               json.dumps({"command": command, **result}, indent=2) + "\n")
    write_text(os.path.join(FLAGS.out, "prepare_export_time.md"), f"`{command}`\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
