"""What a user's own model keeps: float, Keras after the fit, and int8 in every runtime, run through the command.

    python benchmarks/what_you_keep.py --out=benchmarks/results [--seeds=0,1,2] [--epochs=...] [--tiny]

Four models a user might bring, each trained in float here (per seed) and
then given to the `tfjoint` command as a user would, with its defaults and
only the flags the row names:

* digits CNN: the command's embedded default (`tfjoint --seed=S`);
* keyword-spotting DS-CNN (Conv2D 10x4 + 4 depthwise-separable blocks of 64,
  49x10x1, 12 classes) at a flash/arena budget: `--target=micro
  --flash_kb=20 --arena_kb=12 --epochs=E` (the command's default sparsity
  for a microcontroller: none);
* Conv1D+LSTM classifier (Keras 3: Conv1D(16, 5) -> MaxPooling1D -> LSTM(16)
  -> Dense(4)) on a noisy 4-class series: `--target_sparsity=0.6`;
* Conv1D+BatchNorm classifier at `--target_sparsity=0.7`.

The .tflite each run writes is then run here in LiteRT (XNNPACK), LiteRT's
reference kernels and TensorFlow Lite Micro, on the validation split; the
table gives the mean and spread over the seeds. Data is generated (keyword
features, series) or bundled (scikit-learn's digits): no downloads.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import tf_keras as keras  # noqa: E402
from common import mean_text  # noqa: E402

import tfjoint  # noqa: E402  (selects tf_keras before TensorFlow loads)

RUNTIMES = ("litert", "litert_reference", "tflm")


# --- Data --------------------------------------------------------------------------------------------------------

def keyword_features(n: int, seed: int, classes: int = 12):
    """Keyword-spotting-like features (49 frames x 10 coefficients): a class template of three blobs, shifted in
    time, scaled, over noise and a distractor blob. Templates are fixed (seed 1234) so every split shares them."""
    templates = np.random.default_rng(1234)
    centres = templates.uniform([8, 1], [40, 9], (classes, 3, 2))
    widths = templates.uniform([2, 0.8], [6, 2.0], (classes, 3, 2))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    t, f = np.meshgrid(np.arange(49), np.arange(10), indexing="ij")
    x = np.zeros((n, 49, 10), np.float32)
    for i in range(n):
        shift = rng.integers(-5, 6)
        for (ct, cf), (wt, wf) in zip(centres[y[i]], widths[y[i]]):
            x[i] += rng.uniform(0.7, 1.3) * np.exp(-((t - ct - shift) / wt) ** 2 - ((f - cf) / wf) ** 2)
        dt, df = rng.uniform(0, 49), rng.uniform(0, 10)
        x[i] += 0.6 * np.exp(-((t - dt) / 3) ** 2 - ((f - df) / 1.5) ** 2)
    x += rng.normal(0, 0.35, x.shape)
    return x[..., None].astype(np.float32), y


def noisy_series(n: int, seed: int, steps: int = 64):
    """Four classes: a sine of 2, 4, 6 or 8 periods per window, random phase, under heavy noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.arange(steps)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(2 * np.pi * (2 + 2 * y[:, None]) * t / steps + phase) + rng.normal(0, 0.8, (n, steps))
    return x[..., None].astype(np.float32), y


