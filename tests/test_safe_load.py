"""A model file is data: loading it runs no code from it unless the user says so (issues 31 and 35).

Two kinds of proof that code ran: a marker file a gadget writes, and the import of a module
(`tfjoint_test_gadget`, written into a temporary folder on `sys.path`) whose import itself writes the marker. A
config that names it anywhere would import it under tf_keras's loader.
"""

import copy
import json
import os
import random
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from conftest import run_python

import tfjoint

GADGET = "tfjoint_test_gadget"


@pytest.fixture
def gadget(tmp_path, monkeypatch):
    """A module whose import, or any call of its functions and classes, writes `marker`; returns the marker path."""
    marker = tmp_path / "marker"
    (tmp_path / f"{GADGET}.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")

        def act(*args, **kwargs):
            open({str(marker)!r}, "w").write("called")
            return args[0] if args else None

        class Thing:
            def __init__(self, *args, **kwargs):
                open({str(marker)!r}, "w").write("constructed")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, GADGET, raising=False)
    yield marker
    sys.modules.pop(GADGET, None)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden), name="small")


def _read(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def _rewrite(source, target, config=None, metadata=None) -> str:
    """A copy of a .keras file with its config.json (and metadata.json) replaced."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as copy_:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename == "config.json" and config is not None:
                data = json.dumps(config).encode()
            if item.filename == "metadata.json" and metadata is not None:
                data = json.dumps(dict(json.loads(data), **metadata)).encode()
            copy_.writestr(item, data)
    return str(target)


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == name)


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("base") / "small.keras"
    _model().save(path)
    return str(path)


def _refused(path, reference: str, marker, layer: str | None = None):
    match = f"'{path}' names code.*" + (f"layer '{layer}'.*" if layer else "") + f"'{reference}'"
    with pytest.raises(tfjoint.UnsafeFileError, match=match) as caught:
        tfjoint.load_model(path)
    assert reference in caught.value.references and caught.value.file == str(path)
    assert not os.path.exists(marker), "code from the file ran"
    return caught.value


# --- Foreign functions and classes, wherever a config can name them -----------------------------------------------

def _function(module: str, name: str) -> dict:
    return {"module": module, "class_name": "function", "config": name, "registered_name": name}


def test_the_cve_2025_1550_pattern_a_lambda_naming_pydoc_pipepager_is_refused(base_file, tmp_path):
    config = _read(base_file)
    hidden = _layer(config, "hidden")
    marker = tmp_path / "pipepager_marker"
    lambda_layer = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                    "config": {"name": "evil", "trainable": True, "dtype": "float32",
                               "function": _function("pydoc", "pipepager"), "function_type": "function",
                               "module": "pydoc", "output_shape": None, "output_shape_type": "raw",
                               "output_shape_module": None, "arguments": {"cmd": f"touch {marker}"}},
                    "inbound_nodes": [[["x", 0, 0, {}]]]}
    config["config"]["layers"].insert(1, lambda_layer)
    hidden["inbound_nodes"] = [[["evil", 0, 0, {}]]]
    path = _rewrite(base_file, tmp_path / "pipepager.keras", config)
    _refused(path, "pydoc.pipepager", marker, layer="evil")


@pytest.mark.parametrize("where", ["activation", "kernel_initializer", "kernel_regularizer", "kernel_constraint"])
def test_a_foreign_module_named_in_a_layer_argument_is_refused_before_it_is_imported(base_file, tmp_path, gadget,
                                                                                     where):
    config = _read(base_file)
    reference = (_function(GADGET, "act") if where == "activation" else
                 {"module": GADGET, "class_name": "Thing", "config": {}, "registered_name": None})
    _layer(config, "hidden")["config"][where] = reference
    path = _rewrite(base_file, tmp_path / f"{where}.keras", config)
    name = "act" if where == "activation" else "Thing"
    error = _refused(path, f"{GADGET}.{name}", gadget, layer="hidden")
    assert "outside Keras, tf_keras, keras_hub, TF-MOT and tfjoint" in str(error)


def test_a_foreign_learning_rate_schedule_in_the_compile_config_is_refused(tmp_path, gadget):
    model = _model()
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)), "mse")
    model.save(tmp_path / "compiled.keras")
    config = _read(tmp_path / "compiled.keras")
    schedule = config["compile_config"]["optimizer"]["config"]["learning_rate"]
    schedule.update(module=GADGET, class_name="Thing")
    path = _rewrite(tmp_path / "compiled.keras", tmp_path / "schedule.keras", config)
    _refused(path, f"{GADGET}.Thing", gadget)


@pytest.fixture(scope="module")
def prepared_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prepared") / "prepared.keras"
    tfjoint.prepare(_model(), tfjoint.JointSchedule(target_sparsity=0.5, end_step=10),
                    check=False).save(path)
    return str(path)


def _dicts(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dicts(value)


def test_a_foreign_pruning_schedule_in_tfjoints_own_config_is_refused(prepared_file, tmp_path, gadget):
    config = _read(prepared_file)
    config["config"]["tfjoint_schedule"]["weight_schedule"] = {"class_name": "Thing", "module": GADGET, "config": {}}
    path = _rewrite(prepared_file, tmp_path / "schedule.keras", config)
    _refused(path, f"{GADGET}.Thing", gadget)


def test_a_foreign_quantizer_in_a_quantize_config_is_refused(prepared_file, tmp_path, gadget):
    config = _read(prepared_file)
    quantizer = next(node for node in _dicts(config) if node.get("class_name") == "AllValuesQuantizer")
    quantizer.update(class_name="Thing", module=GADGET)
    path = _rewrite(prepared_file, tmp_path / "quantizer.keras", config)
    _refused(path, f"{GADGET}.Thing", gadget)


def test_a_prepared_model_and_its_stripped_model_load_with_their_records(prepared_file, tmp_path):
    joint = tfjoint.load_model(prepared_file)
    assert tfjoint.inspect.schedule_of(joint).end_step == 10
    stripped = tfjoint.strip(joint)
    stripped.save(tmp_path / "stripped.keras")
    loaded = tfjoint.load_model(tmp_path / "stripped.keras")
    assert loaded.training.schedule.end_step == 10 and loaded.training.plan == {"hidden": 0.5, "head": 0.5}
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), stripped.predict(x, verbose=0))


# --- Gadgets inside the allowed packages -------------------------------------------------------------------------

@pytest.mark.parametrize("module, name", [
    ("keras.src.saving.serialization_lib", "enable_unsafe_deserialization"),  # CVE-2025-9906
    ("keras.config", "enable_unsafe_deserialization"),
    ("keras.utils", "get_file"),  # CVE-2025-8747
    ("keras.src.utils.file_utils", "get_file"),
    ("keras.activations", "deserialize"),
    ("tfjoint.__main__", "run_main"),  # importing it would run the command
])
def test_gadgets_inside_keras_and_tfjoint_are_not_what_a_model_is_made_of(base_file, tmp_path, module, name):
    config = _read(base_file)
    _layer(config, "hidden")["config"]["activation"] = _function(module, name)
    path = _rewrite(base_file, tmp_path / "gadget.keras", config)
    before = set(sys.modules)
    _refused(path, f"{module}.{name}", tmp_path / "no-marker", layer="hidden")
    assert "tfjoint.__main__" not in set(sys.modules) - before


def test_a_layer_that_runs_another_program_is_refused(base_file, tmp_path):
    config = _read(base_file)
    layer = _layer(config, "hidden")
    layer.update(class_name="TFSMLayer", module="keras.layers")
    path = _rewrite(base_file, tmp_path / "tfsm.keras", config)
    _refused(path, "keras.layers.TFSMLayer", tmp_path / "no-marker", layer="hidden")


def test_a_tf_op_lambda_may_only_call_tensor_math(tmp_path):
    inputs = keras.Input((6,), name="x")
    scaled = keras.layers.Dense(4, name="hidden")(inputs) * 2.0  # a TFOpLambda of math.multiply
    keras.Model(inputs, scaled).save(tmp_path / "op.keras")
    config = _read(tmp_path / "op.keras")
    assert tfjoint.load_model(tmp_path / "op.keras") is not None  # tensor math loads
    op = next(node for node in config["config"]["layers"] if node["class_name"] == "TFOpLambda")
    op["config"]["function"] = "io.write_file"
    marker = tmp_path / "written"
    op["inbound_nodes"] = [[str(marker), "x", {}]]
    path = _rewrite(tmp_path / "op.keras", tmp_path / "write_file.keras", config)
    _refused(path, "tensorflow.io.write_file", marker)


# --- Bytecode, in every format ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bytecode_files(tmp_path_factory):
    """A tf_keras .h5, .keras and SavedModel, and a Keras 3 .keras and .h5, each with a Lambda whose lambda writes a
    marker (made in a child process: building the model calls the lambda, which writes the marker there)."""
    directory = tmp_path_factory.mktemp("bytecode")
    run_python(textwrap.dedent(f"""
        import os
        import tfjoint
        import tf_keras as keras
        marker = {str(directory / "marker")!r}
        inputs = keras.Input((4,), name="x")
        evil = keras.layers.Lambda(lambda x: (open({str(directory / "marker")!r}, "w").write("ran"), x)[1],
                                   name="evil")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, name="head")(evil))
        for name in ("model.h5", "model.keras", "saved_model"):
            model.save(os.path.join({str(directory)!r}, name))
        import keras as keras3
        inputs = keras3.Input((4,), name="x")
        evil = keras3.layers.Lambda(lambda x: (open({str(directory / "marker")!r}, "w").write("ran"), x)[1],
                                    name="evil")(inputs)
        for name in ("keras3.keras", "keras3.h5"):
            keras3.Model(inputs, keras3.layers.Dense(2, name="head")(evil)).save(os.path.join({str(directory)!r}, name))
        os.remove(marker)
    """))
    return directory


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "saved_model", "keras3.keras", "keras3.h5"])
def test_a_lambda_stored_as_bytecode_is_refused_in_every_format(bytecode_files, name):
    path = str(bytecode_files / name)
    with pytest.raises(tfjoint.UnsafeFileError, match=f"'{path}' names code.*layer 'evil'.*bytecode") as caught:
        tfjoint.load_model(path)
    message = str(caught.value)
    if name.startswith("keras3"):  # the bridge cannot carry a Keras 3 Lambda: safe_mode=False would not help
        assert "whatever safe_mode says" in message and "safe_mode=False" not in message
    else:
        assert "register the Lambda's function" in message and "safe_mode=False" in message
    assert not os.path.exists(bytecode_files / "marker")


def test_safe_mode_false_loads_a_trusted_file_and_its_code_runs(bytecode_files):
    model = tfjoint.load_model(bytecode_files / "model.h5", safe_mode=False)
    assert [layer.name for layer in model.layers] == ["x", "evil", "head"]
    assert os.path.exists(bytecode_files / "marker")  # the opt-in is real: the file's code ran
    os.remove(bytecode_files / "marker")
    with pytest.raises(tfjoint.ConfigError, match="`safe_mode` must be True or False; received 'no'"):
        tfjoint.load_model(bytecode_files / "model.h5", safe_mode="no")


@pytest.mark.parametrize("declared, written_by", [("2.15.0", "keras3.keras"), ("3.9.0", "model.keras")])
def test_the_version_a_file_declares_does_not_change_what_is_checked(bytecode_files, tmp_path, declared,
                                                                   written_by):
    path = _rewrite(bytecode_files / written_by, tmp_path / "spoofed.keras", metadata={"keras_version": declared})
    with pytest.raises(tfjoint.TfjointError):  # refused, or (read by the other loader) not loadable: never run
        tfjoint.load_model(path)
    assert not os.path.exists(bytecode_files / "marker")


def test_a_lambda_of_a_registered_function_loads_by_name_and_the_registered_function_runs(tmp_path):
    result = run_python(textwrap.dedent(f"""
        import numpy as np
        import tfjoint
        import tf_keras as keras

        @keras.utils.register_keras_serializable(package="test_safe_load")
        def doubled(x):
            return 2.0 * x

        inputs = keras.Input((4,), name="x")
        model = keras.Model(inputs, keras.layers.Lambda(doubled, name="double")(inputs))
        for name in ("named.h5", "named.keras"):
            path = {str(tmp_path)!r} + "/" + name
            model.save(path)
            loaded = tfjoint.load_model(path)
            print("LOADED", name, [layer.name for layer in loaded.layers], loaded.layers[1].function is doubled,
                  float(loaded.predict(np.ones((1, 4), np.float32), verbose=0)[0, 0]))
    """))
    assert "LOADED named.h5 ['x', 'double'] True 2.0" in result.stdout
    assert "LOADED named.keras ['x', 'double'] True 2.0" in result.stdout


# --- SavedModels ---------------------------------------------------------------------------------------------------

def test_a_saved_model_is_rebuilt_from_its_config_and_never_revived(tmp_path):
    model = _model()
    model.save(tmp_path / "plain")
    loaded = tfjoint.load_model(tmp_path / "plain")
    x = np.random.default_rng(0).random((3, 6), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert not any("Revived" in type(layer).__name__ for layer in loaded.layers)
    run_python(textwrap.dedent(f"""
        import tfjoint
        import tf_keras as keras

        class Unregistered(keras.layers.Layer):  # not registered: only its graph functions could revive it
            def call(self, x):
                return 2.0 * x

        inputs = keras.Input((4,), name="x")
        keras.Model(inputs, Unregistered(name="custom")(inputs)).save({str(tmp_path / "custom")!r})
    """))
    with pytest.raises(tfjoint.UnsafeFileError, match="layer 'custom'.*'Unregistered'"):
        tfjoint.load_model(tmp_path / "custom")


# --- Fuzzing the references --------------------------------------------------------------------------------------

_MODULES = [None, "os", "subprocess", "pydoc", "builtins", "posix", GADGET, "keras", "keras.layers",
            "keras.activations", "keras.src.saving.serialization_lib", "keras.src.utils.file_utils", "keras.utils",
            "tf_keras.src.utils", "tf_keras.layers", "tfjoint.__main__", "tfjoint.app.cli", "tensorflow.io", "numpy",
            "shutil", "keras_hub", "tensorflow_model_optimization", "importlib", "..", "keras.", "a.b.c"]
_NAMES = ["system", "pipepager", "enable_unsafe_deserialization", "get_file", "Dense", "relu", "eval", "exec",
          "__import__", "run", "act", "Thing", "Conv2D", "Lambda", "TFSMLayer", "run_main", "rmtree", "Functional",
          "GlorotUniform", "deserialize", "function", "import_module", "", "Zeros", "L2", "sigmoid"]


def test_fuzzed_references_raise_only_tfjoint_errors_and_run_nothing(base_file, tmp_path, gadget):
    config = _read(base_file)
    references = [node for node in _dicts(config) if "class_name" in node]
    rng = random.Random(35)
    outcomes = {"loaded": 0, "refused": 0, "other tfjoint error": 0}
    for case in range(520):
        mutated = copy.deepcopy(config)
        target = rng.choice([node for node in _dicts(mutated) if "class_name" in node])
        change = rng.random()
        if change < 0.45:
            target["module"] = rng.choice(_MODULES)
        if change > 0.3:
            target["class_name"] = rng.choice(_NAMES)
        if rng.random() < 0.3:
            target["class_name"], target["config"] = "function", rng.choice(_NAMES)
        if rng.random() < 0.2:
            target["registered_name"] = rng.choice(_NAMES)
        path = _rewrite(base_file, tmp_path / f"fuzz{case % 4}.keras", mutated)
        try:
            tfjoint.load_model(path)
            outcomes["loaded"] += 1
        except tfjoint.UnsafeFileError:
            outcomes["refused"] += 1
        except tfjoint.TfjointError:
            outcomes["other tfjoint error"] += 1
        assert not os.path.exists(gadget), f"case {case}: code ran: {target}"
        assert GADGET not in sys.modules, f"case {case}: the gadget module was imported: {target}"
    assert len(references) > 5 and outcomes["refused"] > 250 and sum(outcomes.values()) == 520, outcomes


@pytest.mark.slow
def test_the_command_refuses_the_file_and_names_the_flag(bytecode_files, tmp_path):
    data = tmp_path / "data.npz"
    x = np.zeros((8, 4), np.float32)
    np.savez(data, x_train=x, y_train=np.zeros((8, 2), np.float32), x_val=x, y_val=np.zeros((8, 2), np.float32))
    result = run_python(f"""
        import sys
        from tfjoint.app.cli import run_main
        sys.argv = ["tfjoint", "--model={bytecode_files / 'model.h5'}", "--data={data}", "--out={tmp_path / 'out'}"]
        run_main()
    """, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "layer 'evil'" in result.stderr and "--unsafe_load" in result.stderr
    assert not os.path.exists(bytecode_files / "marker")
