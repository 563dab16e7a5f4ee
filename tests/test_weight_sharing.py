"""Weight sharing: clusters trained in the same fit as pruning and QAT, shipped with TFLM's LUT compression."""

import re

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402
from conftest import run_python

import tfjoint
from tfjoint.export import compression


def _digits_like(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1), dtype=np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0.5).astype(np.int32) + 2 * (x[:, :, :4].mean(axis=(1, 2, 3)) > 0.5)
    return x, y.astype(np.int32)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(x))


def _per_table_values(values: np.ndarray, axis) -> int:
    rows = values.reshape(1, -1) if axis is None else np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return max(len(np.unique(row)) for row in rows)


def _int8_inputs(x, report) -> np.ndarray:
    """`x` quantized as the file's input is."""
    return np.round(x / report.inputs[0]["scale"] + report.inputs[0]["zero_point"]).clip(-128, 127).astype(np.int8)


def _tflm_outputs(content: bytes, sample: np.ndarray, arena: int, alt: int) -> np.ndarray:
    """The file's outputs for each row of `sample`, run in TFLM with that arena and alternate decompression memory."""
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(content, arena_size=arena, alt_decompression_memory_size=alt)
    found = []
    for row in sample:
        interpreter.set_input(row[None], 0)
        interpreter.invoke()
        found.append(interpreter.get_output(0).copy())
    return np.concatenate(found)


def _trained(clusters=16, sparsity=0.6, epochs=3, **kwargs):
    x, y = _digits_like()
    joint = tfjoint.prepare(_model(), target_sparsity=sparsity, end_step=12, frequency=2, clusters=clusters,
                            **kwargs, check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    joint.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return joint, x, y


def test_every_pruned_kernel_keeps_at_most_k_values_per_table_zero_among_them_and_its_sparsity():
    joint, _, _ = _trained(clusters=8)
    kernels = {pk.layer_name: pk for pk in tfjoint.inspect.pruned_kernels(joint)}
    assert set(kernels) == {"conv", "hidden", "classes"}
    # A conv's kernel is quantized per output channel: one table per channel; a Dense's per tensor: one table.
    assert kernels["conv"].quantizer.cluster_axis == -1 and kernels["hidden"].quantizer.cluster_axis is None
    for name, pk in kernels.items():
        shared = pk.masked_kernel()
        assert _per_table_values(shared, pk.quantizer.cluster_axis) <= 8, name
        assert 0.0 in shared  # zero is a centroid: pruned weights stay exactly zero
        assert np.mean(shared == 0) >= 0.6 - 0.01, name  # the sparsity schedule holds (sharing adds zeros, never less)
        assert np.all(shared[pk.mask.numpy() == 0] == 0)
        # What the forward pass fake-quantizes is the shared kernel: its int8 grid has at most 8 values per table.
        quantized = pk.quantizer(pk.kernel, False, pk.quantizer_weights).numpy()
        assert _per_table_values(quantized, pk.quantizer.cluster_axis) <= 8, name


def test_the_centroids_are_trained_and_weights_follow_them():
    x, y = _digits_like()
    joint = tfjoint.prepare(_model(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2, clusters=16))
    joint.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    hidden = next(pk for pk in tfjoint.inspect.pruned_kernels(joint) if pk.layer_name == "hidden")
    centroids = hidden.quantizer_weights["tfjoint_centroids"]
    before = centroids.numpy().copy()
    assert centroids.trainable and np.all(before != 0)  # placed by k-means on the kept weights, none at zero
    loss = joint.evaluate(x, y, verbose=0)
    joint.fit(x, y, batch_size=32, epochs=4, verbose=0)
    assert not np.allclose(centroids.numpy(), before)
    assert joint.evaluate(x, y, verbose=0) < loss
    values = set(np.unique(hidden.masked_kernel()))
    assert values <= set(np.append(centroids.numpy().ravel(), 0.0))  # the kernel holds only centroids and 0


def test_strip_bakes_the_shared_values_in_and_a_saved_model_resumes_them(tmp_path):
    joint, x, y = _trained(clusters=4, epochs=1)
    path = str(tmp_path / "joint.keras")
    joint.save(path)
    loaded = tfjoint.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), joint.predict(x, verbose=0), atol=1e-6)
    assert loaded.schedule.clusters == 4
    loaded.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)  # resumes: still at most 4 values per table
    stripped = tfjoint.strip(loaded)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6)
    assert not any("tfjoint" in w.name for w in stripped.weights)  # no centroid, mask or step left
    conv = next(w.numpy() for w in stripped.get_layer("quant_conv").weights if w.name.endswith("/kernel:0"))
    assert _per_table_values(conv, -1) <= 4 and 0.0 in conv


