"""The `tfjoint` command as a subprocess: files it writes and its exit codes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from conftest import ROOT, image_classifier, image_folder, run_python, tfjoint_cli_runs

pytestmark = pytest.mark.slow
FAST = ["--epochs=2", "--float_epochs=3"]


def tfjoint_cli(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "tfjoint", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def test_embedded_default_writes_everything_and_passes(tmp_path):
    out = tmp_path / "out"
    result = tfjoint_cli(f"--out={out}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.tflite", "float_model.tflite", "report.json", "run_config.json",
                 "sparsity_per_layer.png", "schedule.png", "weights_histogram.png", "sensitivity.png",
                 "per_layer_error.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "model_data.h").exists()  # --target=phone (the default): no C array
    report = json.loads((out / "report.json").read_text())
    run_config = json.loads((out / "run_config.json").read_text())
    assert report["passed"] and report["fully_int8"]
    assert report["weight_sparsity"] == pytest.approx(0.8, abs=0.005)  # the plan's mean over the pruned weights
    allocation = report["run"]["allocation"]
    assert allocation["method"] == "sensitivity" and set(allocation["curves"]) == set(allocation["plan"])
    for name, planned in allocation["plan"].items():
        if planned > 0:  # the table lists only what is pruned
            assert report["per_layer_sparsity"][name]["planned"] == pytest.approx(planned)
        else:
            assert name not in report["per_layer_sparsity"]
        assert run_config["resolved"]["schedule"]["target_sparsity"][name] == pytest.approx(planned)
    assert report["size_bytes"] == (out / "model.tflite").stat().st_size
    assert run_config["epochs"] == 2 and run_config["allocation"] == "sensitivity"
    assert "int8 accuracy" in result.stdout and "fully int8" in result.stdout
    assert "worst int8 layers" in result.stdout and "MicroMutableOpResolver" in result.stdout
    assert report["runtimes"] == ["litert"]
    assert (out / "model.tflite").read_bytes()[4:8] == b"TFL3"
    # Not a terminal: one line per epoch, no progress bar redrawn with \r or \b.
    assert "Epoch 2/2" in result.stdout + result.stderr and "\r" not in result.stdout and "\x08" not in result.stdout
    # Quiet by default: none of TensorFlow's log lines (C++ or Python), but progress for every phase.
    assert not [line for line in result.stderr.splitlines() if line[:5] in ("I0000", "W0000", "E0000")], result.stderr
    assert "signature_serialization" not in result.stderr and "Assets written" not in result.stderr
    assert "cuInit" not in result.stderr and "fully_quantize" not in result.stderr
    for phase in ("float training", "allocation", "prepare", "conversion", "validation", "per-layer error",
                  "latency"):
        assert f"{phase} done in" in result.stderr, phase


def test_micro_target_with_clusters_and_lut_compression_states_both_memories_in_the_c_header(tmp_path):
    out = tmp_path / "out"
    result = tfjoint_cli(f"--out={out}", *FAST, "--target=micro", "--clusters=16", "--compression=lut")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    compression = report["compression"]
    assert report["passed"] and compression["method"] == "lut" and compression["tensors"]
    assert compression["flash_bytes"] == (out / "model.tflite").stat().st_size < compression["uncompressed_flash_bytes"]
    assert all(t["bits"] <= 4 and t["values"] <= 16 for t in compression["tensors"])
    # RAM is one figure: the arena plus DECODE's alternate memory, or one larger arena where that is smaller; the
    # header gives the device the layout that was measured.
    memory = report["memory"]
    with_alt = memory["tflm_arena_bytes"] + compression["alt_decompression_bytes"]
    assert memory["ram_bytes"] == min(with_alt, memory["tflm_arena_bytes_without_alt_memory"])
    header = (out / "model_data.h").read_text()
    if memory["ram_uses_alt_memory"]:
        assert f"kTensorArenaSize = {-(-memory['tflm_arena_bytes'] // 16) * 16};" in header
        assert f"kAltDecompressionMemorySize = {-(-compression['alt_decompression_bytes'] // 16) * 16};" in header
    else:
        assert f"kTensorArenaSize = {-(-memory['tflm_arena_bytes_without_alt_memory'] // 16) * 16};" in header
        assert "kAltDecompressionMemorySize" not in header
    assert "AddDecode()" in result.stdout and "LUT compression" in result.stdout
    ram_line = next(line for line in result.stdout.splitlines() if line.startswith("RAM the device must provide"))
    assert f"{memory['ram_bytes'] / 1024:.1f} KB: {memory['ram_layout']}" in ram_line


def test_help_lists_the_commands_flags_by_group_with_defaults():
    result = tfjoint_cli("--help")
    assert result.returncode == 0
    text = result.stdout
    for group in ("model and data:", "schedule:", "channels, allocation and budgets:", "device and validation:",
                  "outputs:"):
        assert group in text
    words = " ".join(text.split())
    assert "--target_sparsity (default: none)" in words and "0.8 for --target=phone" in words
    assert "--target  (default: phone)" in text and "--max_total_drop" in text and "--unsafe_load" in text
    assert "--ram_kb" in text and "--arena_kb is its old name" in text and "--image_size" in text
    assert "Try --helpfull" not in text


def test_micro_target_with_budgets_is_planned_validated_and_met_in_tflm_and_sized_in_the_c_header(tmp_path):
    out = tmp_path / "out"
    result = tfjoint_cli(f"--out={out}", *FAST, "--target=micro", "--flash_kb=60", "--arena_kb=7")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["budget"]["flash_bytes"]["measured"] <= 60 * 1024 == report["budget"]["flash_bytes"]["limit"]
    assert report["budget"]["ram_bytes"]["measured"] <= 7 * 1024  # --arena_kb: the old name of --ram_kb
    assert report["run"]["plan"]["channel_fractions"] and (out / "budget.png").stat().st_size > 0
    assert (out / "model.tflite").stat().st_size <= 60 * 1024
    assert "distillation_loss" in report["run"]["history"]  # distilled from the float model: the default under a budget
    # --target=micro: validated in TFLM; no weight sparsity by default (TFLM stores weights dense), no host latency.
    assert report["runtimes"] == ["tflm"] and report["per_runtime"]["tflm"]["int8_accuracy"] > 0.5
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["target_sparsity"] is None and report["weight_sparsity"] < 0.05 and report["latency_ms"] == {}
    assert report["memory"]["int8_peak_rss_bytes"] is None
    # The device first: flash and RAM before the accuracy; RAM is the arena here (nothing compressed).
    assert result.stdout.index("RAM the device must provide") < result.stdout.index("int8 accuracy (tflm)")
    arena = report["memory"]["tflm_arena_bytes"]
    assert report["memory"]["ram_bytes"] == arena
    header = (out / "model_data.h").read_text()
    assert f"constexpr int kTensorArenaSize = {-(-arena // 16) * 16};" in header
    assert str(len((out / "model.tflite").read_bytes())) in (out / "model_data.cc").read_text()
    # Reduced for TFLM by default (--compression=auto): read back, the convolutions' per-channel kernels and biases
    # carry one zero point each, the file no tensor names; smaller than the converter's file by what was removed.
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(bytearray((out / "model.tflite").read_bytes()), 0).subgraphs[0]
    per_channel = [t.quantization for t in graph.tensors if t.quantization is not None
                   and t.quantization.scale is not None and len(t.quantization.scale) > 1]
    assert per_channel and all(len(q.zeroPoint) == 1 for q in per_channel)
    assert all(t.name is None for t in graph.tensors)
    reduction = report["compression"]["reduction"]
    assert report["compression"]["method"] == "tflm" and reduction["zero_points_removed"] > 0
    assert report["compression"]["uncompressed_flash_bytes"] - reduction["saved_bytes"] == report["size_bytes"]


@pytest.fixture(scope="module")
def saved_inputs(tmp_path_factory, digits_float_model, digits_data):
    folder = tmp_path_factory.mktemp("inputs")
    digits_float_model.save(str(folder / "float.h5"))
    np.savez(folder / "data.npz", **{k: digits_data[k] for k in ("x_train", "y_train", "x_val", "y_val")})
    return folder


def test_a_softmax_layer_classifier_from_a_keras_file_trains_with_the_right_loss(saved_inputs, digits_data, tmp_path):
    """A classifier ending in a Softmax *layer* must not be trained with from_logits=True; a tf_keras .keras file
    and an .npz (the .h5 goes through the command in the test below)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Softmax(name="probabilities")(keras.layers.Dense(10, name="logits")(x)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits_data["x_train"], digits_data["y_train"], epochs=5, verbose=0)
    model.save(str(tmp_path / "softmax.keras"))
    out = tmp_path / "out"
    result = tfjoint_cli(f"--model={tmp_path / 'softmax.keras'}", f"--data={saved_inputs / 'data.npz'}",
                         f"--out={out}", "--epochs=3", "--target_sparsity=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    loss = json.loads((out / "run_config.json").read_text())["resolved"]["loss"]
    assert loss["class_name"] == "SparseCategoricalCrossentropy" and loss["config"]["from_logits"] is False
    report = json.loads((out / "report.json").read_text())
    assert report["int8_accuracy"] > 0.85 and report["passed"]
    assert report["weight_sparsity"] == pytest.approx(0.5, abs=0.005)


def test_failed_validation_exits_1_and_still_writes_the_report(saved_inputs, tmp_path):
    out = tmp_path / "out"
    result = tfjoint_cli(f"--model={saved_inputs / 'float.h5'}", f"--data={saved_inputs / 'data.npz'}",
                         f"--out={out}", "--epochs=1", "--min_sqnr_db=500")
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and "min_sqnr_db" in report["failures"][0]["text"]
    assert not (out / "model.tflite").exists()
    assert (out / "model.rejected.tflite").exists()
    assert "validation failed" in result.stderr.splitlines()[-1]


BAD_ARGUMENTS = [
    (["--target_sparsity=1.5"], "--target_sparsity"),
    (["--epochs=0"], "--epochs"),
    (["--loss=hinge"], "--loss"),
    (["--model=/nonexistent/model.h5", "--data=/nonexistent/data.npz"], "/nonexistent/data.npz"),
    (["--data=/tmp/x.npz"], "--model"),
    (["positional"], "unexpected arguments"),
    (["--target_sparsity=0.99", "--max_sparsity=0.9"], "--max_sparsity"),
    (["--flash_kb=1"], "`flash_bytes`=1024 is below"),
    (["--image_size=big"], "--image_size"),
    (["--clusters=16", "--compression=lut"], "--compression=lut writes TFLM_DECODE operators"),
    (["--target=micro", "--compression=lut"], "--compression=lut needs --clusters"),
    (["--clusters=1"], "--clusters"),
]


def test_bad_arguments_and_data_exit_2_with_one_line_naming_the_flag_key_or_file(saved_inputs, digits_data,
                                                                                  tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=np.zeros((4, 8, 8, 1)))
    misshapen = tmp_path / "misshapen.npz"
    np.savez(misshapen, x_train=digits_data["x_train"][:, :4], y_train=digits_data["y_train"],
             x_val=digits_data["x_val"], y_val=digits_data["y_val"])
    cases = [([f"--out={tmp_path / 'out'}", "--float_epochs=1", *args], [named]) for args, named in BAD_ARGUMENTS]
    tiny = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.GlobalAveragePooling2D(),  # 10 weights: LUT's
                             keras.layers.Dense(10, activation="softmax", name="classes")])  # tables cost more
    tiny.save(str(tmp_path / "tiny.keras"))
    cases += [([f"--model={tmp_path / 'tiny.keras'}", f"--data={saved_inputs / 'data.npz'}", "--target=micro",
                "--clusters=16", "--compression=lut", f"--out={tmp_path / 'lut'}"],
               ["--compression=lut", "'classes' (10 weights)", "--compression=tflm"]),
              ([f"--model={saved_inputs / 'float.h5'}", f"--data={missing}", f"--out={tmp_path / 'out'}"],
               ["lacks ['y_train', 'x_val', 'y_val']"]),
              ([f"--model={saved_inputs / 'float.h5'}", f"--data={misshapen}", f"--out={tmp_path / 'out'}"],
               ["--data", "'x_train'"])]
    for (argv, named), (status, stderr) in zip(cases, tfjoint_cli_runs(*(argv for argv, _ in cases)), strict=True):
        assert status == 2, (argv, stderr[-2000:])
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("tfjoint:") and all(part in last for part in named), (argv, last)
        assert "sample_inputs" not in last  # the command's words, not the library's
    assert not (tmp_path / "lut").exists() or not os.listdir(tmp_path / "lut")  # refused before training


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "tfjoint")
    assert os.path.exists(script), "pip install -e . should install the `tfjoint` console script"
    result = subprocess.run([script, "--helpfull"], capture_output=True, text=True, timeout=300)
    assert "--target_sparsity" in result.stdout and "--max_mse_increase" in result.stdout  # (absl exits 1 after help)


