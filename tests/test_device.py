"""TensorFlow Lite Micro as a real runtime: validation in it, the arena it needs, the operators it registers.

Every figure here is read from the `tflite-micro` interpreter itself (outputs,
the arena it accepts) or from the file, against tfjoint's report.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from conftest import run_python
from tflite_micro import runtime  # noqa: F401  (installed by `make test`: the real TFLM interpreter)

import tfjoint
from tfjoint.export.memory import memory_use
from tfjoint.export.micro import micro_op_resolver_method
from tfjoint.tflite import tflm
from tfjoint.tflite.flatbuffer import read_flatbuffer
from tfjoint.tflite.runtimes import runtime_model

pytestmark = pytest.mark.slow  # conversions and TFLM interpreters

def _residual_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2), name="image")
    stem = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    stem = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(stem))
    branch = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="branch")(stem)
    merged = keras.layers.Add(name="residual")([stem, branch])
    side = keras.layers.Conv2D(4, 1, activation="relu", name="side")(merged)
    x = keras.layers.Concatenate(name="concat")([keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(merged),
                                                 side])
    x = keras.layers.Flatten(name="flatten")(keras.layers.MaxPooling2D(name="pool")(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x), name="residual")


@pytest.fixture(scope="module")
def digits_file(digits_joint, digits_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "model.tflite"
    report = tfjoint.export_tflite(digits_joint, str(path),
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]),
                                   options=tfjoint.ExportOptions(runtimes=("litert", "tflm")))
    return path.read_bytes(), report


@pytest.fixture(scope="module")
def residual_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 2), dtype=np.float32), rng.integers(0, 3, 64)
    joint = tfjoint.prepare(_residual_model(),
                            tfjoint.JointSchedule(0.5, end_step=6, frequency=2, channel_sparsity=0.5))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("residual") / "model.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path), validation_data=(x, y),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",)))
    return path.read_bytes(), report, x


@pytest.fixture(params=["digits", "residual"])
def exported(request, digits_file, residual_file, digits_data):
    if request.param == "digits":
        return digits_file[0], digits_file[1], digits_data["x_val"][:64]
    return residual_file[0], residual_file[1], residual_file[2]


def _int8_outputs(model, inputs, summary):
    """The raw int8 output of `model` (a runtime model), quantized back with the file's output scale."""
    output = summary.outputs[0]
    values = model.predict([inputs])[0]
    return np.round(values / output.scale + output.zero_point).astype(np.int32)


def test_tflm_computes_what_litert_reference_kernels_compute(exported):
    content, report, inputs = exported
    summary = read_flatbuffer(content)
    names = (["image"], [report.outputs[0]["signature_name"]])
    in_tflm = _int8_outputs(runtime_model("tflm", content, summary, *names), inputs, summary)
    in_reference = _int8_outputs(runtime_model("litert_reference", content, summary, *names), inputs, summary)
    assert np.max(np.abs(in_tflm - in_reference)) <= 3  # int8 steps


