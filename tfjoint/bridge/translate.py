"""Rebuild a Keras 3 Sequential or Functional model in tf_keras from its config, and copy its weights.

Keras 3 and tf_keras share layer classes and weight order for the standard
layers, but not their config format. Translated here:

* `InputLayer`: `batch_shape` -> `batch_input_shape` (`optional` dropped);
* dtype policies: `{"class_name": "DTypePolicy", "config": {"name": ...}}` -> the name;
* nested objects (initializers, regularizers, constraints): Keras 3's
  `{module, class_name, config, registered_name}` -> tf_keras's `{class_name, config}`;
* renamed arguments (LeakyReLU's `negative_slope` is tf_keras's `alpha`);
* config keys the tf_keras class does not take: dropped when they hold the
  Keras 3 default (e.g. Dense's `quantization_config=None`, an initializer's
  `input_axes=None`), an `UnsupportedLayerError` when they hold anything else;
* the graph: Keras 3 inbound nodes (`{"args": [{"class_name": "__keras_tensor__",
  "config": {"keras_history": [layer, node, tensor]}}], "kwargs": {...}}`) are
  replayed by calling the tf_keras layers on the tf_keras tensors they name.

* nested models: flattened (their layers replayed in the outer graph);
* raw `keras.ops` arithmetic on symbolic tensors: `x + 3.0` becomes an
  `Affine` layer, `a + b` an `Add` (MobileNetV3, ConvNeXt);
* the activations tf_keras lacks or computes differently: `hard_silu` /
  `hard_swish` as `HardSwish`; Keras 3's `hard_sigmoid`, `relu6(x + 3) / 6`
  (tf_keras's is `0.2 x + 0.5`, clipped) as the layers MobileNetV3's raw form
  becomes: `Affine(+3)`, `ReLU(6)`, `Affine(/6)`;
* keras.applications' own custom layers: `CustomScaleLayer` (an Affine and an
  Add), `LayerScale` (an Affine holding its gamma).

What cannot be translated (other custom layers, Lambda, other raw ops, unknown
activations) is collected and refused together, every offending layer named
with its class.
"""

import inspect
import re
from typing import Any

import numpy as np
from absl import logging

from tfjoint import errors
from tfjoint._keras import keras, tf
from tfjoint.registry import kind_of
from tfjoint.registry.array_ops import ELEMENTWISE_OPS, KERAS3_OPS, OpUntranslatable, Slice
from tfjoint.registry.keras3_layers import Arrays, Rebuilt, activation_ok, layer_call, register_keras3_layers
from tfjoint.registry.own_layers import Affine, HardSwish, Keras3Layer
from tfjoint.registry.table import registered_class
from tfjoint.registry.transformer import PositionEmbedding, TakeStep

__all__ = ["rebuild_in_tf_keras", "untranslatable_layers"]

# Keyword arguments every tf_keras layer accepts through `Layer.__init__(**kwargs)`.
_BASE_LAYER_KWARGS = frozenset({
    "name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape", "batch_size",
    "weights", "activity_regularizer", "autocast", "implementation",
})
_KERAS_TENSOR = "__keras_tensor__"


