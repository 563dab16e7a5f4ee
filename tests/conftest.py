"""Shared fixtures: small seeded models and data, and one trained digits model for the whole session.

Importing tfjoint first sets TF_USE_LEGACY_KERAS before TensorFlow loads.
"""

import json
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402

import tfjoint  # noqa: E402
from tfjoint.tflite import convert as _convert_module  # noqa: E402
from tfjoint.train import conversion_check as _conversion_check_module  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The longest test files (`make test`'s --durations), longest first. pytest-xdist's --dist loadfile hands files to
# its workers in collection order, so a long file collected last runs alone while the other worker idles: one run
# measured 1590 s of tests in 840 s on two workers. Longest first leaves only short files for the end.
_LONGEST_FIRST = ("test_transformers.py", "test_cli.py", "test_examples_and_notebook.py", "test_lstm.py",
                  "test_budget.py", "test_weight_sharing.py", "test_layout_rewrites.py", "test_streaming.py",
                  "test_distributed.py", "test_channels.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))  # stable: the rest keep


def run_python(code: str, env_extra=None, *, keep_legacy_keras_flag: bool = True, check: bool = True):
    """Runs `code` in a fresh interpreter with tfjoint importable; returns the CompletedProcess.

    `keep_legacy_keras_flag=False` removes TF_USE_LEGACY_KERAS from the environment,
    as on a user's machine where nothing set it.
    """
    env = {k: v for k, v in os.environ.items() if keep_legacy_keras_flag or k != "TF_USE_LEGACY_KERAS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, **(env_extra or {}))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                            timeout=900, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


_END_OF_RUN = "@@tfjoint-run-ended "
_RUNS = """
    import json, sys
    from absl import flags
    from tfjoint.app.cli import run_main

    for argv, setup in json.loads({runs!r}):
        exec(setup)
        sys.argv = ["tfjoint", *argv]
        try:
            run_main()
            status = 0
        except SystemExit as exit:
            status = exit.code
        flags.FLAGS.unparse_flags()
        print({end!r} + str(status), file=sys.stderr, flush=True)
"""


def tfjoint_cli_runs(*argvs, setups=None) -> list[tuple[int, str]]:
    """Several command lines through the console script's entry point, one after another in one process (one
    TensorFlow import for all): each one's exit status and what it wrote to stderr. `setups`: Python code run
    in that process before each command line (to replace a stage, say), one per line."""
    setups = list(setups) if setups is not None else [""] * len(argvs)
    runs_json = json.dumps([[list(argv), setup] for argv, setup in zip(argvs, setups, strict=True)])
    result = run_python(_RUNS.format(runs=runs_json, end=_END_OF_RUN), check=False)
    runs, lines = [], []
    for line in result.stderr.splitlines():
        if line.startswith(_END_OF_RUN):
            runs.append((int(line[len(_END_OF_RUN):]), "\n".join(lines)))
            lines = []
        else:
            lines.append(line)
    assert len(runs) == len(argvs), result.stderr[-3000:]
    return runs


def _conversion_in_a_fast_test(*args, **kwargs):
    raise AssertionError("a test outside the slow tier converted a model: mark it @pytest.mark.slow (the fast tier, "
                         "`make test-fast`, runs no conversion)")


@pytest.fixture(autouse=True)
def _fast_tests_do_not_convert(request, monkeypatch):
    """The fast tier runs no conversion: prepare's conversion check is skipped there (slow tests cover it), and any
    other conversion fails the test."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("benchmark"):
        return
    monkeypatch.setattr(_conversion_check_module, "refuse_what_export_would",
                        lambda prepared, runtimes=(), streaming=False: None)
    monkeypatch.setattr(_convert_module, "_convert", _conversion_in_a_fast_test)


def small_cnn(seed: int = 0) -> keras.Model:
    """Conv+BN+ReLU -> Flatten -> Dense softmax on 8x8x1 inputs."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def image_data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, n)


@pytest.fixture
def cnn():
    return small_cnn()


@pytest.fixture
def images():
    return image_data()


def compile_joint(model, learning_rate: float = 1e-3):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="session")
def digits_data():
    """scikit-learn's bundled digits, split as the command splits them."""
    from tfjoint.app import digits

    return digits.load_digits()


@pytest.fixture(scope="session")
def digits_float_model(digits_data):
    """The digits CNN trained in float once per session. Tests must not train or modify it."""
    from tfjoint.app import digits

    return digits.train_float_model(digits_data, epochs=4)


@pytest.fixture(scope="session")
def digits_joint(digits_float_model, digits_data):
    """The digits CNN prepared (80%, target at step 40) and fitted 2 epochs, once per session."""
    model = tfjoint.prepare(digits_float_model, tfjoint.JointSchedule(0.8, end_step=40, frequency=10))
    model.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    model.fit(digits_data["x_train"], digits_data["y_train"], batch_size=32, epochs=2, verbose=0)
    return model


def image_folder(folder):
    """Two classes of 20x20 PNGs, red and blue, 16 each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, colour in (("red", 0), ("blue", 2)):
        (folder / label).mkdir(parents=True)
        for index in range(16):
            pixels = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
            pixels[..., colour] = rng.integers(180, 255, (20, 20))
            Image.fromarray(pixels).save(folder / label / f"{index}.png")
    return folder


def image_classifier(channels: int):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, channels), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="classes")(x))
