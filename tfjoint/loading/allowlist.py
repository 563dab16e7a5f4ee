"""What a model file may name: every class or function reference in its config, checked before anything loads.

A Keras config names classes and functions by `module`, `class_name` and
`registered_name`, and tf_keras 2.21 imports whatever module a config names
(`serialization_lib._retrieve_class_or_fn`), so a config alone can run any
function of any installed module while the model is rebuilt (the pattern of
CVE-2025-1550). `check_config` walks the whole config as JSON, resolves every
reference the way the loader that will read it does (tf_keras or Keras 3),
without importing anything outside the allowed packages, and returns a
`Refusal` for each reference that does not resolve to what a model is made of:

* a class: a layer or model, an operation (Keras 3), an initializer,
  regularizer, constraint, loss, metric, optimizer, learning-rate schedule,
  dtype policy, TF-MOT quantizer, quantize config or pruning schedule,
  from Keras, tf_keras, keras_hub, TF-MOT or tfjoint (layers that load or
  run other programs, such as `TFSMLayer` or `TorchModuleWrapper`, are not);
* a function: a public Keras or tf_keras activation, loss or metric
  (not their `get`/`serialize`/`deserialize`);
* either, registered in this process by the user
  (`keras.utils.register_keras_serializable`, `keras.saving.register_keras_serializable`).

Python bytecode (a `Lambda`'s lambda) is refused, except that a tf_keras
`Lambda` whose stored function is one the user registered loads that
registered function by name (the file's bytes are never unmarshalled: the
registered function's name is matched in them, and the function that runs is
the user's own). A `TFOpLambda`'s TensorFlow function must come from the
tensor-math modules (no `io`, `debugging`, `print`, `py_function`,
`numpy_function`, `raw_ops`).

Nothing here deserializes or unmarshals file content. Modules of the allowed
packages are imported to look a name up (never a `__main__` module).
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import inspect
import sys
import types
from typing import Any

from tfjoint._keras import builtin_layer_class, public_symbol, tfmot_scope_objects

__all__ = ["Reference", "Refusal", "LambdaSubstitution", "Scan", "check_config", "ALLOWED_PACKAGES", "TF_KERAS",
           "KERAS3"]

TF_KERAS, KERAS3 = "tf_keras", "keras3"  # the loader that will read the config
# Packages whose modules a config may name (and which may be imported to resolve a name).
ALLOWED_PACKAGES = frozenset({"keras", "tf_keras", "keras_hub", "tensorflow_model_optimization", "tfjoint"})
# Keras's special class names for values that are data, not code.
_DATA_CLASS_NAMES = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__tuple__",
                               "__ellipsis__", "__slice__", "__dtype__", "__keras_variable__"})
# tf_keras's SavedModel metadata encodes shapes and specs as these (`json_utils`), read by name, never imported.
_METADATA_CLASS_NAMES = frozenset({"TensorShape", "TypeSpec", "InputSpec"})
_BUILTIN_FUNCTION_MODULES = ("activations", "constraints", "initializers", "losses", "metrics", "optimizers",
                             "regularizers")
_FUNCTION_NAMESPACES = ("activations", "losses", "metrics")
_NOT_COMPONENTS = frozenset({"get", "serialize", "deserialize"})
# Layers that load or run another program (a SavedModel, a pickled torch module, a JAX function).
_DENIED_CLASS_NAMES = frozenset({"TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer", "InstanceMethod",
                                 "ClassMethod"})
# Where a TFOpLambda's TensorFlow function may come from: tensor math.
_TENSOR_MATH_MODULES = frozenset({
    "array_ops", "array_ops_stack", "gen_array_ops", "math_ops", "gen_math_ops", "nn_ops", "gen_nn_ops", "nn_impl",
    "nn_impl_distribute", "clip_ops", "special_math_ops", "tensor_getitem_override", "linalg_ops", "gen_linalg_ops",
    "linalg_impl", "sort_ops", "bitwise_ops", "gen_bitwise_ops", "image_ops_impl", "gen_image_ops", "manip_ops",
    "embedding_ops", "random_ops", "stateless_random_ops", "tensor_math_operator_overrides", "weak_tensor_ops",
    "spectral_ops", "window_ops", "shape_ops", "mel_ops", "dct_ops", "mfcc_ops", "fft_ops", "reconstruction_ops"})
_FUNCTION_KEYS = (("function", "function_type", "module"), ("output_shape", "output_shape_type",
                                                              "output_shape_module"),
                  ("mask", "mask_type", "mask_module"))


@dataclasses.dataclass(frozen=True)
class Reference:
    """A class or function a config names, where it names it."""

    layer: str | None  # the layer whose config holds it (None: the model, its compile config)
    layer_class: str | None
    module: str | None
    name: str
    registered_name: str | None = None

    @property
    def dotted(self) -> str:
        """`pydoc.pipepager`, `keras.layers.Dense`, or the bare name without a module."""
        return f"{self.module}.{self.name}" if self.module else self.name


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A reference that does not resolve to what a model is made of, and why."""

    reference: Reference
    reason: str
    bytecode: bool = False  # Python bytecode stored in the file (a lambda)