def test_weight_sharing_trains_under_xla():
    x, y = _digits_like()
    joint = tfjoint.prepare(_model(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2, clusters=16))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=True)
    joint.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for pk in tfjoint.inspect.pruned_kernels(joint):
        assert _per_table_values(pk.masked_kernel(), pk.quantizer.cluster_axis) <= 16


def _separable(seed=0):
    """Two convolutions (144 and 9216 weights), then a depthwise-separable block: a depthwise kernel (9 weights per
    channel) and a 64x64 pointwise one; then two Dense layers (quantized per tensor)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="wide")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(64, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="classes")(x))


def _int8_per_channel(values: np.ndarray, axis: int) -> np.ndarray:
    """`values` on its symmetric per-channel int8 grid, as the converter quantizes a kernel: round(127 w / peak)."""
    moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    peaks = np.abs(moved).max(axis=1, keepdims=True)
    return np.round(127 * moved / np.where(peaks > 0, peaks, 1))


# A depthwise kernel never shares: TF-MOT's range for it is one for every channel (its last axis, the multiplier),
# and the converter quantizes it per channel from values already rounded to that range.
@pytest.mark.parametrize("shared_tables,expected", [(None, {"conv": False, "wide": False, "dw": False, "pw": True}),
                                                    (True, {"conv": True, "wide": True, "dw": False, "pw": True}),
                                                    (False, {"conv": False, "wide": False, "dw": False,
                                                             "pw": False})])
def test_small_per_channel_kernels_share_one_table_of_int8_values_across_their_channels(shared_tables, expected):
    # A table per channel costs 64 x 16 bytes: more than 4-bit indices save on a 64x64 pointwise kernel. There the
    # channels share one table: every channel's int8 values come from one set. On the 9216-weight conv, tables of
    # their own pay; on the 144-weight conv nothing pays, and tables of their own keep the weights closer.
    x, y = _digits_like()
    joint = tfjoint.prepare(_separable(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2, clusters=16,
                                                                shared_tables=shared_tables),
                            layers=tfjoint.LayerSelection(prune_depthwise=True), check=False)
    joint.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    kernels = {pk.layer_name: pk for pk in tfjoint.inspect.pruned_kernels(joint)}
    levels = {name: pk.quantizer_weights["tfjoint_centroids"].numpy().copy() for name, pk in kernels.items()}
    joint.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert {name: kernels[name].quantizer.shared_table for name in expected} == expected
    for name, pk in kernels.items():
        axis = pk.quantizer.cluster_axis
        if name in ("hidden", "classes"):
            assert axis is None and not pk.quantizer.shared_table  # a Dense is quantized per tensor: one table
            continue
        # What the forward pass fake-quantizes, put on the converter's per-channel int8 grid.
        int8 = _int8_per_channel(pk.quantizer(pk.kernel, False, pk.quantizer_weights).numpy(), axis)
        distinct = len(np.unique(int8))
        if pk.quantizer.shared_table:
            # One table: 15 values (7 trained levels, each with its sign, and 0) across all 64 channels.
            assert levels[name].shape == (1, 7) and distinct <= 15, (name, distinct)
            assert len(np.unique(np.abs(int8))) <= 8  # symmetric levels: a sign flipped by BN folding stays in
            assert 127 in int8  # each channel's largest weight is its range's end
            assert not np.allclose(pk.quantizer_weights["tfjoint_centroids"].numpy(), levels[name])  # trained
        else:
            assert levels[name].shape == (int(pk.kernel.shape[axis]), 15)
            assert max(len(np.unique(row)) for row in int8) <= 16
            if name == "wide":
                assert distinct > 16, distinct  # a table per channel, each with its own values


def test_a_saved_model_with_shared_tables_resumes_them_and_strips_to_the_ranges_that_keep_one_table(tmp_path):
    x, y = _digits_like()
    joint = tfjoint.prepare(_separable(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2, clusters=8,
                                                                shared_tables=True), check=False)
    joint.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=32, epochs=1, verbose=0)
    joint.save(str(tmp_path / "joint.keras"))
    loaded = tfjoint.load_model(str(tmp_path / "joint.keras"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), joint.predict(x, verbose=0), atol=1e-6)
    assert {pk.layer_name for pk in tfjoint.inspect.pruned_kernels(loaded) if pk.quantizer.shared_table} == {
        "conv", "wide", "pw"}
    stripped = tfjoint.strip(loaded)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6)
    # The stripped model's kernel ranges are its kernels' own (not the last training step's), so the converter's
    # per-channel int8 grid puts every channel on the one table.
    pw = stripped.get_layer("quant_pw")
    kernel, high = (next(w.numpy() for w in pw.weights if w.name.endswith(suffix))
                    for suffix in ("/kernel:0", "/kernel_max:0"))
    np.testing.assert_allclose(high, np.abs(kernel).max(axis=(0, 1, 2)), rtol=1e-6)
    assert len(np.unique(_int8_per_channel(kernel, -1))) <= 7


def test_shared_tables_must_be_a_bool_or_none():
    with pytest.raises(tfjoint.ConfigError, match="`shared_tables` must be True, False or None.*received 'yes'"):
        tfjoint.JointSchedule(0.5, clusters=16, shared_tables="yes")


@pytest.mark.parametrize("clusters,named", [(1, "`clusters` must be an int from 3 to 256"),
                                            (2, "from 3 to 256.*received 2. Two values per table would be zero and "
                                                "one other value.*collapses.*Use 3"),
                                            (257, "received 257"), (16.0, "received 16.0"),
                                            ({"hidden": 300}, "`clusters\\['hidden'\\]`"),
                                            ({"nowhere": 16}, "does not prune: \\['nowhere'\\]")])
def test_bad_clusters_are_refused_by_name_before_training(clusters, named):
    with pytest.raises(tfjoint.ConfigError, match=named):
        tfjoint.prepare(_model(), tfjoint.JointSchedule(0.5, end_step=4, clusters=clusters))


def test_a_per_layer_dict_clusters_only_the_layers_it_names():
    joint = tfjoint.prepare(_model(), tfjoint.JointSchedule(0.5, end_step=4, clusters={"hidden": 4}))
    clusters = {pk.layer_name: pk.quantizer.clusters for pk in tfjoint.inspect.pruned_kernels(joint)}
    assert clusters == {"conv": None, "hidden": 4, "classes": None}


def test_lut_compression_needs_tflm_alone(tmp_path):
    joint, x, y = _trained(epochs=1)
    for runtimes in (("litert",), ("tflm", "litert")):
        with pytest.raises(tfjoint.ConfigError, match="only TensorFlow Lite Micro runs .*LiteRT has no DECODE"):
            tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"),
                                  options=tfjoint.ExportOptions(runtimes=runtimes, compression="lut"))
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_lut_export_is_smaller_runs_in_tflm_with_the_reported_memory_and_computes_the_uncompressed_file(tmp_path):

    joint, x, y = _trained(clusters=16, sparsity=0.5)
    stripped = tfjoint.strip(joint)
    plain = tfjoint.export_tflite(stripped, str(tmp_path / "plain.tflite"), validation_data=(x, y),
                                  options=tfjoint.ExportOptions(runtimes=("tflm",)))
    report = tfjoint.export_tflite(stripped, str(tmp_path / "lut.tflite"), validation_data=(x, y),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",), compression="lut"))
    content = (tmp_path / "lut.tflite").read_bytes()
    assert report.passed and report.compression["method"] == "lut"
    assert len(content) == report.size_bytes == report.compression["flash_bytes"] == report.memory["flash_bytes"]
    assert report.compression["uncompressed_flash_bytes"] == plain.size_bytes
    assert len(content) < 0.75 * plain.size_bytes  # the 18 KB hidden kernel as 4-bit indices
    assert "AddDecode" in report.micro_op_resolver
    # Read back from the file: the hidden layer's weights (the one tensor compressed) as 4-bit indices into one
    # table of at most 16 values.
    [decoded] = compression.decoded_tables(content)
    hidden = next(t for t in report.compression["tensors"] if t["layer"] == "hidden")
    assert hidden["bits"] == decoded["bits"] == 4 and hidden["values"] <= 16 and decoded["decoded"].shape == (32, 576)
    # Then reduced for TFLM: no tensor names, and one zero point for the conv's 16 per-channel scales.
    assert _reduced_as_reported(content, report)
    left = {t["layer"]: t["reason"] for t in report.compression["uncompressed"]}
    assert set(left) == {"conv", "classes"}  # 144 and 128 bytes
    assert all(reason.startswith("too small to pay") for reason in left.values())
    # The file runs in TFLM with exactly the report's arena and alternate decompression memory, and computes
    # what the uncompressed int8 file computes.
    arena, alt = report.memory["tflm_arena_bytes"], report.compression["alt_decompression_bytes"]
    assert alt == 32 * 576  # the hidden kernel decoded (32 x 576 int8 values): the largest DECODE output
    # Without a RAM budget nothing is split, and the report says what decoding costs against the plain file.
    decoding = [n for n in report.notes if n.kind is tfjoint.findings.Kind.MEMORY and "LUT decoding" in n]
    assert decoding and decoding[0].limit == plain.ram_bytes and decoding[0].measured == report.ram_bytes
    sample = _int8_inputs(x[:8], report)
    np.testing.assert_array_equal(_tflm_outputs(content, sample, arena, alt),
                                  _tflm_outputs((tmp_path / "plain.tflite").read_bytes(), sample,
                                                plain.memory["tflm_arena_bytes"], 0))
    # Without the alternate memory the decoded weights take arena space (measured by TFLM too).
    assert report.compression["tflm_arena_bytes_without_alt_memory"] > arena + 9000
    files = tfjoint.write_c_array(tmp_path / "lut.tflite", tmp_path / "c", arena_bytes=arena,
                                  alt_decompression_bytes=alt)
    header = open(files.header).read()
    assert f"kTensorArenaSize = {-(-arena // 16) * 16};" in header
    assert f"kAltDecompressionMemorySize = {-(-alt // 16) * 16};" in header
    # compression="tflm": the reduction alone. Smaller by what it removed, the same RAM, the same outputs in TFLM;
    # a file LiteRT refuses (one zero point for 16 scales), which is why it is for runtimes=("tflm",) only.
    reduced = tfjoint.export_tflite(stripped, str(tmp_path / "reduced.tflite"), validation_data=(x, y),
                                    options=tfjoint.ExportOptions(runtimes=("tflm",), compression="tflm"))
    small = (tmp_path / "reduced.tflite").read_bytes()
    assert reduced.passed and reduced.compression["method"] == "tflm" and _reduced_as_reported(small, reduced)
    assert len(small) == reduced.size_bytes == plain.size_bytes - reduced.compression["reduction"]["saved_bytes"]
    removed = reduced.compression["reduction"]
    assert plain.size_bytes - len(small) >= 8 * removed["zero_points_removed"] + removed["string_bytes_removed"]
    assert reduced.ram_bytes == plain.ram_bytes
    np.testing.assert_array_equal(_tflm_outputs(small, sample, reduced.ram_bytes, 0),
                                  _tflm_outputs((tmp_path / "plain.tflite").read_bytes(), sample, plain.ram_bytes, 0))
    from ai_edge_litert.interpreter import Interpreter

    with pytest.raises((ValueError, RuntimeError), match="zero_point"):
        Interpreter(model_content=small).allocate_tensors()


def _reduced_as_reported(content: bytes, report) -> bool:
    """Read back from the file: no tensor names, and every constant tensor quantized per channel (the conv's kernel
    and bias among them) with one zero point; as many dropped as the report says."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(bytearray(content), 0).subgraphs[0]
    per_channel = [t for t in graph.tensors if t.quantization is not None and t.quantization.scale is not None
                   and len(t.quantization.scale) > 1 and t.buffer]
    conv = [t for t in per_channel if len(t.quantization.scale) == 16]
    reduction = report.compression["reduction"]
    return (all(t.name is None for t in graph.tensors) and len(conv) >= 2
            and all(len(t.quantization.zeroPoint) == 1 for t in per_channel)
            and reduction["zero_points_removed"] == sum(len(t.quantization.scale) - 1 for t in per_channel) > 0)


