"""What tfjoint copied from, or reaches into, TF-MOT is still what TF-MOT has.

If one of these fails after a TF-MOT upgrade, the module named in the message
(tfjoint/_tfmot.py or tfjoint/quantize/scheme.py) needs the same change.
"""

import pytest
import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot
from tfjoint.quantize import scheme
from tfjoint.registry.rewrites import batchnorm_transforms, rewrite_transforms


def _tfmot_default_transforms() -> list[str]:
    """The transform list TF-MOT's own Default8BitQuantizeLayoutTransform.apply builds, captured."""
    captured = []

    class Capture:
        def __init__(self, model, transforms, candidate_layers, layer_quantize_map):
            captured.extend(type(t).__name__ for t in transforms)

        def transform(self):
            return None, {}

    module = _tfmot.default_8bit_quantize_layout_transform
    original = module.model_transformer.ModelTransformer
    module.model_transformer.ModelTransformer = Capture
    try:
        module.Default8BitQuantizeLayoutTransform().apply(None, {})
    finally:
        module.model_transformer.ModelTransformer = original
    return captured


def test_the_copied_default_8bit_transform_list_is_tfmots():
    assert [type(t).__name__ for t in scheme.default_8bit_transforms()] == _tfmot_default_transforms()


def _tfmot_class_name(transform) -> str:
    """The TF-MOT class `transform` is or subclasses, else its own class name."""
    for cls in type(transform).__mro__:
        if cls.__module__.startswith("tensorflow_model_optimization"):
            return cls.__name__
    return type(transform).__name__


def test_tfjoints_list_is_tfmots_after_its_own_rewrites():
    transforms = scheme.JointLayoutTransform(None, 0).transforms()
    theirs = _tfmot_default_transforms()
    rewrites = [type(t).__name__ for t in rewrite_transforms()]
    last = [type(t).__name__ for t in batchnorm_transforms()]
    at_tfmots_places = transforms[:1] + transforms[1 + len(rewrites):len(transforms) - len(last)]
    assert [type(t).__name__ for t in transforms[1:1 + len(rewrites)]] == rewrites
    assert [type(t).__name__ for t in transforms[len(transforms) - len(last):]] == last
    assert [_tfmot_class_name(t) for t in at_tfmots_places] == theirs
    assert [type(t).__name__ for t in at_tfmots_places if _tfmot_class_name(t) != type(t).__name__] == [
        "_GatedInputLayerQuantize", "_NamedSeparableConvQuantize"]


def _holders():
    """A real object for every holder named in the PRIVATE_ATTRIBUTES lists: a built QAT wrapper, a model, ..."""
    import tensorflow as tf
    import tf_keras as keras

    from tfjoint._litert import Interpreter
    from tfjoint.tflite.convert import to_float32

    inputs = keras.Input((4,))
    dense = keras.layers.Dense(2, name="dense")
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(dense(inputs)))
    qat = tfmot.quantization.keras.quantize_model(model)
    fused = keras.Input((4,))
    relu_qat = tfmot.quantization.keras.quantize_model(keras.Model(fused, keras.layers.Dense(
        2, activation="relu", name="fused")(fused)))
    return {
        "QuantizeWrapperV2 (built)": qat.get_layer("quant_dense"),
        "QuantizeWrapperV2 (output-quantized)": qat.get_layer("quant_relu"),
        "QuantizeAwareActivation": _tfmot.QuantizeAwareActivation,
        "QuantizeAwareActivation (post-quantized)": relu_qat.get_layer("quant_fused")._quantize_activations[0],
        "PolynomialDecay": tfmot.sparsity.keras.PolynomialDecay,
        "Default8BitQuantizeRegistry": tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry(),
        "Functional model": model,
        "model": model,
        "symbolic tensor": model.outputs[0],
        "layer": dense,
        "causal convolution": keras.layers.Conv1D(2, 3, padding="causal"),
        "variable": tf.Variable(1.0),
        "Interpreter": Interpreter(model_content=to_float32(model)),
    }


@pytest.mark.slow
def test_every_private_attribute_tfjoint_reads_still_exists():
    """Each library's one module lists the private attributes it reads; each must still be there."""
    from tfjoint import _keras, _litert

    holders = _holders()
    listed = list(_tfmot.PRIVATE_ATTRIBUTES) + list(_keras.PRIVATE_ATTRIBUTES) + list(_litert.PRIVATE_ATTRIBUTES)
    for holder, attribute in listed:
        assert hasattr(holders[holder], attribute), f"{holder}.{attribute} is gone: update the module that reads it"
    import importlib

    for module, name in _keras.PRIVATE_MODULES:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone"
    assert issubclass(_tfmot.Default8BitQuantizeConfig, tfmot.quantization.keras.QuantizeConfig)
    assert callable(_tfmot.Pruning.conditional_mask_update)
    import inspect

    # GatedQuantizer's range warm start passes these to TF-MOT's moving-average fake quant.
    parameters = inspect.signature(_tfmot.MovingAvgQuantize).parameters
    assert {"per_channel", "ema_decay", "is_training", "num_bits", "symmetric", "narrow_range"} <= set(parameters)


def test_private_attributes_are_read_only_where_they_are_listed():
    """No module but the three listing modules reads an attribute `._name` of an object it does not own."""
    import ast
    import os

    import tfjoint

    package = os.path.dirname(tfjoint.__file__)
    allowed = {"_tfmot.py", "_keras.py", "_litert.py"}
    offences = []
    for path, _, files in os.walk(package):
        for name in files:
            if not name.endswith(".py") or name in allowed:
                continue
            tree = ast.parse(open(os.path.join(path, name)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                    owner = node.value
                    if isinstance(owner, ast.Name) and owner.id in ("self", "cls", "_tfmot", "_keras", "_litert",
                                                                      "errors", "os"):  # os._exit: a forked child
                        continue
                    offences.append(f"{os.path.relpath(os.path.join(path, name), package)}:{node.lineno} .{node.attr}")
    assert not offences, offences
