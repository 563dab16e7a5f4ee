"""Loading a model file runs no code from it unless the user says so (issue 31).

Each file holds a Lambda whose function writes a marker file: the marker is the proof that code from the file ran.
"""

import os
import textwrap

import pytest
from conftest import run_python

import tfjoint


def _write_files(directory) -> dict[str, str]:
    """A tf_keras .h5, .keras and SavedModel and a Keras 3 .keras, each with a marker-writing Lambda (made in a
    child process: saving a SavedModel traces the Lambda, which writes the marker there, not here)."""
    run_python(textwrap.dedent(f"""
        import os
        import tfjoint
        from tfjoint import keras
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
        keras3.Model(inputs, keras3.layers.Dense(2, name="head")(evil)).save(
            os.path.join({str(directory)!r}, "keras3.keras"))
        if os.path.exists(marker):
            os.remove(marker)
    """))
    return {name: str(directory / name) for name in ("model.h5", "model.keras", "saved_model", "keras3.keras")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _write_files(tmp_path_factory.mktemp("unsafe"))


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "saved_model", "keras3.keras"])
def test_a_file_that_would_run_code_is_refused_before_any_runs(files, name):
    marker = os.path.join(os.path.dirname(files[name]), "marker")
    with pytest.raises(tfjoint.UnsafeFileError, match=f"'{files[name]}' holds code.*layer 'evil' \\(Lambda\\).*"
                                                      "safe_mode=False.*--unsafe_load"):
        tfjoint.load_model(files[name])
    assert not os.path.exists(marker)


def test_safe_mode_false_loads_a_trusted_file_and_its_code_runs(files):
    marker = os.path.join(os.path.dirname(files["model.h5"]), "marker")
    model = tfjoint.load_model(files["model.h5"], safe_mode=False)
    assert [layer.name for layer in model.layers] == ["x", "evil", "head"]
    assert os.path.exists(marker)  # the opt-in is real: the file's code ran
    os.remove(marker)
    with pytest.raises(tfjoint.ConfigError, match="`safe_mode` must be True or False; received 'no'"):
        tfjoint.load_model(files["model.h5"], safe_mode="no")


def test_a_lambda_of_a_registered_function_is_stored_by_name_and_loads(tmp_path):
    result = run_python(textwrap.dedent(f"""
        import tfjoint
        from tfjoint import keras
        from tfjoint.train.saving import code_in_file

        @keras.utils.register_keras_serializable(package="test_safe_load")
        def doubled(x):
            return 2.0 * x

        inputs = keras.Input((4,), name="x")
        model = keras.Model(inputs, keras.layers.Lambda(doubled, name="double")(inputs))
        path = {str(tmp_path / "named.h5")!r}
        model.save(path)
        print("CODE", code_in_file(path))
        print("LOADED", [layer.name for layer in tfjoint.load_model(path).layers])
    """))
    assert "CODE []" in result.stdout and "LOADED ['x', 'double']" in result.stdout


@pytest.mark.slow
def test_the_command_refuses_the_file_and_names_the_flag(files, tmp_path):
    import numpy as np

    data = tmp_path / "data.npz"
    x = np.zeros((8, 4), np.float32)
    np.savez(data, x_train=x, y_train=np.zeros((8, 2), np.float32), x_val=x, y_val=np.zeros((8, 2), np.float32))
    marker = os.path.join(os.path.dirname(files["model.h5"]), "marker")
    result = run_python(f"""
        import sys
        from tfjoint.app.cli import run_main
        sys.argv = ["tfjoint", "--model={files['model.h5']}", "--data={data}", "--out={tmp_path / 'out'}"]
        run_main()
    """, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "layer 'evil' (Lambda)" in result.stderr and "--unsafe_load" in result.stderr
    assert not os.path.exists(marker)