def _accepted_arguments(cls) -> set[str]:
    """Every named parameter of `cls.__init__` and of the `__init__`s it forwards **kwargs to."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return (names | _BASE_LAYER_KWARGS) - {"self"}


def _defaults(cls) -> dict[str, Any]:
    defaults = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is not None:
            for p in inspect.signature(init).parameters.values():
                if p.default is not p.empty:
                    defaults[p.name] = p.default
    return defaults


def _same_value(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


def _is_keras3_object(value) -> bool:
    return isinstance(value, dict) and "class_name" in value and "config" in value


def _translate_object(value, where: str):
    """A nested Keras 3 object (initializer, regularizer, constraint, dtype policy) for tf_keras."""
    class_name = value["class_name"]
    if class_name in ("DTypePolicy", "FloatDTypePolicy"):
        return value["config"]["name"]
    if value.get("registered_name") not in (None, class_name):
        raise _Untranslatable(f"{where} is a custom object '{value['registered_name']}'")
    config = {k: _translate_value(v, where) for k, v in (value["config"] or {}).items()}
    tf_class = _tf_keras_object_class(class_name)
    if tf_class is None:
        raise _Untranslatable(f"{where} is a {class_name}, which tf_keras does not have")
    accepted = {p for p in inspect.signature(tf_class.__init__).parameters} - {"self"}
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(tf_class.__init__).parameters.values())
    if not has_kwargs:
        for key in sorted(set(config) - accepted):
            if config[key] is not None:
                raise _Untranslatable(f"{where}.{key}={config[key]!r} has no tf_keras equivalent")
            del config[key]
    return {"class_name": class_name, "config": config}


def _tf_keras_object_class(class_name: str):
    for module in (keras.initializers, keras.regularizers, keras.constraints):
        cls = getattr(module, class_name, None)
        if inspect.isclass(cls):
            return cls
    return None


def _translate_value(value, where: str):
    if _is_keras3_object(value) and value.get("class_name") != _KERAS_TENSOR:
        return _translate_object(value, where)
    if isinstance(value, dict):
        return {k: _translate_value(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_translate_value(v, where) for v in value]
    return value


class _Untranslatable(Exception):
    """One reason a layer cannot be rebuilt; collected and reported together."""


_CONSTANT_TENSOR = "__tensor__"
_REGISTER_ADVICE = (
    "register it with keras.saving.register_keras_serializable and tell tfjoint how it is quantized and how its "
    "channels follow: tfjoint.register_layer(YourLayer, quantization=tfjoint.registry.Quantization.output_only(), "
    "channels=...); or rewrite it with built-in layers")
_CUSTOM_LAYER_ADVICE = (
    "{what} tfjoint cannot rebuild from its sublayers (a layer whose call() uses only Keras layers and keras.ops "
    "arithmetic, like keras.io's TransformerBlock, is rebuilt from them). Either make its call() use only those, "
    "or " + _REGISTER_ADVICE)


def _custom_what(entry) -> str:
    return f"'{entry.get('registered_name') or entry['class_name']}' from {entry.get('module') or 'an unknown module'}"


def _layer_class(entry) -> type:
    class_name = entry["class_name"]
    module = entry.get("module") or ""
    if class_name == "Lambda":
        raise _Untranslatable("Lambda layers hold Python code that cannot be moved between Keras versions: "
                              "replace it with a built-in layer")
    if not module.startswith("keras.layers") and not module.startswith("keras.src.layers"):
        raise _Untranslatable(_CUSTOM_LAYER_ADVICE.format(what=f"it is {_custom_what(entry)}, a custom layer"))
    cls = getattr(keras.layers, class_name, None)
    if not inspect.isclass(cls):
        raise _Untranslatable(f"tf_keras has no layer {class_name}")
    return cls


def _translated_layer_config(entry, layer3) -> tuple[type, dict]:
    cls = _layer_class(entry)
    kind = kind_of(cls)  # its registry entry says which arguments Keras 3 renamed or reads from **kwargs
    if kind is not None and kind.quantization.refused:  # said now, not as a failure to rebuild what it wraps
        raise _Untranslatable(kind.quantization.refused)
    renamed = kind.keras3.renamed_arguments if kind is not None else {}
    kwargs_defaults = kind.keras3.kwargs_defaults if kind is not None else {}
    where = f"layer '{entry['config'].get('name', entry.get('name'))}'"
    config = {k: _translate_value(v, f"{where} argument '{k}'") for k, v in entry["config"].items()}
    for keras3_name, tf_keras_name in renamed.items():
        if keras3_name in config:
            config[tf_keras_name] = config.pop(keras3_name)
    if "activation" in config and not activation_ok(config["activation"]):
        raise _Untranslatable(f"its activation {config['activation']!r} is not one tf_keras knows")
    accepted = _accepted_arguments(cls)
    keras3_defaults = dict(_defaults(type(layer3)) if layer3 is not None else {}, **kwargs_defaults)
    for key in sorted(set(config) - accepted):
        value = config.pop(key)
        if value is not None and key in keras3_defaults and not _same_value(value, keras3_defaults[key]):
            raise _Untranslatable(f"its argument {key}={value!r} has no tf_keras equivalent")
        if value is not None and key not in keras3_defaults:
            raise _Untranslatable(f"its argument {key}={value!r} has no tf_keras equivalent")
    return cls, config


def _input_tensor(entry, fixed_shapes: dict | None = None):
    """The tf_keras Input of a Keras 3 InputLayer entry; `fixed_shapes` (name -> shape without the batch) fills in
    the axes the model leaves unknown (a sequence length: integer files need fixed shapes)."""
    config = dict(entry["config"])
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    name = config.get("name", entry.get("name"))
    fixed = (fixed_shapes or {}).get(name)
    if fixed is not None and shape is not None:
        shape = [shape[0]] + [d if d is not None else f for d, f in zip(shape[1:], fixed)]
    dtype = config.get("dtype") or "float32"
    dtype = _translate_value(dtype, "input") if isinstance(dtype, dict) else dtype
    return keras.Input(batch_shape=tuple(shape or ()), dtype=dtype, name=name, sparse=config.get("sparse", False),
                       ragged=config.get("ragged", False))


def _resolve(value, tensors):
    """Replaces Keras 3 tensor references in call arguments by the tf_keras tensors built so far."""
    if isinstance(value, dict) and value.get("class_name") == _KERAS_TENSOR:
        return tensors[tuple(value["config"]["keras_history"])]
    if isinstance(value, dict):
        return {k: _resolve(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolve(v, tensors) for v in value]
    return value


def _references(value) -> list[tuple]:
    if isinstance(value, dict) and value.get("class_name") == _KERAS_TENSOR:
        return [tuple(value["config"]["keras_history"])]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _references(v)]
    return []


def _endpoints(spec) -> list[tuple]:
    """Keras 3 writes one endpoint as [name, node, tensor], several as a list of those, or a dict of them."""
    if isinstance(spec, dict):
        return [tuple(item) for item in spec.values()]
    if spec and isinstance(spec[0], str):
        return [tuple(spec)]
    return [tuple(item) for item in spec]


def _structured(spec, tensors: list):
    """`tensors` (in `_endpoints(spec)` order) in the structure Keras 3 gave: a dict, a list or one tensor."""
    if isinstance(spec, dict):
        return dict(zip(spec, tensors))
    return tensors if len(tensors) > 1 else tensors[0]


# --- One Keras 3 layer (or raw op, or nested model) -> what replays it in tf_keras --------------------------

def _standard(entry, layer3) -> Rebuilt:
    kind = kind_of(_layer_class(entry))
    if kind is not None and kind.keras3.translate is not None:  # a config tf_keras cannot read: its entry rebuilds it
        layer = kind.keras3.translate(entry["config"], layer3)
        return Rebuilt(layer_call(layer), [(layer, layer3)] if layer3 is not None else [])
    fused = entry["config"].get("activation")
    if fused in _ACTIVATION_LAYERS:  # tf_keras lacks it or computes it otherwise: the layer, linear, then layers
        entry = dict(entry, config=dict(entry["config"], activation="linear"))
    cls, config = _translated_layer_config(entry, layer3)
    layer = cls.from_config(config)  # type: ignore[attr-defined]  # a tf_keras layer class
    if kind is not None and kind.quantization.check is not None:
        try:
            reason = kind.quantization.check(layer)
        except Exception:  # noqa: BLE001  (a check that needs the built layer: prepare runs it on the rebuilt model)
            reason = None
        if reason:  # said for this layer, not as the raw ops Keras 3 wrote around it (an Embedding's mask)
            raise _Untranslatable(reason)
    weights = [(layer, layer3)] if layer3 is not None else []
    if fused in _ACTIVATION_LAYERS:
        after = _ACTIVATION_LAYERS[fused](f"{config['name']}_{fused}", None)
        return Rebuilt(lambda args, kwargs: _chained(after, layer(*args, **kwargs)), weights)
    return Rebuilt(layer_call(layer), weights)


def _chained(layers: list, x):
    for layer in layers:
        x = layer(x)
    return x


def _hard_swish_layers(name: str, dtype) -> list:
    return [HardSwish(name=name, dtype=dtype)]


def _hard_sigmoid_layers(name: str, dtype) -> list:
    """Keras 3's hard_sigmoid, `relu6(x + 3) / 6`, as the layers MobileNetV3's raw-op form of it becomes (TFLM has
    no HARD_SIGMOID, and tf_keras's `hard_sigmoid` is `0.2 x + 0.5`, clipped)."""
    return [Affine(scale=1.0, offset=3.0, name=f"{name}_plus_3", dtype=dtype),
            keras.layers.ReLU(6.0, name=f"{name}_relu6", dtype=dtype),
            Affine(scale=1.0 / 6.0, offset=0.0, name=name, dtype=dtype)]


# Keras 3 activations that tf_keras lacks or computes differently, by name: the tf_keras layers that compute them.
_ACTIVATION_LAYERS = {"hard_silu": _hard_swish_layers, "hard_swish": _hard_swish_layers,
                      "hard_sigmoid": _hard_sigmoid_layers}


def _activation_layer(entry) -> Rebuilt:
    """An `Activation` layer whose activation is in `_ACTIVATION_LAYERS`: its layers, the last one named as it."""
    config = entry["config"]
    layers = _ACTIVATION_LAYERS[config["activation"]](config["name"], _translate_value(config.get("dtype"), "dtype"))
    return Rebuilt(lambda args, kwargs: _chained(layers, args[0]), [])


_TENSOR_OPS = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply", "Maximum": "Maximum",
               "Minimum": "Minimum"}
