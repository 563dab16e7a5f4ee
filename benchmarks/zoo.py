"""The keras.applications zoo through tfjoint, as a new user would run it (random weights and data).

    python benchmarks/zoo.py --out=benchmarks/results [--models=MobileNetV3Small,DenseNet121] [--timeout=1800]

Each family is built with Keras 3's `keras.applications.<Name>(weights=None,
input_shape=(64, 64, 3), classes=10)` (or the family's smallest input) and
its defaults, then `prepare(target_sparsity=0.5)` -> 2 fit steps -> `strip`
-> `export_tflite(validation_data=...)` on random data, one model per
subprocess (a crash or a hang costs one row). Accuracy means nothing here;
the table shows the outcome, the seconds of every stage, the int8 size, and
any operator that is not int8 (there must be none). Not part of `make test`.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for zoo.json and zoo.md.")
flags.DEFINE_list("models", None, "Families to run (default: all).")
flags.DEFINE_integer("timeout", 1800, "Seconds per model before it counts as a hang.")

# Family -> input side (64, or the family's minimum).
ZOO = {
    "MobileNet": 64, "MobileNetV2": 64, "MobileNetV3Small": 64, "MobileNetV3Large": 64, "EfficientNetB0": 64,
    "EfficientNetV2B0": 64, "ResNet50": 64, "ResNet50V2": 64, "DenseNet121": 64, "NASNetMobile": 64,
    "Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75, "VGG16": 64, "ConvNeXtTiny": 64,
}

_ONE_MODEL = r"""
import json, sys, time
import numpy as np
name, side = sys.argv[1], int(sys.argv[2])
import tfjoint
import keras
import tf_keras
record = {"model": name, "side": side}
started = time.perf_counter()
rng = np.random.default_rng(0)
x = rng.random((48, side, side, 3), dtype=np.float32) * 255.0
y = rng.integers(0, 10, 48)
model = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3), classes=10)
record["params"] = int(model.count_params())
stage = "prepare"
try:
    t = time.perf_counter()
    joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=2, sample_inputs=x[:4])
    record["prepare_s"] = time.perf_counter() - t
    stage = "fit"
    t = time.perf_counter()
    joint.compile(tf_keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    joint.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0)
    record["fit_s"] = time.perf_counter() - t
    stage = "strip"
    t = time.perf_counter()
    stripped = tfjoint.strip(joint)
    record["strip_s"] = time.perf_counter() - t
    stage = "export"
    t = time.perf_counter()
    report = tfjoint.export_tflite(stripped, "/tmp/zoo_" + name + ".tflite", validation_data=(x[16:], y[16:]),
                                   representative_data=x[:16], min_agreement=0.0, min_sqnr_db=-1000.0,
                                   max_accuracy_drop=1.0)
    record["export_s"] = time.perf_counter() - t
    record.update(outcome="fully int8" if report.fully_int8 else "NOT int8", size_bytes=report.size_bytes,
                  float_ops=[op["op"] for op in report.float_ops], stage_seconds=report.stage_seconds,
                  quantization=report.quantization, ops=sorted(report.operator_counts),
                  tflm_arena_bytes=report.memory.get("tflm_arena_bytes"), macs=report.macs,
                  notes=report.notes)
except Exception as error:
    before_training = stage == "prepare"
    record.update(outcome=("refused before training" if before_training else f"failed in {stage}"),
                  error=f"{type(error).__name__}: {str(error).splitlines()[0][:600] if str(error) else ''}")
record["total_s"] = time.perf_counter() - started
print("ZOO_RESULT " + json.dumps(record))
"""


def run_one(name: str, side: int, timeout: int) -> dict:
    started = time.perf_counter()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        result = subprocess.run([sys.executable, "-c", _ONE_MODEL, name, str(side)], capture_output=True, text=True,
                                timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "side": side, "outcome": f"hang (> {timeout} s)", "total_s": timeout}
    line = next((line for line in result.stdout.splitlines() if line.startswith("ZOO_RESULT ")), None)
    if line is None:
        return {"model": name, "side": side, "outcome": "crashed", "total_s": time.perf_counter() - started,
                "error": result.stderr.strip().splitlines()[-1][:600] if result.stderr.strip() else ""}
    return json.loads(line[len("ZOO_RESULT "):])


def table(rows: list[dict]) -> str:
    lines = ["| model | input | outcome | prepare s | fit s | export s (conversion / validation / other) | "
             "int8 KB | TFLM arena KB | ops not int8 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        stages = row.get("stage_seconds", {})
        conversion, validation = stages.get("conversion", 0.0), stages.get("validation", 0.0)
        export = row.get("export_s")
        other = export - conversion - validation if export is not None else None
        split = f"{export:.0f} ({conversion:.0f} / {validation:.0f} / {other:.0f})" if export is not None else "n/a"
        arena = row.get("tflm_arena_bytes")
        outcome = row["outcome"] + (f": {row['error']}" if row.get("error") else "")
        lines.append(
            f"| {row['model']} | {row['side']} | {outcome[:300]} | {row.get('prepare_s', 0):.0f} | "
            f"{row.get('fit_s', 0):.0f} | {split} | "
            f"{row['size_bytes'] / 1024:.0f} | {arena / 1024 if arena else float('nan'):.0f} | "
            f"{', '.join(row.get('float_ops', [])) or 'none'} |" if "size_bytes" in row else
            f"| {row['model']} | {row['side']} | {outcome[:300]} | {row.get('prepare_s', 0):.0f} | "
            f"{row.get('fit_s', 0):.0f} | n/a | n/a | n/a | n/a |")
    return "\n".join(lines)


def main(argv):
    del argv
    names = FLAGS.models or list(ZOO)
    os.makedirs(FLAGS.out, exist_ok=True)
    rows = []
    for name in names:
        row = run_one(name, ZOO[name], FLAGS.timeout)
        print(json.dumps(row)[:400], flush=True)
        rows.append(row)
    path = os.path.join(FLAGS.out, "zoo.json" if FLAGS.models is None else "zoo_partial.json")
    with open(path, "w") as handle:
        json.dump({"command": " ".join(sys.argv), "rows": rows}, handle, indent=2)
    with open(path.replace(".json", ".md"), "w") as handle:
        handle.write(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
