"""Transformers pruned and quantized in one fit, fully int8 on LiteRT, against the float model and post-training int8.

    python benchmarks/transformers.py --out=benchmarks/results [--seeds=0,1,2] [--models=vit_digits,bert_tiny]
                                      [--tiny]

Two Keras 3 models, each trained in float here per seed:

* vit_digits: a ViT-style encoder on scikit-learn's digits: the 8 rows of each image are 8 tokens (Dense 32 +
  learned positions, keras_hub's PositionEmbedding), two pre-norm encoder blocks (MultiHeadAttention 4 heads x 8,
  LayerNorm, GELU FFN 64), average pooling, 10 classes;
* bert_tiny: keras_hub's BertBackbone (2 layers, hidden 64, 4 heads, FFN 128, GELU) on a generated task that needs
  attention: which of two marked tokens comes first in a padded sequence of 16.

Rows, per model (accuracy on the validation split, in LiteRT with XNNPACK as a phone runs it):

* float: the Keras 3 model;
* TF PTQ: TensorFlow's full-integer post-training quantization (TFLiteConverter, 300 calibration samples) of the
  float model, as tfjoint's bridge rebuilds it in tf_keras; the float operators it leaves are counted;
* AEQ: ai-edge-quantizer's static int8 recipe (static_wi8_ai8) on the float .tflite, where it runs;
* tfjoint: `prepare(target_sparsity=0)` -> fit -> strip -> `export_tflite` (QAT, no pruning);
* tfjoint 50%: 50% unstructured sparsity of every pruned kernel (attention projections, FFN, classifier);
* tfjoint heads: `channel_sparsity=0.5`: half of the heads and FFN neurons removed (and 0 unstructured), the heads
  ranked by weight magnitude;
* tfjoint heads (scan): the same, the heads ranked by the loss each one's removal costs (`scan_heads`, on the last
  500 training samples: the validation split stays unseen);
* tfjoint heads+residual: the same with `residual_sparsity=0.5`: half of the residual width (embeddings,
  LayerNorms, Adds, every projection reading or writing the stream) removed before the fit;
* tfjoint micro: `--target=micro`'s path: GELU as its TFLM stand-in, the file run in TFLM.

The latency rows compare the heads-pruned file with the unpruned tfjoint file, 1 thread, paired rounds, in
LiteRT's builtin kernels and with XNNPACK. `export_s` is tfjoint's export of the unpruned model (2 cores).

`--models=encoder_large` is latency only: a 4-layer encoder where attention dominates (hidden 128, 4 heads of 32,
FFN 256, sequence 64, GELU), trained a few steps on random data (latency follows the shapes, not the weights): half
of its heads and FFN neurons removed against the unpruned int8 file. `--models=encoder_tokens` is the same encoder
reading token ids through an Embedding (its residual stream starts inside the model, so it can be narrowed), with
the heads+residual file timed too.
"""

import functools
import importlib
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from common import mean_text  # noqa: E402

import tfjoint  # noqa: E402  (selects tf_keras before TensorFlow loads)
from tfjoint.app import digits  # noqa: E402

keras3 = importlib.import_module("keras")  # Keras 3, imported after tfjoint

METHODS = ("float", "TF PTQ", "AEQ", "tfjoint", "tfjoint 50%", "tfjoint heads", "tfjoint heads (scan)",
           "tfjoint heads+residual", "tfjoint micro")


# --- Models and data ---------------------------------------------------------------------------------------------

def _vit(seed: int):
    import keras_hub

    keras3.utils.set_random_seed(seed)
    inputs = keras3.Input((8, 8), name="rows")
    x = keras3.layers.Dense(32, name="embed")(inputs)
    x = x + keras_hub.layers.PositionEmbedding(8, name="positions")(x)
    for block in range(2):
        h = keras3.layers.LayerNormalization(epsilon=1e-6, name=f"ln{block}a")(x)
        x = x + keras3.layers.MultiHeadAttention(4, 8, name=f"attention{block}")(h, h)
        h = keras3.layers.LayerNormalization(epsilon=1e-6, name=f"ln{block}b")(x)
        h = keras3.layers.Dense(64, activation="gelu", name=f"ffn{block}_in")(h)
        x = x + keras3.layers.Dense(32, name=f"ffn{block}_out")(h)
    x = keras3.layers.GlobalAveragePooling1D(name="pool")(keras3.layers.LayerNormalization(name="ln")(x))
    return keras3.Model(inputs, keras3.layers.Dense(10, activation="softmax", name="classes")(x), name="vit_digits")


