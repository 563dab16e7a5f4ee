"""Layers TF-MOT leaves in float come out fully int8.

Conv1D+BN, Dense+BN, a lone BatchNorm, Rescaling, Normalization.
"""

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint

pytestmark = pytest.mark.slow


def _keyword_data(n, seed):
    """Four noisy spectral sweeps over 40 frames x 6 features: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    t = np.linspace(0, 1, 40)[:, None]
    f = np.arange(6)[None, :]
    clips = np.stack([np.sin(2 * np.pi * ((k + 1) * t + 0.1 * (k + 1) * f / 6)) for k in labels])
    return (clips + 0.8 * rng.standard_normal(clips.shape)).astype(np.float32) * 3 + 2, labels


def _conv1d_bn_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((40, 6), name="mfcc")
    normalization = keras.layers.Normalization(name="norm")
    normalization.adapt(_keyword_data(256, 9)[0])
    x = normalization(inputs)
    x = keras.layers.Conv1D(16, 5, use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling1D(name="pool")(x)
    x = keras.layers.Conv1D(16, 3, use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    x = keras.layers.Dense(16, name="fc")(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    x = keras.layers.ReLU(name="fc_relu")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="keyword")(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    x_train, y_train = _keyword_data(1200, 0)
    x_val, y_val = _keyword_data(400, 1)
    float_model = _conv1d_bn_model()
    float_model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    float_model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    steps = 4 * int(np.ceil(len(x_train) / 32))
    joint = tfjoint.prepare(float_model, tfjoint.inspect.plan_schedule(steps, 0.5), check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    path = str(tmp_path_factory.mktemp("rewrites") / "kws.tflite")
    report = tfjoint.export_tflite(joint, path, validation_data=(x_val, y_val), float_model=float_model)
    return report


def test_conv1d_and_dense_batchnorm_fold_into_an_int8_file(exported):
    assert exported.fully_int8 and exported.passed
    ops = exported.operator_counts
    # Three convolutions with their BatchNorms folded in, the input Normalization as a depthwise 1x1,
    # and no MUL/ADD/DEQUANTIZE left from any BatchNorm.
    assert ops["CONV_2D"] == 3 and ops["DEPTHWISE_CONV_2D"] == 1
    assert not {"MUL", "ADD", "SUB", "DEQUANTIZE"} & set(ops)


def test_folding_keeps_the_accuracy_of_the_float_model(exported):
    assert exported.float_accuracy > 0.8  # the task is learnable: the comparison means something
    assert exported.float_accuracy - exported.int8_accuracy <= 0.02


def test_pruned_layers_keep_the_users_names_and_their_zeros_reach_the_file(exported):
    sparsity = exported.per_layer_sparsity
    assert {"conv1", "conv2", "fc", "keyword"} <= set(sparsity)
    for name in ("conv1", "conv2", "fc", "keyword"):
        assert sparsity[name]["tflite"] == pytest.approx(sparsity[name]["keras"]), name
        assert sparsity[name]["keras"] == pytest.approx(0.5, abs=0.02), name


def test_rescaling_and_a_lone_batchnorm_are_int8_too(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 16.0, offset=-0.5, name="rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.BatchNormalization(name="lone_bn")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="fc")(x))
    from tfjoint.app import digits

    data = digits.load_digits()
    x_train, x_val = data["x_train"] * 16, data["x_val"] * 16  # raw 0..16 pixel values: the model rescales
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, data["y_train"], epochs=12, verbose=0)
    # Nothing pruned: what is measured is the rewrites (and int8), not the sparsity of an 8-filter conv.
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=40, frequency=10), check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x_train, data["y_train"], epochs=3, verbose=0)
    report = tfjoint.export_tflite(joint, str(tmp_path / "m.tflite"), validation_data=(x_val, data["y_val"]),
                                   float_model=model)
    assert report.fully_int8 and report.passed and report.float_accuracy > 0.9
    assert report.operator_counts["DEPTHWISE_CONV_2D"] == 2  # the Rescaling and the lone BatchNorm
    low, high = report.inputs[0]["float_range"]
    assert low <= 0.0 and high >= 15.9  # the int8 input takes raw pixels, as the float model does


def _image_data(n, seed):
    """Which quadrant of an 12x12x3 image is brightest: learnable by a small CNN in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.random((n, 12, 12, 3), dtype=np.float32)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 2)
        image[row * 6:(row + 1) * 6, col * 6:(col + 1) * 6] += 1.0
    return images, labels