def test_a_keras3_model_saved_the_default_way_goes_through_the_command(saved_inputs, digits_data, tmp_path):
    """TF 2.16+'s default Keras: trained and saved with Keras 3 (as .keras, its default; a Keras 3 .h5 loads in
    test_safe_load), fine-tuned and shipped by tfjoint."""
    suffix = ".keras"
    import keras as keras3

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((8, 8, 1), name="image")
    x = keras3.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras3.layers.BatchNormalization(name="bn")(x)
    x = keras3.layers.ReLU(name="relu")(x)
    x = keras3.layers.MaxPooling2D(name="pool")(x)
    x = keras3.layers.Flatten(name="flatten")(x)
    x = keras3.layers.Dense(64, activation="relu", name="fc")(x)
    model3 = keras3.Model(inputs, keras3.layers.Dense(10, activation="softmax", name="classes")(x))
    model3.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model3.fit(digits_data["x_train"], digits_data["y_train"], epochs=10, verbose=0)
    keras3_accuracy = model3.evaluate(digits_data["x_val"], digits_data["y_val"], verbose=0)[1]
    path = tmp_path / f"model{suffix}"
    model3.save(str(path))
    out = tmp_path / "out"
    result = tfjoint_cli(f"--model={path}", f"--data={saved_inputs / 'data.npz'}", f"--out={out}", "--epochs=8")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["fully_int8"] and report["passed"]
    assert report["weight_sparsity"] == pytest.approx(0.8, abs=0.005)
    assert keras3_accuracy > 0.9 and report["int8_accuracy"] >= keras3_accuracy - 0.02