@pytest.mark.slow
def test_a_shared_table_ships_as_one_lut_table_that_tflm_decodes_for_every_channel(tmp_path):
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    x, y = _digits_like()
    joint = tfjoint.prepare(_separable(), tfjoint.JointSchedule(0.5, end_step=12, frequency=2, clusters=16),
                            check=False)
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    joint.fit(x, y, batch_size=32, epochs=2, verbose=0)
    stripped = tfjoint.strip(joint)
    plain = tfjoint.export_tflite(stripped, str(tmp_path / "plain.tflite"), options=tfjoint.ExportOptions(
        runtimes=("tflm",)))
    report = tfjoint.export_tflite(stripped, str(tmp_path / "lut.tflite"), validation_data=(x, y),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",), compression="lut"))
    content = (tmp_path / "lut.tflite").read_bytes()
    assert report.passed
    tables = {t["layer"]: t for t in report.compression["tensors"]}
    # Read back from the file: the pointwise kernel, quantized per channel (64 scales), is 4-bit indices into one
    # table of at most 15 values (its DCM's table stride 0: every channel reads it); the wide conv has a table per
    # channel; the hidden Dense, quantized per tensor, one table.
    # (The file is reduced for TFLM: no tensor names. Each decoded tensor is found by its shape.)
    graph = model_editor.read(content).subgraphs[0]
    decoded = {entry["decoded"].shape: entry for entry in compression.decoded_tables(content)}
    assert len(decoded) == 3
    pw = decoded[tuple(tables["pw"]["shape"])]
    assert pw["bits"] == 4 and pw["tables"] == 1 and pw["values"] <= 15
    pw_decode = next(op for op in graph.operators
                     if op.opcode_name == "TFLM_DECODE" and tuple(op.outputs[0].shape) == tuple(tables["pw"]["shape"]))
    assert len(pw_decode.outputs[0].quantization.scales) == 64 and bytes(pw_decode.inputs[1].buffer.data)[6] == 0
    assert decoded[tuple(tables["wide"]["shape"])]["tables"] == 64
    assert decoded[tuple(tables["hidden"]["shape"])]["tables"] == 1
    # The uncompressed int8 file holds the same 15 values in every channel of that kernel.
    tensors = model_editor.read((tmp_path / "plain.tflite").read_bytes()).subgraphs[0].tensors
    weight = next(w for w in plain.flatbuffer.weights if "/quant_pw/" in w.tensor_name)
    np.testing.assert_array_equal(np.asarray(tensors[weight.tensor_index].array), pw["decoded"])
    # TFLM computes with the compressed file exactly what it computes with the uncompressed one.
    sample = _int8_inputs(x[:8], report)
    np.testing.assert_array_equal(
        _tflm_outputs(content, sample, 200_000, report.compression["alt_decompression_bytes"]),
        _tflm_outputs((tmp_path / "plain.tflite").read_bytes(), sample, 200_000, 0))


@pytest.mark.slow
def test_a_table_that_does_not_follow_the_tensors_quantization_is_refused(tmp_path):
    from tflite_micro.tensorflow.lite.micro.compression import model_editor, spec

    joint, x, y = _trained(clusters=None, sparsity=0.5, epochs=1)
    # Dense weights on a 15-value grid per unit, each unit its own scale: more than 128 values in all. Only
    # per-channel tables would fit them, and the converter quantizes a Dense's weights per tensor.
    hidden = next(pk for pk in tfjoint.inspect.pruned_kernels(joint) if pk.layer_name == "hidden")
    levels = np.random.default_rng(0).integers(-7, 8, hidden.kernel.shape).astype(np.float32)
    hidden.kernel.assign(levels / 7 * np.linspace(0.2, 1.0, hidden.kernel.shape[1], dtype=np.float32)[None, :])
    joint.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    joint.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # one step: the int8 ranges see the new kernel
    stripped = tfjoint.strip(joint)
    with pytest.raises(tfjoint.errors.ExportError,
                       match="no weight tensor worth compressing.*'hidden': 1?[0-9]{3} distinct "
                                                  "values in a table"):
        tfjoint.export_tflite(stripped, str(tmp_path / "lut.tflite"),
                              options=tfjoint.ExportOptions(runtimes=("tflm",), compression="lut"))
    assert not (tmp_path / "lut.tflite").exists()
    # Asked directly for per-channel tables on that per-tensor-quantized tensor, tfjoint refuses: TFLM would decode
    # every unit with the first table and run without an error.
    report = tfjoint.export_tflite(stripped, str(tmp_path / "plain.tflite"),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",)))
    tensors = model_editor.read((tmp_path / "plain.tflite").read_bytes()).subgraphs[0].tensors
    weight = next(w for w in report.flatbuffer.weights if "hidden" in w.tensor_name)
    assert len(tensors[weight.tensor_index].quantization.scales) == 1  # read from the file: one scale
    with pytest.raises(tfjoint.errors.ExportError,
                       match="quantized per tensor.*decode its channels with the wrong tables"):
        compression.lut_spec(spec, weight.tensor_index, tensors[weight.tensor_index], 4, 0)


def test_two_replicas_share_the_same_clusters():
    out = run_python("""
        import tfjoint, numpy as np
        import tensorflow as tf
        import tf_keras as keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8, 8, 1))
            x = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
            model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
            joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=4, frequency=2, clusters=8)
            joint.compile("adam", "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        joint.fit(rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64), batch_size=16, epochs=2, verbose=0)
        for pk in tfjoint.inspect.pruned_kernels(joint):
            values = pk.masked_kernel()
            axis = pk.quantizer.cluster_axis
            rows = values.reshape(1, -1) if axis is None else np.moveaxis(values, axis, 0).reshape(
                values.shape[axis], -1)
            print(pk.layer_name, max(len(np.unique(r)) for r in rows), float(np.mean(values == 0)))
    """).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        _, values, zeros = line.split()
        assert int(values) <= 8 and float(zeros) >= 0.49


@pytest.mark.parametrize("weight_bits", [(3,), 4, (8, 1), ("4",)])
def test_bad_weight_bits_are_refused_naming_the_argument(weight_bits):
    x, y = _digits_like(64)
    with pytest.raises(tfjoint.errors.ConfigError, match=r"`weight_bits` must be a sequence of bit widths from"):
        tfjoint.plan_for_budget(_model(), flash_bytes=10_000, validation_data=(x, y), weight_bits=weight_bits)


def test_a_plan_with_clusters_trains_them_and_refuses_clusters_given_twice():
    plan = tfjoint.CompressionPlan(channel_fractions={}, clusters={"hidden": 4})
    assert tfjoint.CompressionPlan.from_dict(plan.to_dict()).clusters == {"hidden": 4}
    joint = tfjoint.prepare(_model(), tfjoint.JointSchedule.from_plan(plan, end_step=4), check=False)
    assert joint.schedule.clusters == {"hidden": 4}  # the plan's choice reaches the schedule stored with the model
    with pytest.raises(tfjoint.errors.ConfigError, match="a CompressionPlan already says clusters"):
        tfjoint.JointSchedule.from_plan(plan, end_step=4, clusters=16)
    with pytest.raises(tfjoint.errors.ConfigError, match=r"`clusters\['hidden'\]` must be an int from 3 to 256"):
        tfjoint.CompressionPlan(channel_fractions={}, clusters={"hidden": 300})


@pytest.mark.slow
def test_a_ram_budget_splits_the_largest_tensor_into_channel_groups_that_decode_within_it(tmp_path):
    """Decoded whole, the hidden kernel (18 KB) takes the RAM to 7x the plain file's; under a RAM budget it is
    split into groups of output channels (the same results, checked in TFLM), each decoded on its own."""
    joint, x, y = _trained(clusters=16, sparsity=0.5)
    stripped = tfjoint.strip(joint)
    plain = tfjoint.export_tflite(stripped, str(tmp_path / "plain.tflite"), validation_data=(x, y),
                                  options=tfjoint.ExportOptions(runtimes=("tflm",)))
    budget = tfjoint.Budget(ram_bytes=3 * plain.ram_bytes)
    report = tfjoint.export_tflite(stripped, str(tmp_path / "lut.tflite"), validation_data=(x, y),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",), compression="lut", budget=budget))
    assert report.passed and report.ram_bytes <= budget.ram_bytes  # measured by TFLM, decode memory included
    assert report.size_bytes < plain.size_bytes
    split = {entry["layer"]: entry for entry in report.compression["split"]}
    assert split["hidden"]["groups"] > 1
    # Read back from the file: one DECODE per group, each rebuilding its rows of the hidden kernel.
    # (Only the hidden kernel is compressed: conv's and classes' kernels are too small to pay.)
    hidden = compression.decoded_tables((tmp_path / "lut.tflite").read_bytes())
    assert len(hidden) == split["hidden"]["groups"] and sum(e["decoded"].shape[0] for e in hidden) == 32
    assert {e["decoded"].shape[1] for e in hidden} == {576}
    assert not [f for f in report.failures if f.kind is tfjoint.findings.Kind.LUT_DECODING]  # outputs identical
    # A budget no split meets (while keeping the file smaller) leaves the tensor as it is; with nothing else worth
    # compressing, the export says what RAM compression needs at the least (measured in TFLM) and what to do.
    tight = plain.ram_bytes + 64
    with pytest.raises(tfjoint.errors.ExportError, match=rf"cannot fit the RAM budget of {tight} bytes.*'hidden'.*"
                                                         r"Raise ram_bytes to at least \d+, or export with "
                                                         r"compression='tflm'") as refused:
        tfjoint.export_tflite(stripped, str(tmp_path / "tight.tflite"), validation_data=(x, y),
                              options=tfjoint.ExportOptions(runtimes=("tflm",), compression="lut",
                                                            budget=tfjoint.Budget(ram_bytes=tight)))
    least = int(re.search(r"measured in TFLM, is (\d+) bytes", str(refused.value)).group(1))
    assert tight < least <= report.ram_bytes  # past the budget; at most what the split file above needs
    assert not (tmp_path / "tight.tflite").exists()
