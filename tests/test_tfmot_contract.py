"""What tfjoint copied from, or reaches into, TF-MOT is still what TF-MOT has.

If one of these fails after a TF-MOT upgrade, the module named in the message
(tfjoint/_tfmot.py or tfjoint/quantize/scheme.py) needs the same change.
"""

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot
from tfjoint.quantize import scheme
from tfjoint.quantize.transforms import batchnorm_transforms, rewrite_transforms


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


def test_private_names_still_exist():
    for name in _tfmot.__all__:
        assert getattr(_tfmot, name) is not None, name
    assert issubclass(_tfmot.Default8BitQuantizeConfig, tfmot.quantization.keras.QuantizeConfig)
    assert hasattr(_tfmot.Pruning, "conditional_mask_update")
