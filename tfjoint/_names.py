"""How a layer is named once TF-MOT has wrapped it: the user's name behind the `quant_` prefix.

No imports: the command's flag module and the export's numpy-only parts use it
without loading TensorFlow.
"""

__all__ = ["QUANT_PREFIX", "float_layer_name"]

QUANT_PREFIX = "quant_"


def float_layer_name(name: str) -> str:
    """The user's layer name for a name in a quantized model ('quant_conv1' -> 'conv1')."""
    return name[len(QUANT_PREFIX):] if name.startswith(QUANT_PREFIX) else name