def bumps(n: int, seed: int, steps: int = 48):
    """Four classes: where along the sequence a bump sits, under noise (for the Conv1D+BatchNorm classifier)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.arange(steps)
    centre = 6 + 12 * y[:, None] + rng.integers(-3, 4, (n, 1))
    x = np.exp(-((t - centre) / 3.0) ** 2)[..., None] * np.array([1.0, -0.5, 0.3]) + rng.normal(0, 0.4, (n, steps, 3))
    return x.astype(np.float32), y


# --- Float models (each trained here, per seed) ------------------------------------------------------------------

def ds_cnn(seed: int, width: int = 64):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((49, 10, 1), name="features")
    x = keras.layers.Conv2D(width, (10, 4), strides=(2, 2), padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(x))
    for block in range(4):
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{block}")(x)
        x = keras.layers.ReLU(name=f"dw{block}_relu")(keras.layers.BatchNormalization(name=f"dw{block}_bn")(x))
        x = keras.layers.Conv2D(width, 1, use_bias=False, name=f"pw{block}")(x)
        x = keras.layers.ReLU(name=f"pw{block}_relu")(keras.layers.BatchNormalization(name=f"pw{block}_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(12, activation="softmax", name="classes")(x), name="ds_cnn")


def conv_lstm(seed: int):
    import keras as keras3

    keras3.utils.set_random_seed(seed)
    inputs = keras3.Input((64, 1), name="series")
    x = keras3.layers.Conv1D(16, 5, activation="relu", name="conv")(inputs)
    x = keras3.layers.MaxPooling1D(2, name="pool")(x)
    x = keras3.layers.LSTM(16, name="lstm")(x)
    return keras3.Model(inputs, keras3.layers.Dense(4, activation="softmax", name="classes")(x), name="conv_lstm")


def conv1d_bn(seed: int):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((48, 3), name="series")
    x = inputs
    for i, filters in enumerate((32, 32, 64)):
        x = keras.layers.Conv1D(filters, 5, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(keras.layers.BatchNormalization(name=f"bn{i}")(x))
        x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(keras.layers.Flatten(name="flatten")(x))
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(x), name="conv1d_bn")


TASKS = {
    # name: (model builder, data, float epochs, command flags besides --epochs)
    "ds_cnn_budget": (ds_cnn, keyword_features, 12, ["--target=micro", "--flash_kb=20", "--arena_kb=12"]),
    "conv1d_lstm": (conv_lstm, noisy_series, 10, ["--target_sparsity=0.6"]),
    "conv1d_bn_70": (conv1d_bn, bumps, 10, ["--target_sparsity=0.7"]),
}


def _float_files(task: str, seed: int, work: str, tiny: bool) -> tuple[str, str, float]:
    """Trains the task's float model; writes it (.keras) and its data (.npz); returns their paths and float acc."""
    build, generate, epochs, _ = TASKS[task]
    n_train, n_val = (600, 200) if tiny else (3000, 600)
    x, y = generate(n_train, seed)
    x_val, y_val = generate(n_val, 1000 + seed)
    model = build(seed)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2 if tiny else epochs, batch_size=32, verbose=0)
    accuracy = float(model.evaluate(x_val, y_val, verbose=0)[1])
    model_path, data_path = os.path.join(work, f"{task}_{seed}.keras"), os.path.join(work, f"{task}_{seed}.npz")
    model.save(model_path)
    np.savez(data_path, x_train=x, y_train=y, x_val=x_val, y_val=y_val, x_calib=x[:300])
    return model_path, data_path, accuracy