def test_channels_distillation_another_allocation_and_xla_from_the_command(tmp_path):
    """Flags of four features in one run (each is tested through the library on its own)."""
    out = tmp_path / "out"
    result = tfjoint_cli(f"--out={out}", *FAST, "--channel_sparsity=0.5", "--target_sparsity=0.9", "--allocation=erk",
                         "--distill", "--distill_temperature=2", "--distill_alpha=0.5", "--jit_compile")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    channels = report["per_layer_channels"]
    assert channels["conv1"] == {"original": 32, "keras": 16, "tflite": 16, "unit": "channels"}
    assert channels["classes"]["tflite"] == 10  # the output keeps its channels
    assert report["run"]["allocation"]["method"] == "erk" and not (out / "sensitivity.png").exists()
    plan = {name: planned for name, planned in report["run"]["allocation"]["plan"].items() if planned > 0}
    assert plan and set(report["per_layer_sparsity"]) == set(plan)
    for name, planned in plan.items():  # within the kept channels, as planned; read back from the file
        assert report["per_layer_sparsity"][name]["tflite"] == pytest.approx(planned, abs=0.01), name
    config = json.loads((out / "run_config.json").read_text())
    assert config["resolved"]["schedule"]["channel_sparsity"] == 0.5
    assert config["distill"] is True and config["distill_temperature"] == 2.0 and config["jit_compile"] is True
    assert "distillation_loss" in report["run"]["history"]
    assert (out / "sparsity_per_layer.png").stat().st_size > 0


