"""The public surface, the one-way import rule between stages, docstring examples, and what importing needs."""

import ast
import doctest
import importlib
import inspect
import os
import re
import textwrap

import pytest
from conftest import run_python

import tfjoint

PACKAGE_DIR = os.path.dirname(tfjoint.__file__)
# Small modules any stage may import.
LEAVES = {"errors", "_keras", "_tfmot", "_litert", "_files", "_progress", "_names", "_capture", "data", "losses",
          "metrics", "findings", "plan.budget", "_probes.__init__", "_probes.rss", "_probes.tflm_arena"}
# Stages in data-flow order; within a stage, its modules in order. A module may
# import leaves, any module of an earlier stage, and earlier modules of its own.
STAGES = {
    "registry": ["registry.channel_rules", "registry.kind", "registry.table", "registry.own_layers",
                 "registry.own_configs", "registry.array_ops", "registry.points", "registry.activations",
                 "registry.recurrent",
                 "registry.streaming", "registry.transformer",
                 "registry.rewrites", "registry.builtin", "registry.keras3_layers"],
    "bridge": ["bridge.translate", "bridge.equivalence", "bridge.keras3"],
    "prune": ["prune.schedule", "prune.selection", "prune.channel_groups", "prune.channel_specs", "prune.allocation",
              "prune.residual"],
    "quantize": ["quantize.clusters", "quantize.quantizers", "quantize.config", "quantize.substitution",
                 "quantize.scheme", "quantize.wrappers"],
    "tflite": ["tflite.operators", "tflite.flatbuffer", "tflite.run", "tflite.relu6_scale", "tflite.convert",
               "tflite.tflm", "tflite.runtimes", "tflite.streaming", "tflite.split_weights", "tflite.tflm_reduction"],
    "train": ["train.readback", "train.model_kind", "train.first_trace", "train.phases", "train.prepared_model",
              "train.centroids", "train.conversion_check", "train.schedule_argument", "train.prepare",
              "train.callbacks", "train.distill", "train.stripped_model", "train.strip"],
    "loading": ["loading.allowlist", "loading.model_files", "loading.load"],
    "export": ["export.options", "export.compare", "export.memory", "export.explain", "export.micro",
               "export.arguments", "export.source", "export.candidates", "export.compression", "export.validation",
               "export.measurements", "export.report", "export.export_tflite"],
    "plan": ["plan.cost", "plan.for_budget"],
    "app": ["app.flags", "app.digits", "app.plots", "app.datasets", "app.pipeline", "app.cli"],
}
ORDER = [module for modules in STAGES.values() for module in modules]


def _library_modules():
    found = set()
    for path, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                relative = os.path.relpath(os.path.join(path, name), PACKAGE_DIR)[:-3].replace(os.sep, ".")
                found.add(relative)
    return found


def _tfjoint_imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfjoint"):
            if node.module == "tfjoint":
                yield from (alias.name for alias in node.names)
            else:
                module = node.module[len("tfjoint."):]
                for alias in node.names:
                    candidate = f"{module}.{alias.name}"
                    yield candidate if candidate in ORDER or candidate in LEAVES else module
        elif isinstance(node, ast.Import):
            yield from (a.name[len("tfjoint."):] for a in node.names if a.name.startswith("tfjoint."))


def test_every_module_has_a_place_in_the_flow():
    known = set(ORDER) | LEAVES | {"__init__", "__main__", "inspect"} | {f"{stage}.__init__" for stage in STAGES}
    found = _library_modules()
    assert found <= known, f"new module(s) {sorted(found - known)}: add them to STAGES or LEAVES"


def test_stages_only_import_earlier_stages_and_leaves():
    for module in ORDER:
        for imported in _tfjoint_imports(os.path.join(PACKAGE_DIR, *module.split(".")) + ".py"):
            if imported in LEAVES or imported in STAGES or imported in ("keras",):
                continue  # a leaf, a subpackage's docstring-only __init__, or the public keras alias
            if imported not in ORDER:  # a public name of the top-level package (app only)
                assert module.startswith("app."), f"{module} imports tfjoint.{imported} from the top level"
                continue
            assert ORDER.index(imported) < ORDER.index(module), f"{module} imports {imported}"