def _fit_prepare_export(model, path, epochs=3):
    x, y = _image_data(384, 0)
    x_val, y_val = _image_data(128, 1)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=24, frequency=4), check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return joint, tfjoint.export_tflite(joint, path, validation_data=(x_val, y_val), float_model=model)


def test_a_separable_conv_keeps_its_wiring_in_a_model_whose_names_tf_keras_never_handed_out(tmp_path):
    """TF-MOT names the two layers it splits a SeparableConv2D into from tf_keras's name counter; in a
    model loaded from a file (here: a fresh session and explicit names) that gives 'conv2d' twice, and
    TF-MOT's own quantize_model wires the wrong layers together."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2d")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise_conv2d")(x)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep")(x)
    x = keras.layers.BatchNormalization(name="sep_bn")(x)
    x = keras.layers.ReLU(name="sep_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(x))
    joint, report = _fit_prepare_export(model, str(tmp_path / "sep.tflite"))
    names = {layer.name for layer in joint.layers}
    assert {"quant_conv2d", "quant_depthwise_conv2d", "quant_sep", "quant_sep_depthwise"} <= names
    assert report.fully_int8 and report.passed
    # The separable layer is a depthwise and a pointwise operator, its BatchNorm folded into the latter.
    assert report.operator_counts["CONV_2D"] == 2 and report.operator_counts["DEPTHWISE_CONV_2D"] == 2
    assert not {"MUL", "ADD", "DEQUANTIZE"} & set(report.operator_counts)
    assert report.per_layer_channels["sep"]["tflite"] == 16


def test_fused_swish_and_relu6_come_out_int8_and_are_explained_like_with_like(tmp_path):
    """TF-MOT refuses a fused relu6 and leaves a fused swish's conv output, LOGISTIC and MUL in float."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="swish", name="conv_swish")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="conv_relu6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="swish", name="fc_swish")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(x))
    _, report = _fit_prepare_export(model, str(tmp_path / "act.tflite"))
    assert report.fully_int8 and report.passed and not report.float_ops
    assert report.operator_counts["LOGISTIC"] == 2 and report.operator_counts["MUL"] == 2  # the two swishes
    assert "RELU6" not in report.operator_counts  # fused back into its CONV_2D
    conversion_error = {entry["layer"]: entry["qat_sqnr_db"] for entry in report.per_layer_error}
    for layer in ("conv_swish", "conv_relu6", "fc_swish"):
        assert conversion_error[layer] is not None and conversion_error[layer] > 20, (layer, conversion_error)


def test_an_activation_int8_cannot_run_is_named_with_what_to_do():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="elu", name="fc")(inputs)
    x = keras.layers.Activation("softplus", name="soft")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match=r"'fc' \(Dense, activation 'elu'\).*'soft' "
                                                            r"\(Activation, activation 'softplus'\).*Use one"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2))


def test_an_activation_int8_cannot_run_is_named_with_the_users_layer_class_after_a_rewrite():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(8, 3, activation="elu", name="sep")(inputs)  # rewritten: depthwise + conv
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match=r"'sep' \(SeparableConv2D, activation 'elu'\)"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2))