def test_an_image_folder_is_data_with_image_size(tmp_path):
    """RGB images for a 3-channel model (the same folder read as grayscale for a 1-channel model: test_app)."""
    images = image_folder(tmp_path / "images")
    image_classifier(3).save(str(tmp_path / "float.keras"))
    out = tmp_path / "out"
    result = tfjoint_cli(f"--model={tmp_path / 'float.keras'}", f"--data={images}", "--image_size=16",
                         f"--out={out}", "--epochs=2", "--target_sparsity=0.5", "--allocation=uniform")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["num_validation_samples"] == round(32 * 0.2) and report["fully_int8"]
    assert report["inputs"][0]["shape"][-1] == 3  # (its refusals without or with a wrong --image_size: test_app)


def test_an_unexpected_error_exits_3_with_one_line_and_the_traceback_in_error_log(tmp_path):
    out = tmp_path / "out"
    result = run_python(f"""
        import sys
        import tfjoint.app.pipeline as pipeline
        from tfjoint.app.cli import run_main

        def broken(config):
            raise KeyError("query_shape")

        pipeline.run = broken
        sys.argv = ["tfjoint", "--out={out}"]
        run_main()
    """, check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "unexpected error KeyError: 'query_shape'" in last and str(out / "error.log") in last
    assert "Traceback" in (out / "error.log").read_text() and "broken" in (out / "error.log").read_text()



def test_a_long_failure_keeps_what_to_do_in_the_commands_one_line():
    from tfjoint.app.pipeline import _clipped

    message = "`compression`='lut' found nothing: " + "; ".join(f"'layer{i}': too small" for i in range(60)) + \
        ". Export with compression='tflm' instead."
    line = _clipped(message)
    assert len(line) <= 500 and line.startswith("`compression`='lut' found nothing: 'layer0'")
    assert line.endswith("Export with compression='tflm' instead.")
    assert _clipped("short. message") == "short. message"
