"""Channel pruning: coupled channels removed together, masks on schedule in the graph, channels gone after strip."""

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint
from tfjoint.prune.channel_groups import plan_channel_groups
from tfjoint.prune.schedule import kept_channels
from tfjoint.train.prepared_model import group_masks


def _residual_model():
    """Conv+BN+ReLU stem, a residual block (Add), a depthwise conv, a Concatenate, Flatten -> Dense."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2), name="image")
    stem = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    stem = keras.layers.BatchNormalization(name="stem_bn")(stem)
    stem = keras.layers.ReLU(name="stem_relu")(stem)
    branch = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="branch")(stem)
    merged = keras.layers.Add(name="residual")([stem, branch])
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(merged)
    side = keras.layers.Conv2D(4, 1, activation="relu", name="side")(merged)
    x = keras.layers.Concatenate(name="concat")([depthwise, side])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x), name="residual")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 2), dtype=np.float32), rng.integers(0, 3, n)


def test_coupled_channels_form_one_group_and_outputs_keep_theirs():
    model = _residual_model()
    plan = plan_channel_groups(model, {"stem", "branch", "side", "fc", "head"})
    # The Add couples stem and branch: one group, scored by both.
    assert plan.groups["stem"].producers == ["stem", "branch"] and plan.groups["stem"].frozen_by is None
    assert "branch" not in plan.groups
    # The depthwise conv follows its input; the Concatenate lays the two groups side by side.
    assert plan.layer_segments("dw") == (("stem", 8),)
    assert plan.layer_segments("concat") == (("stem", 8), ("side", 4))
    # Flatten spreads the 12 channels over 4x4 positions for the Dense.
    assert plan.layers["fc"].inputs[0].positions == 16 and plan.layers["fc"].inputs[0].channels == 12
    # The model output keeps every channel (its softmax alone would freeze it too).
    assert plan.groups["head"].frozen_by
    assert set(plan.prunable_groups) == {"stem", "side", "fc"}


def test_activations_that_do_not_map_zero_to_zero_keep_their_channels():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="sigmoid", name="gate")(inputs)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    plan = plan_channel_groups(model, {"gate", "hidden", "out"})
    assert "sigmoid" in plan.groups["gate"].frozen_by
    assert plan.groups["hidden"].frozen_by is None


@pytest.fixture(scope="module")
def channel_pruned():
    joint = tfjoint.prepare(_residual_model(),
                            tfjoint.JointSchedule(0.5, end_step=6, frequency=2, channel_sparsity=0.5))
    joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x, y = _data()
    joint.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 8 steps: past end_step
    return joint


def test_masks_follow_the_schedule_and_coupled_producers_share_them(channel_pruned):
    assert isinstance(channel_pruned, tfjoint.inspect.PreparedModel)
    masks = group_masks(channel_pruned)
    assert set(masks) == {"stem", "side", "fc"}
    for group, mask in masks.items():
        assert mask.sum() == kept_channels(mask.size, 0.5), group
    members = {m.layer_name: m.channel_mask.numpy() for m in tfjoint.train.readback.channel_members(channel_pruned)}
    np.testing.assert_array_equal(members["stem"], members["branch"])  # the residual branches drop the same indices
    np.testing.assert_array_equal(members["stem_bn"], members["stem"])
    np.testing.assert_array_equal(members["dw"], members["stem"])


def test_weight_sparsity_applies_within_the_kept_channels(channel_pruned):
    for pk in tfjoint.inspect.pruned_kernels(channel_pruned):
        if pk.layer_name == "head":
            continue
        kernel = pk.masked_kernel()
        kept = kernel[..., np.any(kernel != 0, axis=tuple(range(kernel.ndim - 1)))]
        assert np.mean(kept == 0) == pytest.approx(0.5, abs=0.05), pk.layer_name


def test_filters_are_ranked_by_l1_norm():
    joint = tfjoint.prepare(_residual_model(),
                            tfjoint.JointSchedule(0.0, end_step=1, frequency=1, channel_sparsity=0.5))
    joint.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")  # weights never move
    x, y = _data(8)
    joint.fit(x, y, batch_size=8, verbose=0)
    kernel = next(pk.kernel.numpy() for pk in tfjoint.inspect.pruned_kernels(joint) if pk.layer_name == "fc")
    l1 = np.abs(kernel).sum(axis=0)
    expected = np.zeros(16)
    expected[np.argsort(-l1)[:8]] = 1
    np.testing.assert_array_equal(group_masks(joint)["fc"], expected)


def test_strip_removes_the_channels_and_computes_the_same(channel_pruned):
    stripped = tfjoint.strip(channel_pruned)
    assert not isinstance(stripped, tfjoint.inspect.PreparedModel)
    filters = {layer.layer.name: layer.layer.get_config().get("filters") or layer.layer.get_config().get("units")
               for layer in stripped.layers if hasattr(layer, "layer")}
    assert filters["stem"] == filters["branch"] == 4 and filters["side"] == 2 and filters["fc"] == 8
    assert filters["head"] == 3  # the output keeps its channels
    assert stripped.get_layer("quant_fc").layer.kernel.shape == (16 * 6, 8)  # 4x4 positions x (4 + 2) channels
    x, _ = _data(32, seed=3)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), channel_pruned.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_the_int8_file_has_fewer_channels_and_the_report_says_so(channel_pruned, tmp_path):
    x, y = _data(64, seed=4)
    report = tfjoint.export_tflite(channel_pruned, str(tmp_path / "c.tflite"), validation_data=(x, y),
                                   float_model=_residual_model())
    assert report.fully_int8 and report.passed
    channels = report.per_layer_channels
    assert channels["stem"] == {"original": 8, "keras": 4, "tflite": 4, "unit": "channels"}
    assert channels["side"] == {"original": 4, "keras": 2, "tflite": 2, "unit": "channels"}
    assert channels["head"] == {"original": 3, "keras": 3, "tflite": 3, "unit": "channels"}
    shapes = {w.op_name: w.shape for w in report.flatbuffer.weights if w.op_name == "DEPTHWISE_CONV_2D"}
    assert shapes["DEPTHWISE_CONV_2D"][-1] == 4
    assert "channels" in str(report) and "original" in str(report)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["joint.h5", "joint.keras", "joint_dir"])
def test_a_channel_pruned_model_saved_mid_fit_resumes(tmp_path, suffix):
    def fresh():
        joint = tfjoint.prepare(_residual_model(),
                                tfjoint.JointSchedule(0.5, end_step=8, frequency=2, channel_sparsity=0.5),
                                check=False)  # about resuming: no file is made
        joint.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        return joint

    x, y = _data(64)
    straight = fresh()
    straight.fit(x[:32], y[:32], batch_size=8, verbose=0)
    interrupted = fresh()
    interrupted.fit(x[:32], y[:32], batch_size=8, verbose=0)
    interrupted.save(str(tmp_path / suffix))
    resumed = tfjoint.load_model(str(tmp_path / suffix))
    assert isinstance(resumed, tfjoint.inspect.PreparedModel)
    for model in (straight, resumed):
        model.fit(x[32:], y[32:], batch_size=8, verbose=0, callbacks=tfjoint.callbacks())
    assert tfjoint.inspect.training_step(resumed) == tfjoint.inspect.training_step(straight) == 8
    for group, mask in group_masks(resumed).items():
        assert mask.sum() == kept_channels(mask.size, 0.5), group
        if suffix != "joint_dir":  # a SavedModel restores no optimizer state (tf_keras 2.21): kernels drift apart
            np.testing.assert_array_equal(mask, group_masks(straight)[group])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(channel_sparsity=1.0), tfjoint.ConfigError, "`channel_sparsity` must be in \\[0, 1\\)"),
        (dict(channel_sparsity=-0.2), tfjoint.ConfigError, "channel_sparsity"),
        (dict(channel_sparsity=0.5, channel_criterion="l3"), tfjoint.ConfigError, "`channel_criterion`.*'l3'"),
    ],
)
def test_bad_channel_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        tfjoint.prepare(_residual_model(), target_sparsity=0.5, end_step=10, **kwargs)


def test_a_model_with_no_removable_channels_is_refused_with_the_reason():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="only")(inputs))
    with pytest.raises(tfjoint.ConfigError, match="no channels.*can be removed.*'only'.*model output"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=10, channel_sparsity=0.5))


def test_fitting_a_rewrapped_channel_model_fails_fast():
    joint = tfjoint.prepare(_residual_model(),
                            tfjoint.JointSchedule(0.5, end_step=4, frequency=2, channel_sparsity=0.5))
    plain = keras.Model(joint.inputs, joint.outputs)  # loses PreparedModel's train_step
    plain.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(tfjoint.errors.ModelStructureError, match="does not update channel masks"):
        plain.fit(*_data(8), verbose=0, callbacks=tfjoint.callbacks())


def test_conv1d_channels_are_removed_through_the_conv2d_rewrite():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((20, 4))
    x = keras.layers.Conv1D(8, 3, use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv1D(8, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=2, frequency=1, channel_sparsity=0.5))
    joint.compile("adam", "mse")
    x_data = np.random.default_rng(0).random((16, 20, 4), dtype=np.float32)
    joint.fit(x_data, np.zeros((16, 2)), batch_size=8, verbose=0)
    stripped = tfjoint.strip(joint)
    assert stripped.get_layer("quant_c1").layer.filters == 4 and stripped.get_layer("quant_c2").layer.filters == 4
    np.testing.assert_allclose(stripped.predict(x_data, verbose=0), joint.predict(x_data, verbose=0), atol=1e-5)


def test_the_model_input_may_feed_a_residual_add():
    """TF-MOT calls the input QuantizeLayer once per consumer: a second call on the same channels is not a
    shared layer whose channels could differ, so the block's other convolutions are still pruned."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block")(inputs)
    x = keras.layers.Add(name="residual")([x, inputs])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="wide")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.0, end_step=2, frequency=1, channel_sparsity=0.5))
    input_quantizers = [layer for layer in joint.layers if type(layer).__name__ == "JointQuantizeLayer"]
    assert [len(layer.inbound_nodes) for layer in input_quantizers] == [2]  # the case this test is about
    joint.compile("adam", "mse")
    x_data = np.random.default_rng(0).random((16, 8, 8, 4), dtype=np.float32)
    joint.fit(x_data, np.zeros((16, 2)), batch_size=8, verbose=0)
    stripped = tfjoint.strip(joint)
    # 'block' adds to the input, whose channels are never removed; 'wide' loses half of its own.
    assert stripped.get_layer("quant_block").layer.filters == 4 and stripped.get_layer("quant_wide").layer.filters == 4
    np.testing.assert_allclose(stripped.predict(x_data, verbose=0), joint.predict(x_data, verbose=0), atol=1e-5)