@dataclasses.dataclass(frozen=True)
class LambdaSubstitution:
    """A tf_keras Lambda whose stored bytecode is a function the user registered: it loads that function by name.

    `path` locates the Lambda's config in the config tree (keys and list
    indices); `key` is "function" (or "output_shape", "mask").
    """

    path: tuple
    key: str
    registered_name: str


@dataclasses.dataclass(frozen=True)
class Scan:
    """What `check_config` found: the refusals, and the registered Lambdas to load by name."""

    refusals: tuple[Refusal, ...]
    substitutions: tuple[LambdaSubstitution, ...]


# --- What a model is made of --------------------------------------------------------------------------------------

def _component_bases() -> tuple[type, ...]:
    """The base classes of what a model is made of, in the packages already imported (never imports Keras 3)."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    bases: list[Any] = [
        tf_keras.layers.Layer, tf_keras.initializers.Initializer, tf_keras.regularizers.Regularizer,
        tf_keras.constraints.Constraint, tf_keras.losses.Loss, tf_keras.metrics.Metric,
        tf_keras.optimizers.Optimizer, tf_keras.optimizers.legacy.Optimizer,
        tf_keras.optimizers.schedules.LearningRateSchedule, tf_keras.mixed_precision.Policy,
        tfmot.quantization.keras.quantizers.Quantizer, tfmot.quantization.keras.QuantizeConfig,
        tfmot.sparsity.keras.PruningSchedule, tf.TypeSpec]
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_aware_activation

    bases += [quantize_aware_activation.QuantizeAwareActivation, quantize_aware_activation.NoOpActivation]
    from tf_keras.src.optimizers import optimizer as tf_keras_optimizer

    bases.append(tf_keras_optimizer.Optimizer)
    keras3 = sys.modules.get("keras")
    if keras3 is not None and hasattr(keras3, "Operation"):
        bases += [keras3.Operation, keras3.layers.Layer, keras3.initializers.Initializer,
                  keras3.regularizers.Regularizer, keras3.constraints.Constraint, keras3.losses.Loss,
                  keras3.metrics.Metric, keras3.optimizers.Optimizer, keras3.optimizers.schedules.LearningRateSchedule,
                  keras3.DTypePolicy, keras3.quantizers.Quantizer]
    return tuple(bases)


def _component_functions() -> set[int]:
    """The ids of the public activation, loss and metric functions of tf_keras (and Keras 3 when imported)."""
    import tf_keras

    packages = [tf_keras]
    keras3 = sys.modules.get("keras")
    if keras3 is not None and hasattr(keras3, "Operation"):
        packages.append(keras3)
    found = set()
    for package in packages:
        for namespace in _FUNCTION_NAMESPACES:
            module = getattr(package, namespace, None)
            for name, value in vars(module).items() if module is not None else ():
                if name not in _NOT_COMPONENTS and not name.startswith("_") and isinstance(value, types.FunctionType):
                    found.add(id(value))
    return found


def _is_component_class(value, bases: tuple[type, ...]) -> bool:
    return inspect.isclass(value) and issubclass(value, bases) and value.__name__ not in _DENIED_CLASS_NAMES


# --- Resolution, as the loader does it -----------------------------------------------------------------------------

def _registered(names, loader: str, known) -> Any:
    """The object registered under any of `names` (tf_keras's registry; Keras 3's too for a Keras 3 file), or one
    of the custom objects the loader passes."""
    import tf_keras

    tables = [tf_keras.utils.get_custom_objects(), known]
    if loader == KERAS3:
        keras3 = sys.modules.get("keras")
        if keras3 is not None and hasattr(keras3, "saving"):
            tables.append(keras3.saving.get_custom_objects())
    for name in names:
        if not isinstance(name, str):
            continue
        for table in tables:
            if name in table:
                return table[name]
    return None


def _public_symbol(api_name: str, loader: str) -> Any:
    """A name of Keras's public API (`keras.layers.Dense`) as the loader's own export table holds it."""
    return public_symbol(api_name, keras3=loader == KERAS3)


def _importable(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in ALLOWED_PACKAGES and all(part.isidentifier() and part != "__main__" for part in parts)


def _attribute(module: str, name: str, registered_name) -> Any:
    """`module.name` (or a `__qualname__` one level deep), importing `module` only inside the allowed packages."""
    if not _importable(module):
        return None
    try:
        loaded = importlib.import_module(module)
    except Exception:  # noqa: BLE001  (an allowed package that does not have it: the loader would fail too)
        return None
    found = vars(loaded).get(name)
    if found is None and isinstance(registered_name, str):
        found = vars(loaded).get(registered_name)
    if found is None and name.count(".") == 1:
        outer = vars(loaded).get(name.split(".")[0])
        found = getattr(outer, name.split(".")[1], None) if outer is not None else None
    return found


def _resolve(module, name: str, registered_name, function: bool, loader: str, known) -> tuple[Any, str | None]:
    """What the loader would resolve the reference to (None if nothing), or why it is not looked up at all."""
    registered = _registered([name] if function else [registered_name, name], loader, known)
    if registered is not None:
        return registered, None
    if not module:
        return None, None  # the legacy format: found by name in Keras's own namespaces (see _legacy)
    if not isinstance(module, str):
        return None, f"its module is not a name ({module!r})"
    if module in ("keras", "tf_keras") or module.startswith(("keras.", "tf_keras.")):
        found = _public_symbol(f"{module}.{name}", loader)
        if found is not None:
            return found, None
    if function and module == "builtins":
        for namespace in _BUILTIN_FUNCTION_MODULES:
            found = _public_symbol(f"keras.{namespace}.{name}", loader)
            if found is not None:
                return found, None
        return None, None
    if loader == TF_KERAS and module.startswith("keras"):
        module = "tf_" + module  # as tf_keras's loader does
    if module.split(".")[0] not in ALLOWED_PACKAGES:
        return None, ("its module is outside Keras, tf_keras, keras_hub, TF-MOT and tfjoint (a model file may only "
                      "name what a model is made of)")
    if not _importable(module):
        return None, "it names a module that is not a library module"
    return _attribute(module, name, registered_name), None


def _legacy(name: str, loader: str) -> Any:
    """A class named without a module (the legacy `.h5` format, TF-MOT's configs): Keras's namespaces by name."""
    if loader == KERAS3:
        import keras

        package: Any = keras
        extra = {"Functional": getattr(keras, "Model", None)}
    else:
        import tf_keras

        package, extra = tf_keras, {}
    for namespace in ("layers", "models", "initializers", "regularizers", "constraints", "optimizers",
                      "optimizers.schedules", "losses", "metrics", "mixed_precision"):
        module: Any = package
        for part in namespace.split("."):
            module = getattr(module, part, None)
        found = getattr(module, name, None)
        if found is not None:
            return found
    if loader == KERAS3:
        return extra.get(name)
    return builtin_layer_class(name) or tfmot_scope_objects().get(name)


# --- The walk --------------------------------------------------------------------------------------------------------

class _Checker:
    def __init__(self, known):
        self.known = dict(known or {})
        self.bases = _component_bases()
        self.functions = _component_functions()
        self.refusals: list[Refusal] = []
        self.substitutions: list[LambdaSubstitution] = []

    def refuse(self, reference: Reference, reason: str, bytecode: bool = False) -> None:
        self.refusals.append(Refusal(reference, reason, bytecode))

    # A class reference: {"class_name", "config", "module"?, "registered_name"?}
    def check_class(self, node: dict, layer, owner, loader: str) -> Any:
        name = node.get("class_name")
        reference = Reference(layer, owner, node.get("module"), str(name), node.get("registered_name"))
        if not isinstance(name, str) or not name:
            self.refuse(reference, "its class_name is not a name")
            return None
        if name in _DENIED_CLASS_NAMES:
            self.refuse(reference, "this layer loads or runs another program")
            return None
        found, why = _resolve(node.get("module"), name, node.get("registered_name"), False, loader, self.known)
        if found is None and why is None and not node.get("module"):
            found = _legacy(name, loader)
        if why is not None:
            self.refuse(reference, why)
        elif found is None:
            self.refuse(reference, "it names nothing Keras, tf_keras, keras_hub, TF-MOT or tfjoint defines, and "
                                   "nothing registered in this process")
        elif not (_is_component_class(found, self.bases) or id(found) in self.functions):
            self.refuse(reference, "it is not a layer, model, initializer, regularizer, constraint, loss, metric, "
                                   "optimizer, schedule or quantizer")
        else:
            return found
        return None

    # A function reference: {"class_name": "function", "config": name, "module", "registered_name"}
    def check_function(self, node: dict, layer, owner, loader: str) -> None:
        name = node.get("config")
        reference = Reference(layer, owner, node.get("module"), str(name), node.get("registered_name"))
        if not isinstance(name, str):
            self.refuse(reference, "its function name is not a name")
            return
        names = [name, node.get("registered_name")]
        if _registered(names, loader, self.known) is not None:
            return
        found, why = _resolve(node.get("module"), name, node.get("registered_name"), True, loader, self.known)
        if why is not None:
            self.refuse(reference, why)
        elif found is None or id(found) not in self.functions:
            self.refuse(reference, "it is not a Keras activation, loss or metric, nor a function registered in this "
                                   "process")

    def check_named_function(self, name, layer, owner, loader: str) -> None:
        """A function stored by name alone (the legacy format): registered, or a Keras activation."""
        reference = Reference(layer, owner, None, str(name))
        if not isinstance(name, str):
            self.refuse(reference, "its function is not a name")
            return
        if _registered([name], loader, self.known) is not None:
            return
        import tf_keras

        found = getattr(tf_keras.activations, name, None)
        if found is None or id(found) not in self.functions:
            self.refuse(reference, "it is not a Keras activation nor a function registered in this process")

    def check_bytecode(self, payload, module, path: tuple, key: str, layer, owner) -> None:
        """A tf_keras Lambda's stored function: the user's registered function of that name, or refused."""
        function = _registered_function_in(payload, module)
        if function is not None:
            self.substitutions.append(LambdaSubstitution(path, key, function))
            return
        self.refuse(Reference(layer, owner, module if isinstance(module, str) else None, f"<{key} stored as bytecode>"),
                    f"its {key} is Python bytecode stored in the file", bytecode=True)

    def check_lambda(self, config: dict, path: tuple, layer, owner, loader: str) -> frozenset:
        """A Lambda's functions (tf_keras's forms); returns the keys checked here (the walk skips them)."""
        checked = set()
        for key, type_key, module_key in _FUNCTION_KEYS:
            value, kind = _untupled(config.get(key)), config.get(type_key)
            if key not in config or isinstance(value, dict):
                continue  # a Keras 3 reference ({"class_name": ...}): the walk checks it
            checked.add(key)
            if kind == "lambda":
                self.check_bytecode(value, config.get(module_key), path, key, layer, owner)
            elif kind == "function" and isinstance(value, str):
                self.check_named_function(value, layer, owner, loader)
            elif kind not in ("function", "raw", None):
                self.refuse(Reference(layer, owner, None, f"<{key} of type {kind!r}>"), f"unknown {type_key} {kind!r}")
            elif kind is None and value is not None and not isinstance(value, (list, tuple, int)):
                self.refuse(Reference(layer, owner, None, f"<{key}>"), f"a {key} of unknown form")
        return frozenset(checked)

    def check_tf_op(self, config: dict, layer, owner) -> None:
        """A TFOpLambda (or SlicingOpLambda): its TensorFlow function must be tensor math."""
        name = config.get("function")
        reference = Reference(layer, owner, "tensorflow", str(name))
        if not isinstance(name, str) or name.startswith(("raw_ops.", "compat.", "io.", "debugging.")):
            self.refuse(reference, "a TFOpLambda may only call TensorFlow's tensor math")
            return
        found = _public_symbol(name, TF_KERAS)
        module = getattr(found, "__module__", "") or ""
        if found is None or not module.startswith("tensorflow.python.ops.") or \
                module.split(".")[-1] not in _TENSOR_MATH_MODULES:
            self.refuse(reference, f"a TFOpLambda may only call TensorFlow's tensor math, not {module or 'unknown'} "
                                   "functions")

    def walk(self, root, loader: str) -> None:
        # Iterative, depth first: (node, path, layer, layer class, the loader that reads it).
        stack: list[tuple[Any, tuple, str | None, str | None, str]] = [(root, (), None, None, loader)]
        while stack:
            node, path, layer, owner, loader = stack.pop()
            if isinstance(node, list):
                stack.extend((value, path + (i,), layer, owner, loader) for i, value in enumerate(node))
                continue
            if not isinstance(node, dict):
                continue
            if "class_name" not in node:
                stack.extend((value, path + (key,), layer, owner, loader) for key, value in node.items())
                continue
            class_name, config = node.get("class_name"), node.get("config")
            if class_name in _DATA_CLASS_NAMES or (class_name in _METADATA_CLASS_NAMES and "module" not in node
                                                   and "registered_name" not in node):
                continue
            if class_name == "__lambda__":
                self.refuse(Reference(layer, owner, None, "<lambda stored as bytecode>"),
                            "a Python lambda stored as bytecode", bytecode=True)
                continue
            if class_name == "__typespec__":
                found, why = _resolve(node.get("module"), str(node.get("spec_name")), node.get("registered_name"),
                                      False, loader, self.known)
                if found is None or not _is_component_class(found, self.bases):
                    self.refuse(Reference(layer, owner, node.get("module"), str(node.get("spec_name"))),
                                why or "it is not a TensorFlow type spec")
                continue
            if class_name == "function":
                self.check_function(node, layer, owner, loader)
                continue
            here = _layer_name(node, layer)
            found = self.check_class(node, here, class_name if here != layer else owner, loader)
            for key, value in node.items():
                if key != "config":
                    stack.append((value, path + (key,), layer, owner, loader))
            if not isinstance(config, dict):
                stack.append((config, path + ("config",), layer, owner, loader))
                continue
            is_layer = found is not None and _named(found, "Layer", "Operation")
            inner = config.get("name") if is_layer and isinstance(config.get("name"), str) else layer
            skipped: frozenset = frozenset()
            if found is not None and _named(found, "Lambda"):
                skipped = self.check_lambda(config, path + ("config",), inner, class_name, loader)
            elif found is not None and _named(found, "TFOpLambda", "SlicingOpLambda"):
                self.check_tf_op(config, inner, class_name)
            elif found is not None and _named(found, "InstanceProperty") and \
                    str(config.get("attr_name", "_")).startswith("_"):
                self.refuse(Reference(inner, class_name, None, str(config.get("attr_name"))),
                            "it reads a private attribute")
            # A Keras 3 layer hosted in a tf_keras model (tfjoint's Keras3Layer) is rebuilt by Keras 3.
            inner_loader = KERAS3 if found is not None and _named(found, "Keras3Layer") else loader
            owner_name = class_name if inspect.isclass(found) else owner
            stack.extend((value, path + ("config", key), inner, owner_name,
                          inner_loader if key == "layer" else loader)
                         for key, value in config.items() if key not in skipped)



def _untupled(value):
    """A SavedModel's metadata encodes tuples as {"class_name": "__tuple__", "items": [...]}: the items."""
    if isinstance(value, dict) and value.get("class_name") == "__tuple__" and isinstance(value.get("items"), list):
        return value["items"]
    return value