_SCALAR_OPS = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _arithmetic(entry) -> bool:
    """Whether a raw op node is elementwise arithmetic of two tensors, or of a tensor and a number (`Affine`)."""
    op = entry["class_name"]
    for node in entry.get("inbound_nodes", []):
        args = node.get("args", [])
        if node.get("kwargs") or len(args) != 2:
            return False
        tensors = [arg for arg in args if _references(arg)]
        numbers = [arg for arg in args if _is_number(arg)]
        if not ((len(tensors) == 2 and op in _TENSOR_OPS) or (len(tensors) == 1 and len(numbers) == 1
                                                              and op in _SCALAR_OPS)):
            return False
    return True


def _get_item(entry) -> Rebuilt:
    """`x[:, i]` (one step of a sequence, as a BERT pools its first token): tfjoint's `TakeStep`; any other slice
    or index that keeps the batch axis whole: `Slice`."""
    name = entry["config"].get("name", entry.get("name"))
    node = entry.get("inbound_nodes", [{}])[0]
    args = node.get("args", [])
    index = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else None
    full = {"class_name": "__slice__", "config": {"start": None, "stop": None, "step": None}}
    if not index or index[0] != full:
        raise _Untranslatable("it is a raw slice tfjoint cannot rebuild (it rebuilds slices that keep the batch "
                              "axis whole, x[:, ...]): use a Keras layer")
    if len(index) >= 2 and isinstance(index[1], int) and all(part == full for part in index[2:]):
        layer = TakeStep(index[1], name=name)
        return Rebuilt(lambda call_args, kwargs: layer(call_args[0]), [])
    spec: list = []
    for part in index[1:]:
        if isinstance(part, int):
            spec.append(part)
        elif isinstance(part, dict) and part.get("class_name") == "__slice__":
            spec.append([part["config"].get("start"), part["config"].get("stop"), part["config"].get("step")])
        else:
            raise _Untranslatable(f"it slices with {part!r}, which tfjoint cannot rebuild (indices and start:stop:step "
                                  "slices are): use a Keras layer")
    sliced = Slice(spec, name=name)
    return Rebuilt(lambda call_args, kwargs: sliced(call_args[0]), [])


