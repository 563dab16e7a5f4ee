"""The public surface, the one-way import rule between stages, and docstring examples."""

import ast
import doctest
import importlib
import inspect
import os
import pkgutil

import tfjoint

PACKAGE_DIR = os.path.dirname(tfjoint.__file__)
# Leaf modules any stage may import.
LEAVES = {"errors", "config", "schedule", "measure", "_keras"}
# Stages in data-flow order: a module may import only leaves and modules before it.
ORDER = ["quantizers", "scheme", "preparation", "training_callbacks", "stripping", "saving", "data", "flatbuffer",
         "runtime", "report", "export", "plots", "digits", "pipeline", "flags", "cli", "__main__"]


def test_public_names_are_the_documented_functions_even_after_every_submodule_is_imported():
    for module in pkgutil.iter_modules([PACKAGE_DIR]):
        if module.name != "__main__":
            importlib.import_module(f"tfjoint.{module.name}")
    for name in ("prepare", "callbacks", "strip", "load_model", "export_tflite"):
        assert inspect.isfunction(getattr(tfjoint, name)), name
    assert tfjoint.keras.__name__.startswith("tf_keras")
    assert set(tfjoint.__all__) >= {"prepare", "callbacks", "strip", "load_model", "keras", "export_tflite"}
    assert issubclass(tfjoint.ConfigError, ValueError) and issubclass(tfjoint.ModelTypeError, TypeError)


def _tfjoint_imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfjoint"):
            if node.module == "tfjoint":
                yield from (alias.name for alias in node.names)
            else:
                yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            yield from (a.name.split(".")[1] for a in node.names if a.name.startswith("tfjoint."))


def test_stages_only_import_earlier_stages_and_leaves():
    known = set(ORDER) | LEAVES | {"__init__"}
    files = {name[:-3] for name in os.listdir(PACKAGE_DIR) if name.endswith(".py")}
    assert files <= known, f"new module(s) {files - known}: add them to ORDER or LEAVES"
    for module in ORDER:
        for imported in _tfjoint_imports(os.path.join(PACKAGE_DIR, f"{module}.py")):
            if imported in LEAVES:
                continue
            assert imported in ORDER and ORDER.index(imported) < ORDER.index(module), f"{module} imports {imported}"


def test_docstring_examples_run():
    import tfjoint.preparation

    results = doctest.testmod(tfjoint.preparation, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0


def test_every_run_config_field_is_a_flag_and_round_trips():
    import dataclasses

    from absl import flags

    from tfjoint import flags as tfjoint_flags
    from tfjoint.pipeline import RunConfig

    values = flags.FlagValues()
    tfjoint_flags.define_flags(values)
    assert {f.name for f in dataclasses.fields(RunConfig)} <= set(values)
    values(["tfjoint", "--target_sparsity=0.6", "--epochs=3"])
    config = tfjoint_flags.config_from_flags(values)
    assert config.target_sparsity == 0.6 and config.epochs == 3 and config.model is None
    assert RunConfig(**config.to_dict()) == config