def _vit_data(seed: int, tiny: bool):
    data = digits.load_digits(seed=seed)
    return ({"x": data["x_train"][..., 0], "y": data["y_train"]}, {"x": data["x_val"][..., 0], "y": data["y_val"]},
            3 if tiny else 40, 2 if tiny else 10)


def _token_order(n, seed, steps=16, vocabulary=60):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(steps // 2, steps + 1, n)
    tokens = rng.integers(3, vocabulary, (n, steps)).astype(np.int32)
    marked = np.array([rng.choice(np.arange(1, length), 2, replace=False) for length in lengths])
    tokens[np.arange(n), marked[:, 0]], tokens[np.arange(n), marked[:, 1]] = 1, 2
    padding = (np.arange(steps)[None, :] < lengths[:, None]).astype(np.int32)
    x = {"token_ids": tokens * padding, "segment_ids": np.zeros_like(tokens), "padding_mask": padding}
    return x, (marked[:, 0] < marked[:, 1]).astype(np.int32)


def _bert(seed: int):
    import keras_hub

    keras3.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=60, num_layers=2, num_heads=4, hidden_dim=64,
                                             intermediate_dim=128, max_sequence_length=16, dropout=0.0)
    outputs = keras3.layers.Dense(2, activation="softmax", name="classes")(backbone.output["pooled_output"])
    return keras3.Model(backbone.input, outputs, name="bert_tiny")


def _bert_data(seed: int, tiny: bool):
    (x, y), (x_val, y_val) = _token_order(512 if tiny else 4000, seed), _token_order(256 if tiny else 1000, seed + 100)
    return {"x": x, "y": y}, {"x": x_val, "y": y_val}, 2 if tiny else 20, 1 if tiny else 4


def _encoder_large(seed: int, hidden: int = 128, heads: int = 4, layers: int = 4, steps: int = 64,
                   tokens: int | None = None):
    keras3.utils.set_random_seed(seed)
    if tokens:  # ids through an Embedding: the residual stream starts inside the model, so it can be narrowed
        inputs = keras3.Input((steps,), dtype="int32", name="x")
        x = keras3.layers.Embedding(tokens, hidden, name="embed")(inputs)
    else:
        inputs = keras3.Input((steps, hidden), name="x")
        x = inputs
    for block in range(layers):
        h = keras3.layers.LayerNormalization(epsilon=1e-6, name=f"ln{block}a")(x)
        x = x + keras3.layers.MultiHeadAttention(heads, hidden // heads, name=f"attention{block}")(h, h)
        h = keras3.layers.LayerNormalization(epsilon=1e-6, name=f"ln{block}b")(x)
        h = keras3.layers.Dense(2 * hidden, activation="gelu", name=f"ffn{block}_in")(h)
        x = x + keras3.layers.Dense(hidden, name=f"ffn{block}_out")(h)
    x = keras3.layers.GlobalAveragePooling1D(name="pool")(keras3.layers.LayerNormalization(name="ln")(x))
    return keras3.Model(inputs, keras3.layers.Dense(4, activation="softmax", name="classes")(x), name="encoder_large")


def _encoder_large_data(seed: int, tiny: bool):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 64, 128)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    return {"x": x, "y": y}, {"x": x[:32], "y": y[:32]}, 1, 1


def _encoder_tokens_data(seed: int, tiny: bool):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 64, (64, 64)).astype(np.int32)
    y = rng.integers(0, 4, 64)
    return {"x": x, "y": y}, {"x": x[:32], "y": y[:32]}, 1, 1


MODELS = {"vit_digits": (_vit, _vit_data), "bert_tiny": (_bert, _bert_data),
          "encoder_large": (_encoder_large, _encoder_large_data),
          "encoder_tokens": (functools.partial(_encoder_large, tokens=64), _encoder_tokens_data)}
LATENCY_ONLY = ("encoder_large", "encoder_tokens")
PRUNED_FILES = ("tfjoint heads", "tfjoint heads+residual")  # each timed against the unpruned file


# --- Files and their accuracy ------------------------------------------------------------------------------------