def _snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()  # ExtractPatches -> extract_patches


def _op_call(entry) -> str:
    """How the user wrote a raw op node: `keras.ops.zeros_like`, `keras.ops.image.extract_patches`."""
    namespace = (entry.get("module") or "").removeprefix("keras.src.ops").strip(".").split(".")[0]
    return ".".join(["keras.ops"] + ([namespace] if namespace not in ("", "numpy", "core", "nn", "math") else [])
                    + [_snake(entry["class_name"])])


def _from_table(entry) -> Rebuilt:
    """A raw op the registry's `KERAS3_OPS` table rebuilds (reshape, transpose, matmul, softmax, expand_dims,
    zeros_like, arithmetic with a constant array, ...)."""
    op, name = entry["class_name"], entry["config"].get("name", entry.get("name"))
    nodes = entry.get("inbound_nodes", [])
    if len(nodes) != 1:
        raise _Untranslatable(f"it is a raw {_op_call(entry)} call used more than once")
    args = nodes[0].get("args", [])
    constants = [(value, position) for position, value in enumerate(_constant(arg) for arg in args)
                 if value is not None]
    try:
        build = KERAS3_OPS[op](entry["config"], name, args, constants)
    except OpUntranslatable as reason:
        raise _Untranslatable(f"it is a raw {_op_call(entry)} call tfjoint cannot rebuild: {reason}") from None

    def call(call_args, kwargs):
        tensors = [arg for arg in call_args if _constant(arg) is None and not _is_number(arg)
                   and not isinstance(arg, (list, tuple, dict, np.ndarray))]
        try:
            return build(tensors)
        except OpUntranslatable as reason:
            raise errors.UnsupportedLayerError(f"raw {_op_call(entry)} call '{name}': {reason}.") from None

    return Rebuilt(call, [])