def _command(args: list[str], out: str) -> tuple[int, float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tfjoint", f"--out={out}", *args], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    return result.returncode, time.perf_counter() - started, result.stderr[-2000:]


def _in_every_runtime(tflite_path: str, x_val, y_val) -> dict[str, float]:
    """The written file's accuracy in each runtime, read from each interpreter's outputs."""
    from tfjoint.tflite.runtimes import runtime_model

    content = open(tflite_path, "rb").read()
    summary = tfjoint.inspect.read_flatbuffer(content)
    names = ([t.signature_name for t in summary.inputs], [t.signature_name for t in summary.outputs])
    found = {}
    for runtime in RUNTIMES:
        outputs = runtime_model(runtime, content, summary, *names).predict([x_val])[0]
        found[runtime] = float(np.mean(np.argmax(outputs, -1) == y_val))
    return found


def run_row(task: str, seed: int, epochs: int, work: str, tiny: bool) -> dict:
    out = os.path.join(work, f"{task}_{seed}_out")
    if task == "digits":
        args, float_accuracy = [f"--seed={seed}", f"--epochs={epochs}"] + (["--float_epochs=3"] if tiny else []), None
        data = None
    else:
        model_path, data_path, float_accuracy = _float_files(task, seed, work, tiny)
        args = [f"--model={model_path}", f"--data={data_path}", f"--seed={seed}", f"--epochs={epochs}"]
        args += TASKS[task][3]
        data = np.load(data_path)
    code, seconds, stderr = _command(args, out)
    row = {"task": task, "seed": seed, "epochs": epochs, "args": args, "exit": code, "seconds": seconds}
    report_path = os.path.join(out, "report.json")
    if not os.path.exists(report_path):
        row["error"] = stderr
        return row
    report = json.load(open(report_path))
    row.update(float=report["float_accuracy"] if float_accuracy is None else float_accuracy,
               keras_after_fit=report["keras_accuracy"], pruned_after_fit=report.get("pruned_accuracy"),
               passed=report["passed"], budget=report.get("budget"), failures=report["failures"][:2])
    tflite = os.path.join(out, "model.tflite" if report["passed"] else "model.rejected.tflite")
    if data is None:
        from tfjoint.app import digits

        split = digits.load_digits(seed=seed)
        x_val, y_val = split["x_val"], split["y_val"]
    else:
        x_val, y_val = data["x_val"], data["y_val"]
    row["int8"] = _in_every_runtime(tflite, x_val, y_val)
    return row


def _mean(values) -> str:
    """A fraction as percent, mean ± stdev over the seeds."""
    return mean_text(list(values), ".1f", scale=100)


def table(rows: list[dict]) -> str:
    lines = ["| model (command flags besides --epochs) | epochs | float % | Keras after the fit % | "
             + " | ".join(f"int8 {runtime} %" for runtime in RUNTIMES) + " | passed | worst int8 − Keras (pt) |",
             "|---|---|---|---|" + "---|" * len(RUNTIMES) + "---|---|"]
    for task in dict.fromkeys(row["task"] for row in rows):
        mine = [row for row in rows if row["task"] == task and "int8" in row]
        if not mine:
            lines.append(f"| {task} | | failed: {rows[0].get('error', '')[:80]} |")
            continue
        flags = " ".join(TASKS[task][3]) if task in TASKS else "(embedded default)"
        gaps = [min(row["int8"].values()) - row["keras_after_fit"] for row in mine]
        lines.append(f"| {task} ({flags}) | {mine[0]['epochs']} | {_mean(r['float'] for r in mine)} | "
                     f"{_mean(r['keras_after_fit'] for r in mine)} | "
                     + " | ".join(_mean(r["int8"][runtime] for r in mine) for runtime in RUNTIMES)
                     + f" | {sum(r['passed'] for r in mine)}/{len(mine)} | {min(gaps) * 100:+.1f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    args = flags.FLAGS  # defined when run as a script (other benchmarks import this module)
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "what_you_keep_work")
    os.makedirs(work, exist_ok=True)
    rows = []
    for task in args.tasks.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run_row(task, seed, 2 if args.tiny else args.epochs, work, args.tiny)
            print(json.dumps({k: v for k, v in row.items() if k != "args"}), flush=True)
            rows.append(row)
    name = "what_you_keep_tiny" if args.tiny else "what_you_keep"
    with open(os.path.join(args.out, f"{name}.json"), "w") as handle:
        json.dump({"command": " ".join(sys.argv), "rows": rows}, handle, indent=2)
    with open(os.path.join(args.out, f"{name}.md"), "w") as handle:
        handle.write(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    flags.DEFINE_string("out", "benchmarks/results", "Directory for what_you_keep.json and .md.")
    flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
    flags.DEFINE_string("tasks", "digits,ds_cnn_budget,conv1d_lstm,conv1d_bn_70", "Comma-separated tasks.")
    flags.DEFINE_integer("epochs", 10, "--epochs given to the command (its default: 10).")
    flags.DEFINE_boolean("tiny", False, "Small data and few epochs: a smoke run.")
    app.run(main)
