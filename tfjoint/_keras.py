"""The one place that imports Keras, checks what the user handed in, and reads Keras internals.

TF-MOT only works with Keras 2 (`tf_keras`). Setting `TF_USE_LEGACY_KERAS=1`
here, before TensorFlow is imported, makes `tf.keras` resolve to `tf_keras`
for the whole process. If TensorFlow was already imported with Keras 3
active, `tf.keras` stays Keras 3, but tfjoint (and TF-MOT, which also picks
`tf_keras` in that case) still work on models built with `tf_keras`.
"""

import os
import sys
from typing import Any, Callable, Iterable, Union

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402  (must follow the environment variable)
import tf_keras as keras  # noqa: E402

from tfjoint import errors  # noqa: E402

__all__ = [
    "keras", "tf", "check_float_model", "check_tf_keras_model", "is_tf_keras_model", "is_keras3_model",
    "weight_short_name", "serializable", "keras_history", "nodes_in_graph_order", "outbound_layers",
    "distribution_strategy_of", "is_graph_network", "own_trainable_weights", "set_own_trainable_weights",
    "own_non_trainable_weights", "is_keras3_functional", "is_keras3_layer_class", "nested_inputs_and_outputs",
    "selected_layer_names", "saved_model_metadata", "is_keras3_object", "public_symbol", "builtin_layer_class",
    "decoded_metadata", "tfmot_scope_objects", "safe_mode_scope", "replay", "flattened", "LayerSelector",
    "without_causal_padding",
    "PRIVATE_ATTRIBUTES", "PRIVATE_MODULES",
]

# Registers a class tfjoint adds to models for Keras serialization, as "tfjoint>ClassName", so that
# `load_model` needs no custom-object scope.
serializable = keras.utils.register_keras_serializable(package="tfjoint")

# Wrapper classes that mean "this model has already been through TF-MOT".
_WRAPPER_CLASS_NAMES = frozenset(
    {"PruneLowMagnitude", "QuantizeWrapper", "QuantizeWrapperV2", "QuantizeAnnotate", "QuantizeLayer"}
)


# --- Keras internals tfjoint reads (tests/test_tfmot_contract.py checks each still exists) ---------------------

# (what holds it, attribute): every private Keras attribute tfjoint reads, all through the functions below.
PRIVATE_ATTRIBUTES = (
    ("Functional model", "_nodes_by_depth"),
    ("Functional model", "_is_graph_network"),
    ("symbolic tensor", "_keras_history"),
    ("layer", "_outbound_nodes"),
    ("model", "_distribution_strategy"),
    ("variable", "_distribute_strategy"),
    ("layer", "_trainable_weights"),
    ("layer", "_non_trainable_weights"),
    ("Functional model", "_nested_inputs"),
    ("Functional model", "_nested_outputs"),
    ("causal convolution", "_is_causal"),
)


# Private modules imported (Keras 3's).
PRIVATE_MODULES = (("keras.src.models.functional", "Functional"), ("keras.src.api_export", "get_symbol_from_name"),
                   ("tensorflow.python.util.tf_export", "get_symbol_from_name"),
                   ("tf_keras.src.saving.object_registration", "_THREAD_LOCAL_CUSTOM_OBJECTS"),
                   ("tf_keras.src.saving.serialization_lib", "SafeModeScope"),
                   ("tf_keras.src.layers.serialization", "populate_deserializable_objects"),
                   ("tf_keras.src.saving.legacy.saved_model.json_utils", "decode"))


def nodes_in_graph_order(model) -> list:
    """The model's nodes from its inputs to its outputs (Keras's own depth order)."""
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):  # inputs have the highest depth
        nodes.extend(model._nodes_by_depth[depth])
    return nodes


