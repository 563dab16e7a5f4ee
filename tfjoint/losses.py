"""The loss a model fine-tunes with, inferred from its labels and its output layer.

Shared by the sensitivity scan (`tfjoint.allocate_sparsity`), distillation
(which needs to know whether outputs are probabilities) and the command. Keras
is imported on first use, so the command's flags (which list `LOSSES`) load
without TensorFlow.
"""

import numpy as np

__all__ = ["outputs_probabilities", "infer_loss", "LOSSES"]

LOSSES = ("auto", "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse")


def outputs_probabilities(model, output_index: int = 0) -> bool:
    """Whether a model output ends in softmax or sigmoid: as an activation, an `Activation` or a `Softmax` layer."""
    from tfjoint.registry import kind_of, unwrapped

    layer = unwrapped(model.get_layer(model.output_names[output_index]))
    if "probabilities" in getattr(kind_of(layer), "tags", ()):  # a Softmax layer
        return True
    activation = getattr(layer, "activation", None)
    activation = getattr(activation, "activation", activation)  # TF-MOT's QuantizeAwareActivation
    return getattr(activation, "__name__", "") in ("softmax", "sigmoid")


def _integer_valued(y: np.ndarray) -> bool:
    return bool(np.issubdtype(y.dtype, np.integer)
                or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)))


def infer_loss(model, y: np.ndarray, requested: str = "auto"):
    """The loss (and metrics) to train `model` on labels `y` with.

    "auto": integer labels -> sparse categorical cross-entropy (binary
    cross-entropy for 0/1 labels and a one-unit output); one-hot rows ->
    categorical; multi-hot rows (multi-label) -> binary; anything else ->
    mean squared error. `from_logits` is False
    when the output layer ends in softmax/sigmoid, True otherwise.
    """
    from tfjoint._keras import keras

    y = np.asarray(y)
    from_logits = not outputs_probabilities(model)
    units = model.outputs[0].shape[-1]
    if requested == "auto":
        column = y.ndim == 1 or (y.ndim == 2 and y.shape[-1] == 1)
        if column and _integer_valued(y) and units == 1 and np.all((y == 0) | (y == 1)):
            requested = "binary_crossentropy"
        elif column and _integer_valued(y) and units and units > 1:
            requested = "sparse_categorical_crossentropy"
        elif y.ndim == 2 and y.shape[-1] > 1 and np.all((y == 0) | (y == 1)) and np.all(y.sum(-1) == 1):
            requested = "categorical_crossentropy"
        elif y.ndim == 2 and y.shape[-1] > 1 and units == y.shape[-1] and np.all((y == 0) | (y == 1)):
            requested = "binary_crossentropy"  # multi-hot rows: one yes/no decision per label (multi-label)
        else:
            requested = "mse"
    classes = {
        "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
    }
    if requested == "binary_crossentropy" and units and units > 1:  # Keras's "accuracy" would be argmax's here
        threshold = 0.0 if from_logits else 0.5
        return (keras.losses.BinaryCrossentropy(from_logits=from_logits),
                [keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold)])
    if requested in classes:
        return classes[requested](from_logits=from_logits), ["accuracy"]
    return keras.losses.MeanSquaredError(), []