def _raw_op(entry, layer3) -> Rebuilt:
    """`x + 3.0` becomes an `Affine` layer; `a + b` of two tensors the matching merge layer (named like the op);
    the ops of `KERAS3_OPS` their layers; anything else is refused, naming what is rebuilt."""
    op, name = entry["class_name"], entry["config"].get("name", entry.get("name"))
    if not _arithmetic(entry):
        if op in KERAS3_OPS:
            return _from_table(entry)
        raise _Untranslatable(f"it is a raw {_op_call(entry)} call tfjoint cannot rebuild; it rebuilds "
                              "elementwise arithmetic (of two tensors, or with a number or a constant array) and "
                              f"{', '.join(sorted(_snake(k) for k in KERAS3_OPS if k not in ELEMENTWISE_OPS))}: use "
                              "a Keras layer for the rest")

    def call(args, kwargs):
        tensors = [arg for arg in args if not _is_number(arg)]
        if len(tensors) == 2:
            return getattr(keras.layers, _TENSOR_OPS[op])(name=name)(tensors)
        number = float(next(arg for arg in args if _is_number(arg)))
        tensor_first = not _is_number(args[0])
        scale, offset = {
            "Add": (1.0, number),
            "Subtract": (1.0, -number) if tensor_first else (-1.0, number),
            "Multiply": (number, 0.0),
        }.get(op, (1.0 / number, 0.0) if tensor_first else (None, None))
        if scale is None:
            raise errors.UnsupportedLayerError(f"raw op '{name}' divides a number by a tensor, which tfjoint cannot "
                                               "quantize: use a Keras layer.")
        return Affine(scale=scale, offset=offset, name=name)(tensors[0])

    return Rebuilt(call, [])


_KERAS_MODULES = ("keras.", "keras_hub")  # Keras's and keras_hub's own classes (and module "keras" itself)


def _nested(entry, layer3) -> Rebuilt:
    """A Keras 3 model used as a layer: its layers are replayed in the outer graph (flattened)."""
    if layer3 is None:
        raise _Untranslatable("it is a nested model whose layers are not available")
    graph = _Graph(layer3, graph_config(layer3, entry["config"]))
    if graph.problems:
        raise _Untranslatable("; ".join(graph.problems))
    return Rebuilt(lambda args, kwargs: graph.replay(args[0] if len(args) == 1 else list(args)), graph.weights)


def _constant(value) -> np.ndarray | None:
    """A constant tensor Keras 3 wrote into a node's arguments (`{"class_name": "__tensor__", ...}`), or None."""
    if isinstance(value, dict) and value.get("class_name") == _CONSTANT_TENSOR:
        config = value["config"]
        return np.asarray(config["value"], dtype=config.get("dtype") or "float32")
    return None


def _position_adds(config, layer3) -> dict[str, Rebuilt]:
    """In a traced composite: `x + table[:steps]` where `table` is an Embedding of the composite called on
    `arange(steps)` outside the graph (keras.io's TokenAndPositionEmbedding and its ViT's PatchEncoder) becomes
    tfjoint's `PositionEmbedding` holding that table (trained and quantized as the embedding it is), added to `x`."""
    import keras as keras3

    tables = [(sub, sub.get_weights()[0]) for sub in _sublayers(layer3) if isinstance(sub, keras3.layers.Embedding)]
    found = {}
    for entry in config["layers"]:
        if entry["class_name"] != "Add" or not (entry.get("module") or "").startswith("keras.src.ops"):
            continue
        args = entry["inbound_nodes"][0].get("args", [])
        constants = [c for c in (_constant(arg) for arg in args) if c is not None]
        if len(args) != 2 or len(constants) != 1:
            continue
        rows = constants[0][0] if constants[0].ndim == 3 and len(constants[0]) == 1 else constants[0]
        if rows.ndim != 2:  # `table(arange(steps))`, or `table(expand_dims(arange(steps), 0))` (keras.io's ViT)
            continue
        match = next(((sub, table) for sub, table in tables if table.shape[1] == rows.shape[1]
                      and table.shape[0] >= rows.shape[0] and np.array_equal(table[:rows.shape[0]], rows)), None)
        if match is None:
            continue
        sub, table = match
        name = entry["config"].get("name", entry.get("name"))
        positions = PositionEmbedding(table.shape[0], name=f"{layer3.name}_{sub.name}")

        def call(call_args, kwargs, positions=positions, name=name):
            tensor = next(arg for arg in call_args if _constant(arg) is None and not isinstance(arg, np.ndarray))
            return keras.layers.Add(name=name)([tensor, positions(tensor)])

        found[name] = Rebuilt(call, [(positions, Arrays(positions.name, [table]))])
    return found


