"""Bring your Keras 3 model: a model trained and saved the default way on TF 2.16+, shrunk by tfjoint.

    python examples/keras3_model.py [--out DIR]

Since TF 2.16 `tf.keras` is Keras 3, which TF-MOT refuses. tfjoint rebuilds the
saved Keras 3 model in tf_keras (layer by layer, weights copied), checks that
the rebuild computes the same outputs on your data, then prunes and
quantizes it in one fit and exports a validated int8 .tflite. The models
tfjoint hands back are tf_keras models; the .tflite is the deliverable.
"""

import argparse
import os

import keras  # Keras 3: what `tf.keras` is by default on TF >= 2.16
import numpy as np

import tfjoint
from tfjoint.app import digits


def train_keras3_model(data, epochs: int) -> keras.Model:
    """An ordinary Keras 3 training script: Rescaling at the input, Conv+BN+ReLU, a dense head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 16.0, name="rescale")(inputs)  # raw 0..16 pixel values in
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="classes")(x), name="keras3_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0)
    return model


def main(out: str, float_epochs: int = 12, epochs: int = 10, max_accuracy_drop: float = 0.02) -> tfjoint.ExportReport:
    os.makedirs(out, exist_ok=True)
    data = digits.load_digits(seed=0)
    data = {k: v * 16 if k.startswith("x") else v for k, v in data.items()}  # raw pixels: the model rescales

    # 1. Somebody's Keras 3 model, saved the default way.
    keras3_model = train_keras3_model(data, float_epochs)
    path = os.path.join(out, "model.keras")
    keras3_model.save(path)

    # 2. Load it as a tf_keras model: rebuilt, and checked against the Keras 3 model on real inputs.
    float_model = tfjoint.load_model(path, sample_inputs=data["x_calib"])

    # 3. The usual tfjoint flow.
    steps = epochs * int(np.ceil(len(data["x_train"]) / 32))
    joint = tfjoint.prepare(float_model, tfjoint.inspect.plan_schedule(steps, target_sparsity=0.7))
    joint.compile(tfjoint.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    joint.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=2,
              callbacks=tfjoint.callbacks())
    report = tfjoint.export_tflite(tfjoint.strip(joint), os.path.join(out, "keras3_int8.tflite"),
                                   validation_data=(data["x_val"], data["y_val"]), float_model=float_model,
                                   options=tfjoint.ExportOptions(measure_latency=True,
                                                                 tolerances=tfjoint.Tolerances(max_accuracy_drop=max_accuracy_drop)))
    print(report)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples_out")
    main(parser.parse_args().out)