def replay(model, inputs: list, call) -> list:
    """`model`'s graph run again on `inputs` (one per model input), each layer call made by `call(layer, args,
    kwargs)` (which may call the layer, another layer, or several): the outputs, one per model output.

    The graph is Keras's own (`_nodes_by_depth`), in depth order; a node's
    arguments are its recorded call's, with every Keras tensor mapped to the
    tensor the replay made for it.
    """
    made: dict[int, Any] = {id(tensor): new for tensor, new in zip(model.inputs, inputs)}

    def mapped(value):
        return made[id(value)] if id(value) in made else value

    for node in nodes_in_graph_order(model):
        if node.is_input:
            continue
        args = tf.nest.map_structure(mapped, node.call_args)
        kwargs = tf.nest.map_structure(mapped, node.call_kwargs)
        outputs = call(node.outbound_layer, args, kwargs)
        for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
            made[id(old)] = new
    return [made[id(tensor)] for tensor in model.outputs]


def _is_nested_graph(layer) -> bool:
    return isinstance(layer, keras.Model) and is_graph_network(layer) and bool(getattr(layer, "_nodes_by_depth", None))


def _flat_layer_names(model) -> list[str]:
    found, input_layers = [], [keras_history(tensor)[0] for tensor in model.inputs]
    for layer in model.layers:
        if _is_nested_graph(layer):
            found += _flat_layer_names(layer)
        elif not any(layer is input_layer for input_layer in input_layers):
            found.append(layer.name)
    return found


def _shared_names(model) -> list[str]:
    """The layer names two layers would share if `model`'s nested models were flattened."""
    names = _flat_layer_names(model)
    return sorted({name for name in names if names.count(name) > 1})


def flattened(model):
    """`model` with each nested Functional or Sequential model (a `keras.applications` base, say) replaced by its
    own layers, called in its place: the same layer objects, so the same weights and `trainable` flags. The model
    itself where nothing is nested, or where flattening would give two layers one name (left to the nested-model
    check's message).

    A nested model's call arguments other than its inputs (`training=False`) are not kept: tfjoint's fit trains
    the flattened layers as a layer of their own would be (a BatchNormalization made `trainable=False` still runs
    in inference mode).
    """
    if not is_graph_network(model) or not any(_is_nested_graph(layer) for layer in model.layers):
        return model

    if _shared_names(model):
        return model

    def call(layer, args, kwargs):
        if _is_nested_graph(layer):
            outputs = replay(layer, tf.nest.flatten(args[0]), call)
            return outputs[0] if len(outputs) == 1 else outputs
        return layer(*args, **kwargs)

    outputs = replay(model, list(model.inputs), call)
    inputs, structure = nested_inputs_and_outputs(model)
    return keras.Model(inputs, tf.nest.pack_sequence_as(structure, outputs), name=model.name)


def nested_inputs_and_outputs(model):
    """A Functional model's inputs and outputs in the structure it was built with (a dict of named outputs, say)."""
    return model._nested_inputs, model._nested_outputs


def keras_history(tensor):
    """(layer, node_index, tensor_index) of the layer call that produced a symbolic tensor."""
    return tensor._keras_history


def outbound_layers(layer) -> list:
    """The layers that consume `layer`'s outputs, one per call."""
    return [node.outbound_layer for node in layer._outbound_nodes]


def distribution_strategy_of(model):
    """The tf.distribute strategy a model's variables were created under, or None."""
    strategy = getattr(model, "_distribution_strategy", None)
    if strategy is None and model.weights:
        strategy = getattr(model.weights[0], "_distribute_strategy", None)
    return strategy


def is_graph_network(model) -> bool:
    """Whether a model is Functional (a graph of layers), as opposed to subclassed."""
    return bool(getattr(model, "_is_graph_network", False))


def own_trainable_weights(layer) -> list:
    """The trainable variables a layer tracks itself (not those of layers it holds)."""
    return layer._trainable_weights


def set_own_trainable_weights(layer, variables: list) -> None:
    layer._trainable_weights = list(variables)


def without_causal_padding(layer) -> None:
    """Makes a causal convolution pad nothing (its input then carries the frames the padding stood for)."""
    layer.padding = "valid"
    layer._is_causal = False


def own_non_trainable_weights(layer) -> list:
    return layer._non_trainable_weights


LayerSelector = Union[Iterable[str], Callable[[keras.layers.Layer], bool], None]


