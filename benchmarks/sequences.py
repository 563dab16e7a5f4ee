"""Sequence models on a microcontroller: the recurrent cell stored once (a streaming file), against the unrolled file.

    python benchmarks/sequences.py --out=benchmarks/results [--seeds=0,1,2] [--whole_seeds=1] [--tiny]

Three models over 100 steps of 3-axis accelerometer-like data (6 classes: a
class-dependent frequency under noise and a random phase):

* LSTM(32) -> Dense(6), the issue's model;
* GRU(32) -> Dense(6);
* Conv1D(16, 5, causal) -> MaxPooling1D(2) -> LSTM(32) -> Dense(6).

Per seed, each is trained in float, prepared (`check=("tflm", "streaming")`:
the streaming file converted and allocated in TFLM before training), fine-tuned
with pruning and QAT in one fit (each epoch timed: the first against a later
one), and exported with `ExportOptions(streaming=True, runtimes=("tflm",))`.
The shipped file is then run here, call by call, in TFLM over every
validation sequence (`StreamRunner`, what the export validated with), and its
top-1 classes are compared with the whole-sequence quantization-aware Keras
model's. For the first `--whole_seeds` seeds the unrolled whole-sequence file
is exported too (`streaming=False`): the form that grows with the steps.

Flash is the file's size; the arena and the RAM are measured by TFLM.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import tf_keras as keras  # noqa: E402
from common import mean_text, write_text  # noqa: E402

import tfjoint  # noqa: E402  (selects tf_keras before TensorFlow loads)

STEPS, CLASSES = 100, 6


def accelerometer(n: int, seed: int, steps: int = STEPS):
    """Six classes of 3-axis motion: a class frequency per axis, a random phase, and noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    t = np.arange(steps)[None, :, None]
    frequency = (1 + y)[:, None, None] * 0.04 * np.array([1.0, 1.3, 0.7])[None, None, :]
    x = np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi, (n, 1, 3)))
    return (x + rng.normal(0, 0.3, x.shape)).astype(np.float32), y


def build(name: str, seed: int):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((STEPS, 3), name="imu")
    x = inputs
    if name == "conv_lstm":
        x = keras.layers.Conv1D(16, 5, padding="causal", activation="relu", name="conv")(x)
        x = keras.layers.MaxPooling1D(2, name="pool")(x)
    x = (keras.layers.GRU if name == "gru" else keras.layers.LSTM)(32, name="rnn")(x)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax", name="classes")(x), name=name)


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _agreement_with_whole_sequence(report, path: str, joint, x_val) -> float:
    """Top-1 agreement, over the validation sequences, of the shipped streaming file in TFLM (call by call) with
    the whole-sequence quantization-aware Keras model."""
    from tfjoint.tflite.flatbuffer import read_flatbuffer
    from tfjoint.tflite.runtimes import runtime_model
    from tfjoint.tflite.streaming import StreamingModel, StreamRunner, StreamState

    content = open(path, "rb").read()
    section = report.streaming
    states = tuple(StreamState(s["name"], s["layer"], tuple(s["shape"]), s["what"]) for s in section["states"])
    stream = StreamingModel(None, section["frames_per_call"], states, (False,), section["input"],
                            tuple(section["outputs"]))
    model = runtime_model("tflm", content, read_flatbuffer(content), [stream.input_name] + [s.name for s in states],
                          list(stream.output_names) + [s.output_name for s in states])
    streamed = StreamRunner(stream, lambda inputs: model.predict(inputs)).predict([x_val])[0]
    whole = tfjoint.strip(joint).predict(x_val, verbose=0)
    return float(np.mean(streamed.argmax(-1) == whole.argmax(-1)))