def _accuracy_of_file(content: bytes, x, y, kernels="default") -> float:
    summary = tfjoint.inspect.read_flatbuffer(content)
    names = [t.signature_name for t in summary.inputs]
    model = tfjoint.inspect.TFLiteModel(content, names, [t.signature_name for t in summary.outputs], kernels=kernels)
    inputs = [x[name] for name in names] if isinstance(x, dict) else [x]
    return float(np.mean(np.argmax(model.predict(inputs), -1) == y))


def _float_ops(content: bytes) -> int:
    return len(tfjoint.inspect.read_flatbuffer(content).float_ops)


def _tf_ptq(model3, train) -> bytes:
    import tensorflow as tf

    bridged = tfjoint.from_keras3(model3, train["x"])
    x = train["x"]
    names = [t.name.split(":")[0] for t in bridged.inputs]

    def representative():
        for i in range(300):
            yield [x[name][i:i + 1] for name in names] if isinstance(x, dict) else [x[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(bridged)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    return converter.convert()


def _aeq(model3, train) -> bytes:
    import tensorflow as tf
    from ai_edge_quantizer import quantizer, recipe

    bridged = tfjoint.from_keras3(model3, train["x"])
    float_content = tf.lite.TFLiteConverter.from_keras_model(bridged).convert()
    qt = quantizer.Quantizer(float_content, recipe.static_wi8_ai8())
    summary = tfjoint.inspect.read_flatbuffer(float_content)
    names = [t.signature_name for t in summary.inputs]
    x = train["x"]
    samples = [{name: (x[name] if isinstance(x, dict) else x)[i:i + 1] for name in names} for i in range(300)]
    calibration = qt.calibrate({"serving_default": samples})
    return bytes(qt.quantize(calibration).quantized_model)


def _tfjoint(model3, train, val, epochs, path, target_sparsity=0.0, channel_sparsity=0.0, target="phone",
             scan=False, validate=True, residual_sparsity=0.0):
    steps = epochs * -(-len(train["y"]) // 32)
    scores = {}
    if scan:  # the heads ranked by measurement, on training samples (the validation split stays unseen)
        from tfjoint.plan.for_budget import scan_heads

        tail = {k: v[-500:] for k, v in train["x"].items()} if isinstance(train["x"], dict) else train["x"][-500:]
        scores = scan_heads(model3, (tail, train["y"][-500:]))
    schedule = tfjoint.JointSchedule(target_sparsity, end_step=max(steps // 2, 1), frequency=max(steps // 32, 1),
                                     channel_sparsity=channel_sparsity, channel_scores=scores,
                                     residual_sparsity=residual_sparsity)
    micro = target == "micro"  # GELU trains as its TFLM stand-in, the file is validated in TFLM
    joint = tfjoint.prepare(model3, schedule, sample_inputs=train["x"], check=("tflm",) if micro else True)
    joint.compile(keras3.optimizers.Adam(3e-4), "sparse_categorical_crossentropy")
    joint.fit(train["x"], train["y"], epochs=epochs, batch_size=32, verbose=0)
    started = time.perf_counter()
    report = tfjoint.export_tflite(tfjoint.strip(joint), path,
                                   validation_data=(val["x"], val["y"]) if validate else None,
                                   representative_data=train["x"],
                                   options=tfjoint.ExportOptions(quantization="qat", explain_layers=False,
                                                                 runtimes=("tflm",) if micro else ("litert",)))
    return report, time.perf_counter() - started


def run(name: str, seed: int, tiny: bool, work: str, methods=None) -> list[dict]:
    build, load = MODELS[name]
    train, val, float_epochs, epochs = load(seed, tiny)
    model = build(seed)
    model.compile(keras3.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train["x"], train["y"], epochs=float_epochs, batch_size=32, verbose=0)
    rows = [{"method": "float", "accuracy": float(model.evaluate(val["x"], val["y"], verbose=0)[1])}]
    if name in LATENCY_ONLY:
        methods = ["tfjoint", "tfjoint heads"] + (["tfjoint heads+residual"] if name == "encoder_tokens" else [])
    for method, make in (("TF PTQ", _tf_ptq), ("AEQ", _aeq)):
        if methods and method not in methods:
            continue
        try:
            content = make(model, train)
            rows.append({"method": method, "accuracy": _accuracy_of_file(content, val["x"], val["y"]),
                         "float_ops": _float_ops(content), "size_bytes": len(content)})
        except Exception as error:
            rows.append({"method": method, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"})
    files = {}
    for method, kwargs in (("tfjoint", dict(target_sparsity=0.0)), ("tfjoint 50%", dict(target_sparsity=0.5)),
                           ("tfjoint heads", dict(target_sparsity=0.0, channel_sparsity=0.5)),
                           ("tfjoint heads (scan)", dict(target_sparsity=0.0, channel_sparsity=0.5, scan=True)),
                           ("tfjoint heads+residual", dict(target_sparsity=0.0, channel_sparsity=0.5,
                                                           residual_sparsity=0.5)),
                           ("tfjoint micro", dict(target_sparsity=0.0, target="micro"))):
        if methods and method not in methods:
            continue
        path = os.path.join(work, f"{name}_{seed}_{method.replace(' ', '_').replace('%', '')}.tflite")
        try:
            report, export_s = _tfjoint(model, train, val, epochs, path, validate=name not in LATENCY_ONLY, **kwargs)
            files[method] = open(path, "rb").read()
            rows.append({"method": method, "accuracy": report.int8_accuracy, "float_ops": len(report.float_ops),
                         "size_bytes": report.size_bytes, "export_s": export_s,
                         "weight_sparsity": report.weight_sparsity,
                         "tflm_arena_bytes": (report.memory.get("tflm_arena_bytes") if "tflm" in report.runtimes
                                              else None)})
        except Exception as error:
            rows.append({"method": method, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"})
    pruned = [method for method in PRUNED_FILES if method in files]
    if "tfjoint" in files and pruned:
        from common import paired_latency_ratios

        pair = {"unpruned": files["tfjoint"], **{method: files[method] for method in pruned}}
        for kernels in ("builtin", "default"):
            ratios = paired_latency_ratios(pair, "unpruned", rounds=3 if tiny else 7, kernels=kernels)
            for method in pruned:
                label = method.removeprefix("tfjoint ")
                rows.append({"method": f"latency {label}/unpruned ({kernels})",
                             "ratio": float(statistics.median(ratios[method]))})
    for row in rows:
        row.update(model=name, seed=seed)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | method | accuracy % | vs float (points) | float ops | size KB | export s | TFLM arena KB |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["model"], row["method"]), []).append(row)
    for (model, method), group in groups.items():
        ok = [r for r in group if "error" not in r]
        if not ok:
            lines.append(f"| {model} | {method} | failed: {group[0]['error'][:100]} | | | | | |")
            continue
        if "ratio" in ok[0]:
            lines.append(f"| {model} | {method} | ratio {mean_text([r['ratio'] for r in ok], '.3f')} | | | | | |")
            continue
        floats = {r["seed"]: r["accuracy"] for r in rows if r["model"] == model and r["method"] == "float"}
        drop = [100 * (r["accuracy"] - floats[r["seed"]]) for r in ok
                if r["seed"] in floats and r.get("accuracy") is not None]
        lines.append(f"| {model} | {method} | {mean_text([r['accuracy'] for r in ok], scale=100)} | "
                     f"{mean_text(drop) if method != 'float' else ''} | "
                     f"{mean_text([r.get('float_ops') for r in ok], '.0f')} | "
                     f"{mean_text([r['size_bytes'] / 1024 for r in ok if r.get('size_bytes')], '.1f')} | "
                     f"{mean_text([r.get('export_s') for r in ok], '.0f')} | "
                     f"{mean_text([r['tflm_arena_bytes'] / 1024 for r in ok if r.get('tflm_arena_bytes')], '.1f')} |")
    return "\n".join(lines)


FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results", "Directory for transformers.json and transformers.md.")
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
flags.DEFINE_string("models", "vit_digits,bert_tiny", f"From {','.join(MODELS)} (encoder_large: latency only).")
flags.DEFINE_boolean("tiny", False, "A smoke run: little data, few epochs.")
flags.DEFINE_string("methods", "", "Comma-separated rows to run (default: all), e.g. 'tfjoint,tfjoint micro' for "
                                   "GELU against its TFLM stand-in.")


def main(argv):
    del argv
    args = FLAGS
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows += run(name, seed, args.tiny, work, [m for m in args.methods.split(",") if m])
    stem = "transformers" + ("_tiny" if args.tiny else "")
    with open(os.path.join(args.out, f"{stem}.json"), "w") as handle:
        json.dump({"command": " ".join(sys.argv), "rows": rows}, handle, indent=2)
    text = table(rows)
    with open(os.path.join(args.out, f"{stem}.md"), "w") as handle:
        handle.write(f"`{' '.join(sys.argv)}`\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    app.run(main)