def _keyword_block_model(block, conv_filters: int) -> keras.Model:
    """mfcc -> Conv1D 'conv' -> `block` -> GlobalAveragePooling1D -> Dense 'keyword'."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((40, 6), name="mfcc")
    x = block(keras.layers.Conv1D(conv_filters, 5, activation="relu", name="conv")(inputs))
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="keyword")(x))


def _fine_tuned(model, float_epochs: int, end_step: int, epochs: int, **prepare_arguments):
    """`model` trained in float on the keyword data, then prepared and fine-tuned."""
    x_train, y_train = _keyword_data(512, 0)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=float_epochs, batch_size=32, verbose=0)
    joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=end_step, frequency=4, **prepare_arguments,
                            check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return joint


def test_a_separable_conv1d_block_is_int8_and_saves(tmp_path):
    """TF-MOT's SeparableConv1D transform builds Python Lambda layers, which tf_keras's safe mode refuses
    to rebuild, so its quantize_apply fails; tfjoint rewrites the block as depthwise + pointwise Conv2D."""
    x_val, y_val = _keyword_data(256, 1)

    def block(x):
        x = keras.layers.SeparableConv1D(16, 3, padding="same", use_bias=False, name="sep")(x)
        return keras.layers.ReLU(name="sep_relu")(keras.layers.BatchNormalization(name="sep_bn")(x))

    model = _keyword_block_model(block, 12)
    joint = _fine_tuned(model, float_epochs=4, end_step=32, epochs=2)
    assert {"quant_sep", "quant_sep_depthwise"} <= {layer.name for layer in joint.layers}
    path = tmp_path / "joint.keras"
    joint.save(str(path))
    reloaded = tfjoint.load_model(str(path))
    np.testing.assert_allclose(reloaded.predict(x_val, verbose=0), joint.predict(x_val, verbose=0), atol=1e-5)
    report = tfjoint.export_tflite(reloaded, str(tmp_path / "sep1d.tflite"), validation_data=(x_val, y_val),
                                   float_model=model)
    assert report.fully_int8 and report.passed
    assert report.operator_counts["DEPTHWISE_CONV_2D"] == 1 and report.operator_counts["CONV_2D"] == 2
    assert not {"MUL", "ADD", "DEQUANTIZE"} & set(report.operator_counts)  # the BatchNorm folded
    entry = next(e for e in report.per_layer_error if e["layer"] == "sep")
    # Its pointwise half's input is the depthwise half's output, no input of the float layer: it is compared with
    # the pruned float model, which has the two halves.
    assert entry["compared_with"] == "pruned float model" and entry["sqnr_db"] > 20
    assert entry["cumulative_sqnr_db"] is not None


@pytest.mark.parametrize("channel_sparsity", [0.0, 0.5])
def test_a_dense_on_a_sequence_is_int8_and_keeps_its_name(tmp_path, channel_sparsity):
    """The converter lowers a Dense on (batch, steps, features) to a Tensordot left in float."""
    model = _keyword_block_model(keras.layers.Dense(16, activation="relu", name="frame_fc"), 8)
    joint = _fine_tuned(model, float_epochs=2, end_step=16, epochs=1, channel_sparsity=channel_sparsity)
    report = tfjoint.export_tflite(joint, str(tmp_path / "seq.tflite"), validation_data=_keyword_data(128, 1),
                                   float_model=model)
    assert report.fully_int8 and report.passed and not report.float_ops
    assert report.per_output["keyword"]["sqnr_db"] > 20  # the int8 file computes what the QAT model does
    assert report.per_layer_sparsity["frame_fc"]["tflite"] == pytest.approx(
        report.per_layer_sparsity["frame_fc"]["keras"])
    assert report.per_layer_channels["frame_fc"]["tflite"] == (8 if channel_sparsity else 16)
    entry = next(e for e in report.per_layer_error if e["layer"] == "frame_fc")
    assert entry["qat_sqnr_db"] is not None and entry["qat_sqnr_db"] > 20


def test_a_depthwise_conv1d_block_is_int8_with_its_batchnorm_folded(tmp_path):
    """TF-MOT's 8-bit registry has no DepthwiseConv1D: it is rewritten as a (k, 1) DepthwiseConv2D."""
    def block(x):
        x = keras.layers.DepthwiseConv1D(3, padding="same", use_bias=False, name="dw")(x)
        return keras.layers.ReLU(name="dw_relu")(keras.layers.BatchNormalization(name="dw_bn")(x))

    model = _keyword_block_model(block, 8)
    joint = _fine_tuned(model, float_epochs=2, end_step=16, epochs=1)
    assert type(joint.get_layer("quant_dw").layer).__name__ == "DepthwiseConv2D"
    report = tfjoint.export_tflite(joint, str(tmp_path / "dw1d.tflite"), validation_data=_keyword_data(128, 1),
                                   float_model=model)
    assert report.fully_int8 and report.passed
    assert report.operator_counts["DEPTHWISE_CONV_2D"] == 1
    assert not {"MUL", "ADD", "DEQUANTIZE"} & set(report.operator_counts)  # the BatchNorm folded
    assert report.per_output["keyword"]["sqnr_db"] > 20