def selected_layer_names(model, selector: LayerSelector, argument: str) -> set[str] | None:
    """The names of the layers a list of names or a predicate selects; None (all) for None.

    Raises:
      errors.ConfigError: a bare string, or names the model does not have.
    """
    if selector is None:
        return None
    if callable(selector):
        return {layer.name for layer in model.layers if selector(layer)}
    if isinstance(selector, str):
        raise errors.ConfigError(
            f"`{argument}` must be a list of layer names or a predicate; received the string {selector!r}. "
            f"Write [{selector!r}]."
        )
    names = set(selector)
    known = {layer.name for layer in model.layers}
    unknown = sorted(names - known)
    if unknown:
        raise errors.ConfigError(
            f"`{argument}` names layers that model '{model.name}' does not have: {unknown}. "
            f"Its layers are: {sorted(known)}."
        )
    return names


def weight_short_name(variable) -> str:
    """'quant_dense/kernel_min:0' -> 'kernel_min': unique within a layer, stable across re-cloning."""
    return variable.name.split(":")[0].split("/")[-1]


def is_tf_keras_model(obj) -> bool:
    """True if `obj` is a `tf_keras.Model` (not a Keras 3 one)."""
    return isinstance(obj, keras.Model)


def is_keras3_functional(model3) -> bool:
    """Whether a Keras 3 model is Functional (Keras 3 exposes no public Functional class)."""
    from keras.src.models.functional import Functional  # Keras 3's private module path

    return isinstance(model3, Functional)


def is_keras3_model(obj) -> bool:
    """True if `obj` is a Keras 3 model (`keras` 3.x, or `tf.keras` on TF >= 2.16 without the legacy flag)."""
    if isinstance(obj, keras.Model):
        return False
    keras3 = sys.modules.get("keras")  # a Keras 3 model in hand means Keras 3 is already imported
    return keras3 is not None and isinstance(getattr(keras3, "Model", None), type) and isinstance(obj, keras3.Model)


def saved_model_metadata(directory: str) -> list[dict]:
    """The JSON metadata tf_keras keeps per object of a SavedModel (`keras_metadata.pb`), parsed (no code runs).

    In object order (the root model first); each document gains `"_identifier"` (`_tf_keras_layer`,
    `_tf_keras_model`, ...) and `"_node_path"`.
    """
    import json

    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    with open(os.path.join(directory, "keras_metadata.pb"), "rb") as handle:
        metadata.ParseFromString(handle.read())
    found = []
    for node in sorted(metadata.nodes, key=lambda node: node.node_id):
        try:
            document = json.loads(node.metadata)
        except ValueError:
            continue
        if isinstance(document, dict):
            document = dict(document, _identifier=node.identifier, _node_path=node.node_path)
        found.append(document)
    return found


def public_symbol(api_name: str, keras3: bool = False):
    """The object a Keras public API name (`keras.layers.Dense`, `math.add`) stands for in the loader's own export
    table (TensorFlow's for tf_keras and TF symbols, Keras 3's with `keras3`), or None. Nothing is imported."""
    if keras3:
        from keras.src import api_export

        return api_export.get_symbol_from_name(api_name)
    from tensorflow.python.util import tf_export

    return tf_export.get_symbol_from_name(api_name)


def decoded_metadata(document):
    """A part of a SavedModel's metadata as tf_keras's loader reads it (tuples, shapes and specs decoded by name;
    nothing deserialized)."""
    import json

    from tf_keras.src.saving.legacy.saved_model import json_utils

    return json_utils.decode(json.dumps(document))


def builtin_layer_class(name: str):
    """The tf_keras layer or model class the legacy deserializer knows by `name` (TFOpLambda, Functional, ...)."""
    from tf_keras.src.layers import serialization

    serialization.populate_deserializable_objects()
    return serialization.LOCAL.ALL_OBJECTS.get(name)


_TFMOT_SCOPE_OBJECTS: dict = {}


def tfmot_scope_objects() -> dict:
    """The objects TF-MOT's `quantize_scope()` and `prune_scope()` make known by name (read once)."""
    if not _TFMOT_SCOPE_OBJECTS:
        import tensorflow_model_optimization as tfmot
        from tf_keras.src.saving import object_registration

        for scope in (tfmot.quantization.keras.quantize_scope, tfmot.sparsity.keras.prune_scope):
            with scope():
                _TFMOT_SCOPE_OBJECTS.update(dict(object_registration._THREAD_LOCAL_CUSTOM_OBJECTS.__dict__))
    return dict(_TFMOT_SCOPE_OBJECTS)