def _sublayers(layer3) -> list:
    """The layers a Keras 3 layer holds (its attributes that are layers, nested ones included)."""
    import keras as keras3

    found, seen, stack = [], set(), [layer3]
    while stack:
        current = stack.pop()
        for value in vars(current).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, keras3.layers.Layer) and id(item) not in seen and item is not layer3:
                    seen.add(id(item))
                    found.append(item)
                    stack.append(item)
    return found


def _composite(entry, layer3) -> Rebuilt:
    """A custom Keras 3 layer made of layers tfjoint knows (keras.io's TransformerBlock): its `call` traced on
    symbolic inputs into a graph of its sublayers, which is rebuilt as any graph (each sublayer pruned and
    quantized as itself)."""
    import keras as keras3

    if layer3 is None:
        raise _Untranslatable("it is a custom layer whose object is not available (build the model first)")
    nodes = entry.get("inbound_nodes", [])
    specs = [arg for arg in (nodes[0].get("args", []) if nodes else []) if _references(arg)]
    if not nodes and (entry.get("build_config") or {}).get("input_shape"):  # a layer of a Sequential: no nodes
        specs = [{"config": {"shape": entry["build_config"]["input_shape"], "dtype": layer3.input_dtype}}]
    elif len(nodes) != 1 or not specs or any(not isinstance(arg, dict) for arg in specs):
        raise _Untranslatable(_CUSTOM_LAYER_ADVICE.format(what=_custom_what(entry)))
    held = {id(weight) for sub in _sublayers(layer3) for weight in sub.weights}
    own = [weight.path or weight.name for weight in layer3.weights if id(weight) not in held]
    if own:  # traced, they would become constants: the fit would not train them
        raise _Untranslatable(
            f"{_custom_what(entry)} is a custom layer with weights of its own ({', '.join(own)}), which tfjoint "
            "cannot train once the layer is rebuilt from its call(): hold them in a Keras layer (an Embedding for a "
            "table of positions, a Dense for a projection), or " + _REGISTER_ADVICE)
    inputs = [keras3.Input(batch_shape=tuple(spec["config"]["shape"]), dtype=spec["config"].get("dtype"))
              for spec in specs]
    try:
        outputs = layer3.call(*inputs)
        traced = keras3.Model(inputs, outputs, name=layer3.name)
    except Exception as error:  # noqa: BLE001  (any failure of the user's code on symbolic inputs)
        raise _Untranslatable(f"{_custom_what(entry)} is a custom layer; tracing its call() on symbolic inputs, to "
                              f"rebuild it from its sublayers, failed ({type(error).__name__}: {error}). "
                              + _CUSTOM_LAYER_ADVICE.format(what="it")) from error
    config = traced.get_config()
    graph = _Graph(traced, config, _position_adds(config, layer3))
    if graph.problems:
        raise _Untranslatable(f"{_custom_what(entry)} is a custom layer rebuilt from its call(), and part of it "
                              "cannot be: " + "; ".join(graph.problems) + ". Either make its call() use only Keras "
                              "layers and the keras.ops tfjoint rebuilds, or " + _REGISTER_ADVICE)
    logging.info("tfjoint: custom layer '%s' (%s) rebuilt from its sublayers: %s", layer3.name,
                 type(layer3).__name__, ", ".join(e.get("name") or e["config"]["name"] for e in graph.entries))
    return Rebuilt(lambda args, kwargs: graph.replay(args[0] if len(args) == 1 else list(args)), graph.weights)


def _is_nested_model(entry, layer3=None) -> bool:
    if layer3 is not None and _is_keras3_model_object(layer3):
        return True
    module = entry.get("module") or ""
    return entry["class_name"] in ("Functional", "Sequential", "Model") or module.startswith("keras.src.models") \
        or (module == "keras" and entry["class_name"] in ("Sequential", "Functional"))


def _registered_keras3_class(entry):
    """The user's Keras 3 layer class of `entry`, if it has a tfjoint registry entry (else None)."""
    import keras as keras3

    name = entry.get("registered_name") or entry["class_name"]
    cls = keras3.saving.get_registered_object(name)
    kind = kind_of(cls) if cls is not None else None
    return cls if kind is not None and kind.keras3.rebuild is None else None  # rebuilt ones are not hosted


