"""Check that a tf_keras rebuild computes what its Keras 3 original computes, layer by layer.

The outputs of both models are compared on the same inputs; if they differ by
more than `rtol` (relative to the largest output magnitude), every layer's
output is compared in graph order and the first one that diverges is named.
That is the layer whose translation is wrong, not one of its consumers.
"""

import numpy as np

from tfjoint import errors
from tfjoint._keras import keras
from tfjoint.data import outputs_as_list

__all__ = ["max_relative_difference", "check_equivalent", "first_diverging_layer"]


def max_relative_difference(a, b) -> float:
    """max|a - b| / max(max|a|, 1e-6): 0 for identical arrays (broadcast to one shape if they differ)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        try:  # a rebuild may give one row its consumer broadcasts (a position embedding's (1, steps, features))
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            return float("inf")
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-6)) if a.size else 0.0


def _single_output_layers(model) -> list:
    """Layers with one output tensor reachable from the model inputs, in graph order (no InputLayers)."""
    found = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):  # shared layers have several outputs
            continue
        if not isinstance(output, (list, tuple)):
            found.append(layer.name)
    return found


def first_diverging_layer(model3, model, inputs: list[np.ndarray], rtol: float) -> tuple[str | None, float]:
    """The first layer (graph order) whose outputs differ by more than `rtol`, and by how much."""
    import keras as keras3

    names = [n for n in _single_output_layers(model) if n in {layer.name for layer in model3.layers}]
    if not names:
        return None, 0.0
    probe3 = keras3.Model(model3.inputs, [model3.get_layer(n).output for n in names])
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outputs3 = outputs_as_list(probe3.predict(_feed(model3, inputs), verbose=0))
    outputs = outputs_as_list(probe.predict(_feed(model, inputs), verbose=0))
    for name, a, b in zip(names, outputs3, outputs):
        difference = max_relative_difference(a, b)
        if difference > rtol:
            return name, difference
    return None, 0.0


def _feed(model, inputs: list[np.ndarray]):
    """`inputs` (in the model's input order) as the model takes them: one array, a list, or a dict by name."""
    structure = getattr(model, "input", None)
    if isinstance(structure, dict):
        names = [tensor.name.split(":")[0] for tensor in model.inputs]
        by_name = dict(zip(names, inputs))
        return {key: by_name.get(key, by_name.get(str(getattr(tensor, "name", key)).split(":")[0]))
                for key, tensor in structure.items()}
    return inputs if len(inputs) > 1 else inputs[0]


def check_equivalent(model3, model, inputs: list[np.ndarray], rtol: float = 1e-5) -> float:
    """The largest relative output difference; raises if it exceeds `rtol`.

    Raises:
      errors.UnsupportedLayerError: the rebuild computes something else; the
        message names the first diverging layer.
    """
    feed = _feed(model3, inputs)
    outputs3 = outputs_as_list(model3.predict(feed, verbose=0))
    outputs = outputs_as_list(model.predict(_feed(model, inputs), verbose=0))
    worst = max(max_relative_difference(a, b) for a, b in zip(outputs3, outputs))
    if worst <= rtol:
        return worst
    layer, difference = first_diverging_layer(model3, model, inputs, rtol)
    where = (f"layer '{layer}' ({type(model.get_layer(layer)).__name__}) is the first whose outputs differ "
             f"(by {difference:.2e} relative)") if layer else "no single layer could be blamed"
    raise errors.UnsupportedLayerError(
        f"the tf_keras rebuild of Keras 3 model '{model3.name}' does not compute the same outputs (they differ by "
        f"{worst:.2e} relative, more than {rtol:g}): {where}. Its Keras 3 and tf_keras implementations disagree; "
        "replace that layer with one both versions implement alike, or report it."
    )