def _conv_dilations(path) -> list[tuple[int, int]]:
    """(height, width) dilation factors of every CONV_2D in the file, read with TFLM's flatbuffer schema."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    conv = next(i for i, code in enumerate(model.operatorCodes)
                if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D)
    return [(op.builtinOptions.dilationHFactor, op.builtinOptions.dilationWFactor)
            for op in model.subgraphs[0].operators if op.opcodeIndex == conv]


def test_dilated_convolutions_are_one_int8_conv_each_with_its_dilation_in_tflm(tmp_path):
    """A TCN's causal dilated Conv1D and a dilated Conv2D: Keras lowers dilation to SPACE_TO_BATCH_ND, CONV_2D,
    BATCH_TO_SPACE_ND, which QAT's fake quantization kept float (refused before training); each is now one
    CONV_2D whose dilation factors TFLM runs."""
    def block(x):
        x = keras.layers.Conv1D(8, 3, dilation_rate=2, padding="causal", activation="relu", name="tcn_2")(x)
        x = keras.layers.Conv1D(8, 3, dilation_rate=4, padding="same", name="tcn_4")(x)
        x = keras.layers.Reshape((36, 8, 1))(keras.layers.ReLU()(x))
        x = keras.layers.Conv2D(4, 3, dilation_rate=(2, 1), activation="relu", name="dilated_2d")(x)
        return keras.layers.Reshape((32, 24))(x)

    model = _keyword_block_model(block, 4)
    joint = _fine_tuned(model, float_epochs=2, end_step=16, epochs=1)
    assert type(joint.get_layer("quant_dilated_2d").layer).__name__ == "DilatedConv2D"
    path = tmp_path / "tcn.tflite"
    report = tfjoint.export_tflite(joint, str(path), validation_data=_keyword_data(128, 1),
                                   options=tfjoint.ExportOptions(runtimes=("tflm",)))
    assert report.fully_int8 and report.passed
    assert not {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} & set(report.operator_counts)
    assert sorted(_conv_dilations(path)) == [(1, 1), (2, 1), (2, 1), (4, 1)]  # "conv", then the dilated three


def test_a_file_tflm_computes_otherwise_than_litert_is_refused_before_training():
    """A dilated SeparableConv1D converts to int8 SPACE_TO_BATCH_ND, DEPTHWISE_CONV_2D and BATCH_TO_SPACE_ND, which
    LiteRT computes right and TFLM does not (measured: 12 dB SQNR after training, found only by the export's
    gate). `prepare(check="tflm")` runs the file in both before training."""
    def block(x):
        return keras.layers.SeparableConv1D(8, 3, dilation_rate=2, name="dilated_separable")(x)

    model = _keyword_block_model(block, 6)
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match="not compute in TensorFlow Lite Micro what it computes in LiteRT.*SPACE_TO_BATCH"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), sample_inputs=_keyword_data(16, 0)[0],
                        check=("tflm",))
    tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), sample_inputs=_keyword_data(16, 0)[0])  # LiteRT