def safe_mode_scope(on: bool = True):
    """tf_keras's own safe mode (no Python lambda from a file) for the loads within the block; thread-local."""
    from tf_keras.src.saving import serialization_lib

    return serialization_lib.SafeModeScope(on)


def is_keras3_object(obj) -> bool:
    """True if `obj` is an object of Keras 3 (`keras` 3.x: an optimizer, a loss, ...), not of tf_keras."""
    return type(obj).__module__.split(".")[0] == "keras" and hasattr(obj, "get_config")


def is_keras3_layer_class(cls) -> bool:
    """True if `cls` is a Keras 3 layer class (`keras.layers.Layer` of Keras 3.x)."""
    if not isinstance(cls, type) or issubclass(cls, keras.layers.Layer):
        return False
    try:
        import keras as keras3
    except ImportError:
        return False
    layer = getattr(getattr(keras3, "layers", None), "Layer", None)
    return isinstance(layer, type) and issubclass(cls, layer)


def _describe_foreign_model(obj) -> str | None:
    """Explains why `obj` is not a tf_keras model, or None if it is one."""
    if is_tf_keras_model(obj):
        return None
    if is_keras3_model(obj):
        return (
            f"model '{getattr(obj, 'name', '?')}' is a Keras 3 model ({type(obj).__module__}."
            f"{type(obj).__name__}); this step needs the tf_keras model. Convert it first with "
            "tfjoint.from_keras3(model) (tfjoint.prepare and tfjoint.load_model do that for you)."
        )
    return (
        f"expected a Keras model (a tf_keras.Model), received {type(obj).__module__}.{type(obj).__name__} "
        f"{obj!r:.60}. Pass the model object itself (load a file with tfjoint.load_model)."
    )


def check_tf_keras_model(model, *, argument: str = "model") -> None:
    """Raises `errors.ModelTypeError` if `model` is not a tf_keras Model."""
    reason = _describe_foreign_model(model)
    if reason is not None:
        raise errors.ModelTypeError(f"`{argument}`: {reason}")


def check_float_model(model, *, argument: str = "model") -> None:
    """Checks that `model` is a plain tf_keras Sequential/Functional float model.

    Raises:
      errors.ModelTypeError: a Keras 3 model, a non-model, or a subclassed model.
      errors.ModelStructureError: an unbuilt model, a nested model, or one that
        already holds TF-MOT pruning/quantization wrappers.
    """
    check_tf_keras_model(model, argument=argument)
    if not isinstance(model, keras.Sequential) and not is_graph_network(model):
        raise errors.ModelTypeError(
            f"`{argument}`: model '{model.name}' is a subclassed model ({type(model).__name__}). "
            "TF-MOT can only rewrite Sequential and Functional models: rebuild it with the "
            "Functional API (keras.Input(...) -> layers -> keras.Model(inputs, outputs))."
        )
    if not model.built:
        raise errors.ModelStructureError(
            f"`{argument}`: model '{model.name}' is not built. Give its first layer an input "
            "shape (or call model.build(input_shape)) before tfjoint.prepare."
        )
    for layer in model.layers:
        if any(cls.__name__ in _WRAPPER_CLASS_NAMES for cls in type(layer).__mro__):
            raise errors.ModelStructureError(
                f"`{argument}`: layer '{layer.name}' of model '{model.name}' is a TF-MOT "
                f"{type(layer).__name__}: the model is already pruned or quantized. Pass the "
                "original float model (or tfjoint.strip the prepared one before exporting)."
            )
        if isinstance(layer, keras.Model):
            raise errors.ModelStructureError(
                f"`{argument}`: layer '{layer.name}' of model '{model.name}' is a nested model tfjoint cannot "
                "flatten (a subclassed model, or one whose layers share names with the outer model's: "
                f"{', '.join(_shared_names(model)) or 'none shared'}). TF-MOT cannot rewrite nested models: build "
                "the outer model on "
                f"`{layer.name}`'s layers directly (keras.Model(inner.input, head(inner.output))), with unique "
                "layer names."
            )
