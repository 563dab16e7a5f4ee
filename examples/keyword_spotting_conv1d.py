"""A Conv1D keyword-spotting-style model: pruned AND quantization-aware, which TF-MOT alone refuses.

    python examples/keyword_spotting_conv1d.py [--out DIR]

TF-MOT's 8-bit QAT raises "Layer conv1d ... is not supported" for Conv1D;
tfjoint quantizes it (per-tensor weights, which the converter accepts for the
Conv1D -> CONV_2D lowering) and prunes it in the same fit.

The data is synthetic and generated here: 40 frames x 10 "MFCC" features per
clip, where each of 4 keywords is a different spectral pattern sweeping over
time, plus strong noise (float accuracy around 90%).
"""

import argparse
import os

import numpy as np
import tf_keras as keras

import tfjoint

FRAMES, FEATURES, KEYWORDS = 40, 10, 4


def make_clips(n: int, seed: int, noise: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, KEYWORDS, n)
    t = np.linspace(0, 1, FRAMES)[:, None]
    f = np.arange(FEATURES)[None, :]
    clips = np.empty((n, FRAMES, FEATURES), np.float32)
    for i, k in enumerate(labels):
        sweep = np.sin(2 * np.pi * ((k + 1) * t + 0.1 * (k + 1) * f / FEATURES))
        shift = rng.integers(-5, 6)
        clips[i] = np.roll(sweep, shift, axis=0) + noise * rng.standard_normal((FRAMES, FEATURES))
    return clips, labels


def build_model() -> keras.Model:
    inputs = keras.Input((FRAMES, FEATURES), name="mfcc")
    x = keras.layers.Conv1D(32, 5, activation="relu", name="conv1d_1")(inputs)
    x = keras.layers.Conv1D(32, 5, activation="relu", name="conv1d_2")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(KEYWORDS, activation="softmax", name="keyword")(x))


def main(out: str, epochs: int = 6, max_accuracy_drop: float = 0.02) -> tfjoint.ExportReport:
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_train, y_train = make_clips(2000, seed=1)
    x_val, y_val = make_clips(500, seed=2)

    float_model = build_model()
    float_model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    float_model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)

    steps = epochs * int(np.ceil(len(x_train) / 64))
    joint = tfjoint.prepare(float_model, tfjoint.inspect.plan_schedule(steps, target_sparsity=0.7, prune_end=0.5))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    joint.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=2, callbacks=tfjoint.callbacks())

    report = tfjoint.export_tflite(tfjoint.strip(joint), os.path.join(out, "kws_int8.tflite"),
                                   representative_data=x_train[:200], validation_data=(x_val, y_val),
                                   float_model=float_model,
                                   options=tfjoint.ExportOptions(measure_latency=True,
                                                                 tolerances=tfjoint.Tolerances(max_accuracy_drop=max_accuracy_drop)))
    print(report)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples_out")
    main(parser.parse_args().out)