def _allocates_in_a_child(content: bytes, arena: int, tmp_path) -> bool:
    """Builds the TFLM interpreter in a fresh process (a too-small arena may crash it instead of failing)."""
    path = tmp_path / "probe.tflite"
    path.write_bytes(content)
    code = textwrap.dedent(f"""
        from tflite_micro import runtime
        runtime.Interpreter.from_bytes(open({str(path)!r}, "rb").read(), arena_size={arena})
        print("allocated")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return result.returncode == 0 and "allocated" in result.stdout


def test_tflm_allocates_with_the_reported_arena_and_not_with_90_percent_of_it(exported, tmp_path):
    content, report, _ = exported
    arena = report.memory["tflm_arena_bytes"]
    assert report.memory["tflm_arena_head_bytes"] + report.memory["tflm_arena_tail_bytes"] == arena
    assert report.memory["tflm_arena_tail_bytes"] > 0 and "64-bit" in report.memory["tflm_arena_measured_by"]
    assert _allocates_in_a_child(content, arena, tmp_path)
    assert not _allocates_in_a_child(content, int(arena * 0.9), tmp_path)


def test_the_planner_estimate_is_tflms_own_plan_of_the_activations(exported):
    """Without TFLM the report estimates the head by following TFLM's planner; TFLM's own account agrees."""
    content, report, _ = exported
    measured = tflm.measure_arena(content)
    assert memory_use(read_flatbuffer(content)).planned_head_bytes == measured.planned_bytes
    assert report.memory["activation_bytes"] == measured.planned_bytes


def test_validation_names_the_runtime_that_breaks_a_tolerance(digits_joint, digits_data, digits_file, tmp_path):
    _, report = digits_file
    assert report.runtimes == ["litert", "tflm"] and set(report.per_runtime) == {"litert", "tflm"}
    tflm_sqnr = report.per_runtime["tflm"]["sqnr_db"]
    assert report.per_runtime["tflm"]["int8_accuracy"] is not None
    # Accuracy is opened and SQNR set just past TFLM's measured value: SQNR in TFLM is the one failure.
    with pytest.raises(tfjoint.ValidationError, match="in tflm: output 'classes': SQNR") as caught:
        tfjoint.export_tflite(digits_joint, str(tmp_path / "m.tflite"),
                              validation_data=(digits_data["x_val"], digits_data["y_val"]),
                              options=tfjoint.ExportOptions(quantization="qat", runtimes=("tflm",),
                                                            tolerances=tfjoint.Tolerances(max_accuracy_drop=1.0,
                                                                                          min_sqnr_db=tflm_sqnr + 0.5)))
    assert not (tmp_path / "m.tflite").exists()
    assert caught.value.report.per_runtime["tflm"]["sqnr_db"] == pytest.approx(tflm_sqnr, abs=1e-6)


def test_macs_per_layer_follow_the_shapes(digits_file):
    _, report = digits_file
    # conv1: 8x8 output, 32 filters of 3x3x1; fc1: 128 units over 4*4*64 inputs (the digits CNN).
    assert report.per_layer_macs["conv1"] == 8 * 8 * 32 * 3 * 3 * 1
    assert report.per_layer_macs["fc1"] == 128 * 4 * 4 * 64
    assert report.macs == sum(report.per_layer_macs.values())


def test_the_c_header_sizes_the_arena_from_the_report(digits_file, tmp_path):
    content, report = digits_file
    (tmp_path / "model.tflite").write_bytes(content)
    written = tfjoint.write_c_array(tmp_path / "model.tflite", tmp_path, arena_bytes=report.memory["tflm_arena_bytes"])
    header = open(written.header).read()
    arena = -(-report.memory["tflm_arena_bytes"] // 16) * 16
    assert f"constexpr int kTensorArenaSize = {arena};" in header
    with pytest.raises(tfjoint.ConfigError, match="`arena_bytes` must be a positive int.*-5"):
        tfjoint.write_c_array(tmp_path / "model.tflite", tmp_path, arena_bytes=-5)


def test_a_microcontroller_report_says_unstructured_zeros_do_not_shrink_flash(digits_file):
    _, report = digits_file
    assert any("stores weights dense" in note and "channel_sparsity" in note for note in report.notes)


def _installed_tflm_kernels() -> set[str]:
    """The operators the installed tflite-micro registers a kernel for, read from its library's symbols
    (`tflite::Register_<OPERATOR>()`), not from a list copied by hand."""
    import glob
    import re

    import tflite_micro

    found = set()
    for library in glob.glob(os.path.join(os.path.dirname(tflite_micro.__file__), "**", "_runtime*.so"),
                             recursive=True):
        data = open(library, "rb").read()
        found |= {name.decode() for name in re.findall(rb"Register_([A-Z0-9_]+)Ev", data)}
    return found


def test_the_operator_table_says_what_the_installed_tflite_micro_runs():
    from tfjoint.tflite.operators import OPERATORS, runs_in_tflm

    kernels = _installed_tflm_kernels()
    assert {"CONV_2D", "FULLY_CONNECTED", "WHILE", "VAR_HANDLE", "DECODE"} <= kernels and "GELU" not in kernels
    for name in OPERATORS:
        installed = ("DECODE" if name == "TFLM_DECODE" else name) in kernels
        assert runs_in_tflm(name) == installed, name
    for special in ("BATCH_MATMUL", "CUMSUM", "PADV2", "UNIDIRECTIONAL_SEQUENCE_LSTM", "ADD_N"):
        assert micro_op_resolver_method(special) in ("AddBatchMatMul", "AddCumSum", "AddPadV2",
                                                     "AddUnidirectionalSequenceLSTM", "AddAddN")


_BLOCK_TFLM = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tflite_micro":
            raise ImportError("blocked for this test")
sys.meta_path.insert(0, _Blocker())
"""


def test_without_tflite_micro_tflm_is_a_clear_error_and_the_arena_an_estimate():
    result = run_python(_BLOCK_TFLM + textwrap.dedent("""
        import os, tempfile, numpy as np, tfjoint
        import tf_keras as keras
        inputs = keras.Input((4,), name="x")
        model = keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs))
        x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
        path = os.path.join(tempfile.mkdtemp(), "m.tflite")
        try:
            tfjoint.export_tflite(model, path, representative_data=x, runtimes=("tflm",))
        except tfjoint.ConfigError as error:
            print("REFUSED", error)
        report = tfjoint.export_tflite(model, path, representative_data=x)
        print("ESTIMATE", report.memory["tflm_arena_bytes"], report.memory["activation_bytes"] > 0,
              any("is an estimate" in note for note in report.notes))
    """), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    refused = next(line for line in result.stdout.splitlines() if line.startswith("REFUSED"))
    assert "`runtimes`" in refused and 'pip install "tfjoint[micro]"' in refused
    assert result.stdout.splitlines()[-1] == "ESTIMATE None True True"


def test_a_reshape_with_a_minus_one_runs_in_tflm(tmp_path):
    """Reshape((-1, 1, C)) at an unknown batch converts to SHAPE, STRIDED_SLICE, PACK and a RESHAPE whose static
    output shape TFLM refuses ("num_input_elements != num_output_elements"); such a model converts at batch 1."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 4), name="series")
    x = keras.layers.Conv1D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Reshape((-1, 1, 8), name="as_image")(x)
    x = keras.layers.DepthwiseConv2D((3, 1), activation="relu", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="classes")(x))
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 24, 4)).astype(np.float32)
    labels = (data[:, :12].mean(axis=(1, 2)) > 0).astype(np.int32)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=2), check=("tflm",))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(data, labels, epochs=1, verbose=0)
    path = tmp_path / "m.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path), validation_data=(data, labels),
                                   options=tfjoint.ExportOptions(quantization="qat", runtimes=("tflm",)))
    assert "SHAPE" not in read_flatbuffer(path.read_bytes()).op_names  # the shape folded into a constant
    assert report.per_runtime["tflm"]["int8_accuracy"] is not None  # TFLM ran it on every sample


def test_a_relu6_after_an_operator_it_cannot_fuse_into_runs_in_tflm_as_in_litert(tmp_path):
    """TFLM's int8 RELU6 writes on its input's scale whatever its output's (LiteRT's rescales): after a MAXIMUM,
    which cannot fuse it, QAT gives the RELU6 its own range, and the conversion check measured TFLM 13 dB from
    LiteRT's reference kernels. The file clamps on the input's scale, then requantizes (QUANTIZE)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,), name="features")
    a, b = keras.layers.Dense(8, name="a")(inputs), keras.layers.Dense(8, name="b")(inputs)
    x = keras.layers.ReLU(6.0, name="relu6")(keras.layers.Maximum(name="max")([a, b]))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classes")(x))
    rng = np.random.default_rng(0)
    data = rng.normal(size=(96, 10)).astype(np.float32)
    labels = np.argmax(data[:, :3], axis=1)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.3, end_step=4), check=("tflm",))  # refused before
    joint.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    joint.fit(data, labels, epochs=2, verbose=0)
    path = tmp_path / "m.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path), validation_data=(data, labels),
                                   options=tfjoint.ExportOptions(quantization="qat", runtimes=("litert", "tflm")))
    assert report.passed and report.fully_int8
    summary = read_flatbuffer(path.read_bytes())
    tensors = {tensor.index: tensor for tensor in summary.tensors}
    relu6 = next(op for op in summary.ops if op.name == "RELU6")
    follows = next(op for op in summary.ops if op.inputs and op.inputs[0] == relu6.outputs[0])
    assert follows.name == "QUANTIZE"
    source, clamped, requantized = (tensors[relu6.inputs[0]], tensors[relu6.outputs[0]],
                                    tensors[follows.outputs[0]])
    assert (clamped.scales, clamped.zero_points) == (source.scales, source.zero_points)  # what TFLM's kernel assumes
    assert (requantized.scales, requantized.zero_points) != (source.scales, source.zero_points)  # QAT's own range
    litert = runtime_model("litert_reference", path.read_bytes(), summary, ["features"], ["classes"])
    device = runtime_model("tflm", path.read_bytes(), summary, ["features"], ["classes"], report.memory[
        "tflm_arena_bytes"])
    step = summary.outputs[0].scale  # within 3 int8 steps, as every file above (softmax rounds apart)
    assert np.max(np.abs(device.predict([data[:32]])[0] - litert.predict([data[:32]])[0])) <= 3 * step
