"""What a device developer gets: I/O quantization read back from the file, a C array, and a guide that runs."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter
from conftest import ROOT

import tfjoint
from tfjoint.tflite.runtimes import TFLiteModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(digits_joint, digits_float_model, digits_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    report = tfjoint.export_tflite(digits_joint, str(folder / "model.tflite"), float_model=digits_float_model,
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]))
    report.save_json(str(folder / "report.json"))
    return folder, report


def _interpreter_io(path):
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    def entries(details):
        return [{"index": d["index"], "name": d["name"], "shape": [int(x) for x in d["shape_signature"]],
                 "dtype": np.dtype(d["dtype"]).name, "scale": float(d["quantization"][0]),
                 "zero_point": int(d["quantization"][1])} for d in details]
    return entries(interpreter.get_input_details()), entries(interpreter.get_output_details())


def _without(entries, *keys):
    return [{k: v for k, v in e.items() if k not in keys} for e in entries]


def test_the_reported_io_quantization_is_what_the_interpreter_says(exported):
    folder, report = exported
    inputs, outputs = _interpreter_io(folder / "model.tflite")
    assert _without(report.inputs, "signature_name", "float_range") == inputs
    assert _without(report.outputs, "signature_name", "float_range") == outputs
    low, high = report.inputs[0]["float_range"]
    assert low == pytest.approx((-128 - inputs[0]["zero_point"]) * inputs[0]["scale"])
    assert high == pytest.approx((127 - inputs[0]["zero_point"]) * inputs[0]["scale"])
    assert low <= 0.0 and high >= 0.99  # digits pixels are in [0, 1]: the preprocessing matches
    assert "zero point" in str(report) and report.inputs[0]["signature_name"] == "image"


def test_a_multi_input_multi_output_model_lists_every_tensor_in_file_order(tmp_path):
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    merged = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu", name="da")(a), b])
    model = keras.Model([a, b], [keras.layers.Dense(3, name="o1")(merged), keras.layers.Dense(1, name="o2")(merged)])
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=2, frequency=1))
    joint.compile("adam", ["mse", "mse"])
    x = [np.random.default_rng(0).random((16, 6), np.float32), np.random.default_rng(1).random((16, 4), np.float32)]
    joint.fit(x, [np.zeros((16, 3)), np.zeros((16, 1))], batch_size=8, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "m.tflite"), validation_data=x)
    inputs, outputs = _interpreter_io(tmp_path / "m.tflite")
    assert len(report.inputs) == 2 and len(report.outputs) == 2
    assert _without(report.inputs, "signature_name", "float_range") == inputs
    assert _without(report.outputs, "signature_name", "float_range") == outputs
    assert {e["signature_name"] for e in report.inputs} == {"a", "b"}


def _bytes_of_c_array(source: str) -> bytes:
    body = source[source.index("{") + 1: source.index("};")]
    return bytes(int(token, 16) for token in re.findall(r"0x([0-9a-f]{2})", body))


def test_the_c_array_holds_the_file_byte_for_byte_aligned_to_16(exported, tmp_path):
    folder, report = exported
    written = tfjoint.write_c_array(folder / "model.tflite", tmp_path, "model_data")
    content = (folder / "model.tflite").read_bytes()
    source = open(written.source).read()
    assert _bytes_of_c_array(source) == content
    assert "alignas(16) const unsigned char g_model_data[]" in source
    assert f"const unsigned int g_model_data_len = {len(content)};" in source
    assert "extern const unsigned char g_model_data[];" in open(written.header).read()
    compiler = shutil.which("g++")
    if compiler:  # also compile it and read the bytes back from the running program
        program = tmp_path / "dump.cc"
        program.write_text('#include <cstdio>\n#include <cstdint>\n#include "model_data.h"\nint main() {\n'
                           '  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16) return 3;\n'
                           '  fwrite(g_model_data, 1, g_model_data_len, stdout);\n  return 0;\n}\n')
        binary = tmp_path / "dump"
        subprocess.run([compiler, "-std=c++17", "-o", str(binary), str(program), written.source,
                        f"-I{tmp_path}"], check=True, capture_output=True, timeout=300)
        run = subprocess.run([str(binary)], capture_output=True, timeout=60)
        assert run.returncode == 0 and run.stdout == content


def test_the_operators_to_register_are_listed(exported):
    _, report = exported
    assert report.micro_op_resolver == ["AddConv2D", "AddMaxPool2D", "AddReshape", "AddFullyConnected", "AddSoftmax"]
    assert "MicroMutableOpResolver<5>" in str(report)


def test_bad_c_array_destinations_are_named_and_nothing_is_half_written(exported, tmp_path, monkeypatch):
    folder, _ = exported
    written = tfjoint.write_c_array(folder / "model.tflite", tmp_path / "missing" / "deeper")  # created, as --out is
    assert os.path.isfile(written.header) and os.path.dirname(written.header) == str(tmp_path / "missing" / "deeper")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(tfjoint.ConfigError, match="`out_dir` '.*a_file' is a file"):
        tfjoint.write_c_array(folder / "model.tflite", tmp_path / "a_file")
    with pytest.raises(tfjoint.ConfigError, match="`name` must be a C identifier.*'model-data'"):
        tfjoint.write_c_array(folder / "model.tflite", tmp_path, "model-data")
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        tfjoint.write_c_array(tmp_path / "nope.tflite", tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a read-only directory (tests run as root)
    with pytest.raises(tfjoint.ConfigError, match="is not writable"):
        tfjoint.write_c_array(folder / "model.tflite", tmp_path)
    monkeypatch.undo()
    # A write that fails midway leaves the old pair untouched and no temporary files.
    (tmp_path / "model_data.h").write_text("old header")
    (tmp_path / "model_data.cc").write_text("old source")
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        tfjoint.write_c_array(folder / "model.tflite", tmp_path)
    assert (tmp_path / "model_data.h").read_text() == "old header"
    assert (tmp_path / "model_data.cc").read_text() == "old source"
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []


def _readme_block(language: str, after: str) -> str:
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("## Deploying the model"):]
    section = section[section.index(after):]
    start = section.index(f"```{language}\n") + len(language) + 4
    return section[start: section.index("```", start)]


def test_the_readme_python_snippet_runs_on_the_files_tfjoint_writes(exported, digits_data, monkeypatch):
    folder, report = exported
    monkeypatch.chdir(folder)
    namespace = {}
    exec(_readme_block("python", "Linux / edge boards"), namespace)  # noqa: S102  (the README's own code)
    expected = TFLiteModel((folder / "model.tflite").read_bytes(), ["image"], ["classes"]).predict(
        [digits_data["x_val"][:8]])[0]
    for i in range(8):
        np.testing.assert_allclose(namespace["run"](digits_data["x_val"][i]), expected[i], atol=1e-6)


def test_the_readme_device_snippets_quote_what_tfjoint_writes(exported, tmp_path):
    folder, report = exported
    saved = json.loads((folder / "report.json").read_text())
    written = tfjoint.write_c_array(folder / "model.tflite", tmp_path, "model_data")
    header = open(written.header).read()
    cpp = _readme_block("cpp", "Microcontrollers")
    assert '#include "model_data.h"' in cpp and os.path.basename(written.header) == "model_data.h"
    for symbol in ("g_model_data", "g_model_data_len"):
        assert symbol in cpp and symbol in header
    calls = re.findall(r"resolver\.(Add\w+)\(\)", cpp)
    assert calls == saved["micro_op_resolver"] and f"MicroMutableOpResolver<{len(calls)}>" in cpp
    assert "tflm_arena_bytes" in cpp and saved["memory"]["tflm_arena_bytes"] > 0  # measured in TFLM
    assert "tensor_arena[kTensorArenaSize]" in cpp and "kTensorArenaSize" not in header  # no arena_bytes given
    with_arena = tfjoint.write_c_array(folder / "model.tflite", tmp_path / "micro", "model_data",
                                       arena_bytes=saved["memory"]["tflm_arena_bytes"])
    assert "constexpr int kTensorArenaSize" in open(with_arena.header).read()
    kotlin = _readme_block("kotlin", "Android")
    assert '"model.tflite"' in kotlin and "quantizationParams()" in kotlin
    prose = open(os.path.join(ROOT, "README.md")).read().split("## Deploying the model")[1].split("```")[0]
    for key in ("inputs", "outputs", "index", "scale", "zero_point", "float_range", "micro_op_resolver"):
        assert f"`{key}`" in prose and (key in saved or key in saved["inputs"][0]), key