def run(name: str, seed: int, epochs: int, fine_tune: int, n_train: int, n_val: int, whole: bool, out: str) -> dict:
    x, y = accelerometer(n_train, seed)
    x_val, y_val = accelerometer(n_val, 1000 + seed)
    model = build(name, seed)
    model.compile(keras.optimizers.Adam(5e-3, clipnorm=1.0), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    float_accuracy = float(model.evaluate(x_val, y_val, verbose=0)[1])
    start = time.perf_counter()
    joint = tfjoint.prepare(model, 0.5, check=("tflm", "streaming"))
    prepare_seconds = time.perf_counter() - start
    joint.compile(keras.optimizers.Adam(1e-3, clipnorm=1.0), "sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    joint.fit(x, y, epochs=fine_tune, batch_size=32, verbose=0, callbacks=[timer])
    row = {"model": name, "seed": seed, "float_accuracy": float_accuracy, "prepare_s": prepare_seconds,
           "first_epoch_s": timer.seconds[0], "later_epoch_s": float(np.median(timer.seconds[1:]))}
    for form, streaming in (("streaming", True), ("unrolled", False)):
        if form == "unrolled" and not whole:
            continue
        path = os.path.join(out, f"{name}_{seed}_{form}.tflite")
        start = time.perf_counter()
        try:
            report = tfjoint.export_tflite(joint, path, representative_data=x[:200], validation_data=(x_val, y_val),
                                           float_model=model, options=tfjoint.ExportOptions(
                                               streaming=streaming, runtimes=("tflm",), quantization="qat",
                                               keep_rejected=path))
        except tfjoint.ValidationError as failed:  # recorded as it is: the table says which runs failed the gate
            report = failed.report
        row[form] = {"export_s": time.perf_counter() - start, "conversion_s": report.stage_seconds.get("conversion"),
                     "passed": report.passed, "failures": [str(f) for f in report.failures],
                     "top1_agreement_tflm": report.top1_agreement,
                     "keras_accuracy": report.keras_accuracy, "tflm_accuracy": report.int8_accuracy,
                     "flash_bytes": report.memory["flash_bytes"], "arena_bytes": report.memory["tflm_arena_bytes"],
                     "ram_bytes": report.memory["ram_bytes"], "operators": sum(report.operator_counts.values())}
        if streaming:
            row[form]["frames_per_call"] = report.streaming["frames_per_call"]
            row[form]["whole_sequence_agreement_tflm"] = _agreement_with_whole_sequence(report, path, joint, x_val)
            row[form]["whole_sequence_keras_accuracy"] = float(np.mean(
                tfjoint.strip(joint).predict(x_val, verbose=0).argmax(-1) == y_val))
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | form | float acc % | Keras acc % | TFLM acc % | flash KB | TFLM arena KB | operators | "
             "export s (conversion) | first / later epoch s | streaming = whole sequence (TFLM, top-1) % | "
             "passed the gate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row["model"] for row in rows):
        group = [row for row in rows if row["model"] == name]
        for form in ("streaming", "unrolled"):
            entries = [row[form] for row in group if form in row]
            if not entries:
                continue
            seeds = f" ({len(entries)} seed{'s' if len(entries) > 1 else ''})"
            lines.append(
                f"| {name} | {form}{seeds} | {mean_text([r['float_accuracy'] for r in group], '.1f', 100)} | "
                f"{mean_text([e['keras_accuracy'] for e in entries], '.1f', 100)} | "
                f"{mean_text([e['tflm_accuracy'] for e in entries], '.1f', 100)} | "
                f"{mean_text([e['flash_bytes'] for e in entries], '.1f', 1 / 1024)} | "
                f"{mean_text([e['arena_bytes'] for e in entries], '.1f', 1 / 1024)} | "
                f"{mean_text([e['operators'] for e in entries], '.0f')} | "
                f"{mean_text([e['export_s'] for e in entries], '.0f')} "
                f"({mean_text([e['conversion_s'] for e in entries], '.0f')}) | "
                f"{mean_text([r['first_epoch_s'] for r in group], '.1f')} / "
                f"{mean_text([r['later_epoch_s'] for r in group], '.1f')} | "
                f"{mean_text([e.get('whole_sequence_agreement_tflm') for e in entries], '.1f', 100)} | "
                f"{sum(bool(e.get('passed')) for e in entries)}/{len(entries)} |")
    return "\n".join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for sequences.json, sequences.md and the files.")
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
flags.DEFINE_integer("whole_seeds", 1, "Seeds that also export the unrolled file.")
flags.DEFINE_string("models", "lstm,gru,conv_lstm", "Comma-separated models.")
flags.DEFINE_boolean("tiny", False, "A smoke run: few samples and epochs.")


def main(argv):
    del argv
    args = FLAGS
    os.makedirs(args.out, exist_ok=True)
    files = os.path.join(args.out, "sequences_files")
    os.makedirs(files, exist_ok=True)
    epochs, fine_tune, n_train, n_val = (1, 2, 128, 64) if args.tiny else (15, 3, 1200, 300)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.models.split(","):
            rows.append(run(name, seed, epochs, fine_tune, n_train, n_val, seed < args.whole_seeds, files))
            print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out, "sequences.json"), "w") as handle:
        json.dump({"command": " ".join(sys.argv), "rows": rows}, handle, indent=2)
    write_text(os.path.join(args.out, "sequences.md"), f"`{' '.join(sys.argv)}`\n\n{table(rows)}\n")
    print(table(rows))


if __name__ == "__main__":
    app.run(main)
