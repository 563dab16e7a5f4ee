"""Which layers tfjoint prunes, and which of their weights: one table every stage reads."""

from tfjoint._keras import keras

__all__ = ["prunable_weight", "prunable_layers", "PRUNED_WEIGHT"]

# The weight tfjoint prunes in each layer type (exact types: Conv2DTranspose,
# a Conv2D subclass, is quantized only). DepthwiseConv2D is pruned only when
# asked: TF-MOT's pruning registry leaves it dense.
PRUNED_WEIGHT = {
    keras.layers.Dense: "kernel",
    keras.layers.Conv1D: "kernel",
    keras.layers.Conv2D: "kernel",
}
_DEPTHWISE_WEIGHT = "depthwise_kernel"


def prunable_weight(layer, prune_depthwise: bool = False) -> str | None:
    """Name of the weight tfjoint would prune in `layer`, or None."""
    if prune_depthwise and type(layer) is keras.layers.DepthwiseConv2D:
        return _DEPTHWISE_WEIGHT
    return PRUNED_WEIGHT.get(type(layer))


def prunable_layers(model, prune_depthwise: bool = False) -> dict[str, int]:
    """Layers tfjoint can prune in `model`, with the size of the weight it prunes."""
    sizes = {}
    for layer in model.layers:
        weight = prunable_weight(layer, prune_depthwise)
        if weight is not None:
            sizes[layer.name] = int(getattr(layer, weight).shape.num_elements())
    return sizes
