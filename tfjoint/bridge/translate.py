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

What cannot be translated (custom layers, Lambda, raw `keras.ops` calls,
nested models, unknown activations) is collected and refused together, every
offending layer named with its class.
"""

import inspect
from typing import Any

from tfjoint import errors
from tfjoint._keras import keras, tf
from tfjoint.registry import kind_of

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


def _layer_class(entry) -> type:
    class_name = entry["class_name"]
    module = entry.get("module") or ""
    if class_name in ("Functional", "Sequential", "Model") or module.startswith("keras.src.models"):
        raise _Untranslatable("it is a nested model: flatten it into the outer model (call its layers directly)")
    if class_name == "Lambda":
        raise _Untranslatable("Lambda layers hold Python code that cannot be moved between Keras versions: "
                              "replace it with a built-in layer")
    if not module.startswith("keras.layers") and not module.startswith("keras.src.layers"):
        what = f"'{entry.get('registered_name') or class_name}' from {module or 'an unknown module'}"
        raise _Untranslatable(f"it is {what}, not a built-in Keras layer (custom layers and raw keras.ops calls "
                              "cannot be translated): rewrite it with built-in layers")
    cls = getattr(keras.layers, class_name, None)
    if not inspect.isclass(cls):
        raise _Untranslatable(f"tf_keras has no layer {class_name}")
    return cls


def _activation_ok(value) -> bool:
    if value is None or not isinstance(value, str):
        return value is None
    try:
        keras.activations.get(value)
    except ValueError:
        return False
    return True


def _translated_layer_config(entry, layer3) -> tuple[type, dict]:
    cls = _layer_class(entry)
    kind = kind_of(cls)  # its registry entry says which arguments Keras 3 renamed or reads from **kwargs
    renamed = kind.keras3_renamed_arguments if kind is not None else {}
    kwargs_defaults = kind.keras3_kwargs_defaults if kind is not None else {}
    where = f"layer '{entry['config'].get('name', entry.get('name'))}'"
    config = {k: _translate_value(v, f"{where} argument '{k}'") for k, v in entry["config"].items()}
    for keras3_name, tf_keras_name in renamed.items():
        if keras3_name in config:
            config[tf_keras_name] = config.pop(keras3_name)
    if "activation" in config and not _activation_ok(config["activation"]):
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


def untranslatable_layers(model3) -> list[str]:
    """'name' (Class): reason, for every layer of a Keras 3 model that cannot be rebuilt in tf_keras."""
    problems = []
    layers3 = {layer.name: layer for layer in model3.layers}
    for entry in model3.get_config()["layers"]:
        name = entry.get("name") or entry["config"].get("name")
        if entry["class_name"] == "InputLayer":
            continue
        try:
            _translated_layer_config(entry, layers3.get(name))
        except _Untranslatable as reason:
            problems.append(f"'{name}' ({entry['class_name']}): {reason}")
    return problems


def _input_tensor(entry):
    config = dict(entry["config"])
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    dtype = config.get("dtype") or "float32"
    dtype = _translate_value(dtype, "input") if isinstance(dtype, dict) else dtype
    return keras.Input(batch_shape=tuple(shape), dtype=dtype, name=config.get("name", entry.get("name")),
                       sparse=config.get("sparse", False), ragged=config.get("ragged", False))


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


def _rebuild_functional(model3, config) -> keras.Model:
    layers3 = {layer.name: layer for layer in model3.layers}
    tensors, layers, pending = {}, {}, []
    for entry in config["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        if entry["class_name"] == "InputLayer":
            tensors[(name, 0, 0)] = _input_tensor(entry)
            continue
        cls, layer_config = _translated_layer_config(entry, layers3.get(name))
        layers[name] = cls.from_config(layer_config)
        pending.extend((name, index, node) for index, node in enumerate(entry["inbound_nodes"]))
    done = {name: 0 for name in layers}
    while pending:
        progress = False
        for item in list(pending):
            name, index, node = item
            if done[name] != index or not all(ref in tensors for ref in _references(node)):
                continue
            args = _resolve(node.get("args", []), tensors)
            kwargs = {k: v for k, v in _resolve(node.get("kwargs", {}), tensors).items() if v is not None}
            outputs = layers[name](*args, **kwargs)
            for position, tensor in enumerate(tf.nest.flatten(outputs)):
                tensors[(name, index, position)] = tensor
            done[name] += 1
            pending.remove(item)
            progress = True
        if not progress:
            stuck = sorted({name for name, _, _ in pending})
            raise errors.UnsupportedLayerError(f"could not rebuild the connections of layers {stuck} in tf_keras.")
    inputs = [tensors[e] for e in _endpoints(config["input_layers"])]
    outputs = [tensors[e] for e in _endpoints(config["output_layers"])]
    return keras.Model(_structured(config["input_layers"], inputs), _structured(config["output_layers"], outputs),
                       name=config.get("name", model3.name))


def _rebuild_sequential(model3, config) -> keras.Model:
    layers3 = {layer.name: layer for layer in model3.layers}
    model = keras.Sequential(name=config.get("name", model3.name))
    entries = config["layers"]
    if entries[0]["class_name"] == "InputLayer":
        model.add(_input_tensor(entries[0]))
        entries = entries[1:]
    else:
        model.add(keras.Input(batch_shape=tuple(model3.inputs[0].shape), name=model3.inputs[0].name))
    for entry in entries:
        cls, layer_config = _translated_layer_config(entry, layers3.get(entry["config"]["name"]))
        model.add(cls.from_config(layer_config))
    return model


def _copy_weights(model3, model) -> None:
    layers = {layer.name: layer for layer in model.layers}
    for layer3 in model3.layers:
        values = layer3.get_weights()
        if not values:
            continue
        target = layers[layer3.name]
        expected = [tuple(w.shape) for w in target.weights]
        received = [tuple(v.shape) for v in values]
        if expected != received:
            raise errors.UnsupportedLayerError(
                f"layer '{layer3.name}' ({type(layer3).__name__}): its Keras 3 weights have shapes {received}, "
                f"the tf_keras layer expects {expected}; it cannot be rebuilt in tf_keras."
            )
        target.set_weights(values)


def rebuild_in_tf_keras(model3) -> keras.Model:
    """The tf_keras twin of a built Keras 3 Sequential/Functional model, with its weights.

    Raises:
      errors.UnsupportedLayerError: layers that cannot be translated, all named.
      errors.ModelTypeError: a subclassed Keras 3 model.
    """
    problems = untranslatable_layers(model3)
    if problems:
        raise errors.UnsupportedLayerError(
            f"Keras 3 model '{model3.name}' has layers tfjoint cannot rebuild in tf_keras (which TF-MOT needs): "
            + "; ".join(problems) + "."
        )
    config = model3.get_config()
    if "layers" in config and "input_layers" in config:
        model = _rebuild_functional(model3, config)
    else:
        model = _rebuild_sequential(model3, config)
    _copy_weights(model3, model)
    return model