def test_public_names_are_the_documented_objects_even_after_every_submodule_is_imported():
    for module in sorted(_library_modules()):  # every .py file, packages with or without __init__ alike
        if module not in ("__main__",) and not module.endswith("__init__"):
            importlib.import_module(f"tfjoint.{module}")
    for name, module in tfjoint._EXPORTS.items():
        assert getattr(tfjoint, name) is getattr(importlib.import_module(module), name), name
        obj = getattr(tfjoint, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__module__ == module, f"tfjoint.{name} is defined in {obj.__module__}, listed as {module}"
    assert tfjoint.keras.__name__.startswith("tf_keras")
    assert issubclass(tfjoint.ConfigError, ValueError) and issubclass(tfjoint.errors.ModelTypeError, TypeError)
    assert set(dir(tfjoint)) >= set(tfjoint.__all__)


def test_type_checkers_see_every_public_name():
    """Every name in __all__ is imported under `if TYPE_CHECKING:` from the module the lazy table names."""
    tree = ast.parse(open(os.path.join(PACKAGE_DIR, "__init__.py")).read())
    checked = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                for alias in statement.names:
                    checked[alias.asname or alias.name] = statement.module
    assert checked == {name: tfjoint._EXPORTS[name] for name in tfjoint.__all__}


def test_docstring_examples_run():
    import tfjoint.bridge.keras3
    import tfjoint.plan.budget
    import tfjoint.prune.allocation
    import tfjoint.prune.schedule
    import tfjoint.registry.table
    import tfjoint.train.prepare

    for module in (tfjoint.train.prepare, tfjoint.prune.schedule, tfjoint.bridge.keras3, tfjoint.prune.allocation,
                   tfjoint.registry.table, tfjoint.plan.budget):
        results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert results.attempted > 0 and results.failed == 0, module.__name__


_BLOCK_APP_PACKAGES = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("matplotlib", "sklearn"):
            raise ImportError(f"blocked for this test: {name}")
sys.meta_path.insert(0, _Blocker())
"""


def _python(code: str):
    return run_python(_BLOCK_APP_PACKAGES + textwrap.dedent(code), check=False)


@pytest.mark.slow
def test_the_library_needs_neither_matplotlib_nor_scikit_learn():
    result = _python("""
        import pkgutil, importlib, tfjoint
        for module in pkgutil.walk_packages(tfjoint.__path__, prefix="tfjoint."):
            if not module.name.startswith(("tfjoint.app", "tfjoint.__main__")):
                importlib.import_module(module.name)
        import tf_keras as keras
        inputs = keras.Input((4,))
        joint = tfjoint.prepare(keras.Model(inputs, keras.layers.Dense(2)(inputs)), target_sparsity=0.5, end_step=3)
        print("ok", len(tfjoint.inspect.pruned_kernels(joint)))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["ok", "1"]


@pytest.mark.slow
def test_the_command_says_what_to_install_without_its_extras():
    result = _python("""
        import sys
        from tfjoint.app.cli import run_main
        sys.argv = ["tfjoint", "--out=/tmp/unused"]
        run_main()
    """)
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'pip install "tfjoint[app]"' in result.stderr and "matplotlib and scikit-learn" in result.stderr


def _keras_layer_class_names() -> set[str]:
    import tf_keras as keras

    names = {name for name in dir(keras.layers) if inspect.isclass(getattr(keras.layers, name))
             and issubclass(getattr(keras.layers, name), keras.layers.Layer)}
    return (names | {"SyncBatchNormalization"}) - {"Layer"}


# The weights of Keras's own layers, by the names their variables carry.
_WEIGHT_NAMES = {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "depthwise_kernel",
                 "pointwise_kernel", "recurrent_kernel", "embeddings", "target_shape"}
# Modules that may name layer classes: the registry (it is where that knowledge lives), the bridge (it reads Keras
# 3 configs, whose class names it must read), the loader's allowlist (it reads the class names a file's config
# holds, to refuse what would run code: a Lambda's bytecode, a TFOpLambda's function), and the demo model the
# command trains (a user's model, as a user writes it).
_EXEMPT = ("registry.", "bridge.", "loading.", "app.digits")
# Strings that happen to spell a layer class: the prefix of TFLM's MicroMutableOpResolver methods ("AddConv2D").
_NOT_CLASS_NAMES = {("tflite.operators", "Add")}


def _docstrings(tree) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value,
                                                                                             ast.Constant):
            found.add(id(body[0].value))
    return found


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def test_no_module_outside_the_registry_names_a_keras_layer_class_or_weight():
    """What tfjoint knows about a kind of layer lives in its registry entry; stages ask the registry.

    Parsed, not grepped: outside the registry, the bridge and the demo model, no string (docstrings aside) names a
    Keras layer class or one of its weights (a class-name match, a weight looked up by name, a hand-written list
    of kinds in a message), and no code refers to `keras.layers.<Class>` (building one, or matching on one).
    """
    classes = _keras_layer_class_names()
    offences = []
    for module in sorted(_library_modules()):
        if module.startswith(_EXEMPT):
            continue
        tree = ast.parse(open(os.path.join(PACKAGE_DIR, *module.split(".")) + ".py").read())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                named = (_words(node.value) & classes) | ({node.value.split(":")[0]} & _WEIGHT_NAMES)
                named -= {name for owner, name in _NOT_CLASS_NAMES if owner == module}
                offences += [f"{module}:{node.lineno} {name!r} in {node.value[:50]!r}" for name in sorted(named)]
            if isinstance(node, ast.Attribute) and node.attr in classes and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "layers":
                offences.append(f"{module}:{node.lineno} keras.layers.{node.attr}")
    assert not offences, offences


def test_the_layer_check_catches_what_it_looks_for(tmp_path):
    """The check above reads real source: a module that matches on a class name or a weight name is caught."""
    source = 'NAME = "Conv2D"\nWEIGHT = "kernel"\nMESSAGE = f"use a Dense layer"\n'
    tree = ast.parse(source)
    classes = _keras_layer_class_names()
    caught = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
              and (_words(node.value) & classes or node.value in _WEIGHT_NAMES)]
    assert caught == ["Conv2D", "kernel", "use a Dense layer"]