def _hosted(entry, layer3) -> Rebuilt:
    """A registered Keras 3 custom layer, run as it is inside the tf_keras model (`Keras3Layer`)."""
    import keras as keras3

    if layer3 is None:
        raise _Untranslatable("its Keras 3 layer object is not available (build the model before bridging it)")
    layer = Keras3Layer(keras3.saving.serialize_keras_object(layer3), name=layer3.name)
    return Rebuilt(layer_call(layer), [(layer, layer3)])


def _rebuilder(entry, layer3) -> Rebuilt:
    """The rebuilder of one config entry; raises `_Untranslatable` with the reason."""
    module = entry.get("module") or ""
    kind = kind_of(layer3) if layer3 is not None and registered_class(layer3) is type(layer3) else None
    if kind is not None and kind.keras3.rebuild is not None:  # a Keras 3 layer with no tf_keras twin (keras_hub's)
        try:
            return kind.keras3.rebuild(entry, layer3)
        except OpUntranslatable as reason:
            raise _Untranslatable(str(reason)) from None
    if entry.get("registered_name") not in (None, entry["class_name"]) and _registered_keras3_class(entry):
        return _hosted(entry, layer3)  # a custom Keras 3 layer of the user's, registered with tfjoint
    if _is_nested_model(entry, layer3):
        return _nested(entry, layer3)
    if module.startswith("keras.src.ops") and entry["class_name"] == "GetItem":
        return _get_item(entry)
    if module.startswith("keras.src.ops"):
        return _raw_op(entry, layer3)
    if module != "keras" and not module.startswith(_KERAS_MODULES) and layer3 is not None:
        return _composite(entry, layer3)  # a user's layer made of layers and keras.ops: rebuilt from them
    if entry["class_name"] == "Activation" and entry["config"].get("activation") in _ACTIVATION_LAYERS:
        return _activation_layer(entry)
    return _standard(entry, layer3)


class _Graph:
    """A Keras 3 Functional or Sequential (sub)model, rebuilt layer by layer in tf_keras.

    Every entry that cannot be rebuilt is collected in `problems` (all named
    at once); `replay(inputs)` runs the rebuilt layers on tf_keras tensors.
    """

    def __init__(self, model3, config, overrides: dict[str, "Rebuilt"] | None = None):
        self.config = config
        self.functional = "input_layers" in config
        layers3 = {layer.name: layer for layer in getattr(model3, "layers", [])}
        self.entries = [entry for entry in config["layers"] if entry["class_name"] != "InputLayer"]
        self.inputs = [entry for entry in config["layers"] if entry["class_name"] == "InputLayer"]
        self.rebuilt: dict[str, Rebuilt] = {}
        self.problems: list[str] = []
        for entry in self.entries:
            name = entry.get("name") or entry["config"].get("name")
            try:
                self.rebuilt[name] = (overrides or {}).get(name) or _rebuilder(entry, layers3.get(name))
            except _Untranslatable as reason:
                self.problems.append(f"'{name}' ({entry['class_name']}): {reason}")

    @property
    def weights(self) -> list[tuple[Any, Any]]:
        return [pair for rebuilt in self.rebuilt.values() for pair in rebuilt.weights]

    def replay(self, inputs):
        """The rebuilt layers called on `inputs`: a tensor, a list in the model's input order, or a dict by input
        name (a keras_hub backbone called as `backbone({"token_ids": ..., "padding_mask": ...})`)."""
        if not self.functional:
            x = inputs
            for entry in self.entries:
                x = self.rebuilt[entry.get("name") or entry["config"]["name"]].call([x], {})
            return x
        spec = self.config["input_layers"]
        endpoints = _endpoints(spec)
        if isinstance(inputs, dict):
            keys = list(spec) if isinstance(spec, dict) else [endpoint[0] for endpoint in endpoints]
            missing = [key for key in keys if key not in inputs]
            if missing:
                raise errors.UnsupportedLayerError(
                    f"nested model '{self.config.get('name')}' is called with inputs {sorted(inputs)}; it takes "
                    f"{keys}: call it with every one of them, by those names.")
            given = [inputs[key] for key in keys]
        else:
            given = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        return self.run(dict(zip(endpoints, given)))

    def run(self, tensors: dict):
        """Replays every node once its inputs exist in `tensors` ((layer, node, index) -> tensor); the outputs."""
        pending = [(name, index, node) for entry in self.entries
                   for name in [entry.get("name") or entry["config"]["name"]]
                   for index, node in enumerate(entry["inbound_nodes"])]
        done = {name: 0 for name in self.rebuilt}
        while pending:
            progress = False
            for item in list(pending):
                name, index, node = item
                if done[name] != index or not all(ref in tensors for ref in _references(node)):
                    continue
                args = _resolve(node.get("args", []), tensors)
                # `training` is how Keras 3 recorded the call, not part of the graph: tf_keras would keep it fixed.
                kwargs = {k: v for k, v in _resolve(node.get("kwargs", {}), tensors).items()
                          if v is not None and k != "training"}
                outputs = self.rebuilt[name].call(args, kwargs)
                for position, tensor in enumerate(tf.nest.flatten(outputs)):
                    tensors[(name, index, position)] = tensor
                done[name] += 1
                pending.remove(item)
                progress = True
            if not progress:
                stuck = sorted({name for name, _, _ in pending})
                raise errors.UnsupportedLayerError(f"could not rebuild the connections of layers {stuck} in tf_keras.")
        outputs = [tensors[e] for e in _endpoints(self.config["output_layers"])]
        return _structured(self.config["output_layers"], outputs)


