"""The embedded default: scikit-learn's bundled 8x8 handwritten digits and a small CNN.

The data ships inside scikit-learn (1,797 images), so nothing is downloaded.
"""

import numpy as np

from tfjoint._keras import keras
from tfjoint.train.first_trace import build_before_tracing

__all__ = ["load_digits", "build_cnn", "train_float_model"]


def load_digits(seed: int = 0, val_fraction: float = 0.25) -> dict[str, np.ndarray]:
    """Digits as float32 images in [0, 1], shape (n, 8, 8, 1), split into train/val/calib.

    Returns a dict with `x_train`, `y_train`, `x_val`, `y_val`, `x_calib` (a
    slice of the training images), the keys the CLI's .npz files use.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_val = int(len(x) * val_fraction)
    return {
        "x_train": x[n_val:],
        "y_train": y[n_val:],
        "x_val": x[:n_val],
        "y_val": y[:n_val],
        "x_calib": x[n_val : n_val + 200],
    }


def build_cnn(width: int = 32, seed: int = 0) -> keras.Model:
    """A small Conv+BN+ReLU CNN for 8x8x1 inputs and 10 classes."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def train_float_model(data: dict[str, np.ndarray], epochs: int = 15, batch_size: int = 32, seed: int = 0, verbose=0):
    """Builds and trains the float CNN; returns the compiled model."""
    model = build_cnn(seed=seed)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    build_before_tracing(model, data["x_train"], data["y_train"], model.trainable_variables, model.outputs[0])
    model.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=batch_size, verbose=verbose)
    return model