def _layer_name(node: dict, layer):
    """The name of the layer a node of a model config describes (one with inbound nodes), else `layer`."""
    if "inbound_nodes" not in node:
        return layer
    config = node.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    name = name if isinstance(name, str) else node.get("name")
    return name if isinstance(name, str) else layer


def _named(cls, *names: str) -> bool:
    return inspect.isclass(cls) and any(base.__name__ in names for base in cls.__mro__)


def _registered_function_in(payload, module) -> str | None:
    """The registered name of the one registered function (of `module`) whose name the stored bytecode holds.

    tf_keras stores every Lambda's function as marshalled bytecode, a
    registered one too. The bytes are not unmarshalled: the registered
    functions of the same module whose `__name__` occurs in them are the
    candidates, and the function loaded is the registered one, never one made
    from the file's bytes. None when there is not exactly one candidate.
    """
    import tf_keras

    code = payload[0] if isinstance(payload, (list, tuple)) and payload else payload
    if not isinstance(code, str):
        return None
    try:
        raw = base64.b64decode(code.encode("ascii"), validate=False)
    except (ValueError, UnicodeEncodeError):
        return None
    candidates = {key for key, value in tf_keras.utils.get_custom_objects().items()
                  if isinstance(value, types.FunctionType) and value.__name__.encode() in raw
                  and (not isinstance(module, str) or value.__module__ == module)}
    return candidates.pop() if len(candidates) == 1 else None


def check_config(config, loader: str, known=None) -> Scan:
    """Every reference in a model config that does not resolve to what a model is made of.

    Args:
      config: the config as parsed JSON (dicts, lists, strings, numbers).
      loader: `TF_KERAS` or `KERAS3`: the loader that will read it (their
        resolution of module names differs).
      known: the custom objects the loader passes, by name.
    """
    checker = _Checker(known)
    checker.walk(config, loader)
    return Scan(tuple(dict.fromkeys(checker.refusals)), tuple(checker.substitutions))


def substituted(config, substitutions) -> Any:
    """A copy of `config` in which each registered Lambda names its function instead of storing its bytecode."""
    import copy

    config = copy.deepcopy(config)
    for substitution in substitutions:
        node = config
        for step in substitution.path:
            node = node[step]
        node[substitution.key] = substitution.registered_name
        type_key = {"function": "function_type"}.get(substitution.key, f"{substitution.key}_type")
        node[type_key] = "function"
    return config
