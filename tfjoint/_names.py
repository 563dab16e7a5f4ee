"""How a layer is named once TF-MOT has wrapped it: the user's name behind the `quant_` prefix.

No imports: the command's flag module and the export's numpy-only parts use it
without loading TensorFlow.
"""

__all__ = ["QUANT_PREFIX", "SQUEEZE_SUFFIX", "float_layer_name", "output_name"]

QUANT_PREFIX = "quant_"
# The suffix of the Squeeze that ends a layer rewritten in 2-D (a Conv1D or a Dense on a sequence, as a Conv2D):
# its output is the user's layer's.
SQUEEZE_SUFFIX = "_as_1d"


def float_layer_name(name: str) -> str:
    """The user's layer name for a name in a quantized model ('quant_conv1' -> 'conv1')."""
    return name[len(QUANT_PREFIX):] if name.startswith(QUANT_PREFIX) else name


def output_name(name: str) -> str:
    """The user's name for a model output in a quantized model ('quant_head_as_1d' -> 'head')."""
    name = float_layer_name(name)
    return name[:-len(SQUEEZE_SUFFIX)] if name.endswith(SQUEEZE_SUFFIX) and len(name) > len(SQUEEZE_SUFFIX) else name