def _is_keras3_model_object(layer3) -> bool:
    import keras as keras3

    return isinstance(layer3, keras3.Model)


def graph_config(model3, config: dict | None = None) -> dict:
    """The Functional graph config (`layers`, `input_layers`, `output_layers`) of a Keras 3 model.

    A Functional subclass with a constructor of its own (keras_hub's
    backbones) serializes its constructor's arguments instead; the same graph
    as a plain Functional model gives the layers.
    """
    config = model3.get_config() if config is None else config
    if "layers" in config:
        return config
    import keras as keras3

    return keras3.Model(model3.input, model3.output, name=model3.name).get_config()


def untranslatable_layers(model3) -> list[str]:
    """'name' (Class): reason, for every layer of a Keras 3 model that cannot be rebuilt in tf_keras."""
    return _Graph(model3, graph_config(model3)).problems


def _copy_weights(pairs) -> None:
    for target, layer3 in pairs:
        values = layer3.get_weights()
        if not values:
            continue
        expected = [tuple(w.shape) for w in target.weights]
        received = [tuple(v.shape) for v in values]
        if expected != received:
            raise errors.UnsupportedLayerError(
                f"layer '{layer3.name}' ({type(layer3).__name__}): its Keras 3 weights have shapes {received}, "
                f"the tf_keras layer expects {expected}; it cannot be rebuilt in tf_keras."
            )
        target.set_weights(values)


def rebuild_in_tf_keras(model3, fixed_shapes: dict | None = None) -> keras.Model:
    """The tf_keras twin of a built Keras 3 Sequential/Functional model, with its weights.

    Nested models are flattened into it; raw `keras.ops` arithmetic, Keras 3's
    `hard_silu` activation and keras.applications' and keras_hub's own layers
    are rebuilt with tfjoint's layers (`Affine`, `HardSwish`, attention, ...).
    `fixed_shapes` (input name -> shape without the batch) fixes the axes the
    model leaves unknown.

    Raises:
      errors.UnsupportedLayerError: layers that cannot be translated, all named.
    """
    register_keras3_layers()  # keras.applications' and keras_hub's own layers, as registry entries
    config = graph_config(model3)
    graph = _Graph(model3, config)
    if graph.problems:
        raise errors.UnsupportedLayerError(
            f"Keras 3 model '{model3.name}' has layers tfjoint cannot rebuild in tf_keras (which TF-MOT needs): "
            + "; ".join(graph.problems) + "."
        )
    name = config.get("name", model3.name)
    if graph.functional:
        inputs = {endpoint: _input_tensor(entry, fixed_shapes) for entry in graph.inputs
                  for endpoint in [((entry.get("name") or entry["config"]["name"]), 0, 0)]}
        ordered = [inputs[e] for e in _endpoints(config["input_layers"])]
        outputs = graph.run(dict(inputs))
        model = keras.Model(_structured(config["input_layers"], ordered), outputs, name=name)
    else:
        first = graph.inputs[0] if graph.inputs else None
        inputs = _input_tensor(first, fixed_shapes) if first is not None else keras.Input(
            batch_shape=tuple(model3.inputs[0].shape), name=model3.inputs[0].name)
        model = keras.Model(inputs, graph.replay(inputs), name=name)
    _copy_weights(graph.weights)
    return model
