"""One fit prunes on TF-MOT's schedule and quantizes; zeros stay zero, also in the quantized weights."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras  # noqa: E402
from conftest import compile_joint, image_data, small_cnn

import tfjoint
from tfjoint._keras import flattened, tf
from tfjoint.inspect import pruned_kernels, training_step
from tfjoint.prune.schedule import expected_zero_fraction

SCHEDULE = dict(target_sparsity=0.8, begin_step=2, end_step=14, frequency=3, initial_sparsity=0.1, power=3)


def _quantized_kernel(pk) -> np.ndarray:
    """What the converter will turn into int8: the quantizer's inference output."""
    return pk.quantizer(pk.kernel, False, pk.quantizer_weights).numpy()


def _tfmot_zero_fraction(size: int, steps_taken: int) -> float:
    """Zeros TF-MOT's own PolynomialDecay asks for after `steps_taken` steps."""
    tfmot_schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=SCHEDULE["initial_sparsity"], final_sparsity=SCHEDULE["target_sparsity"],
        begin_step=SCHEDULE["begin_step"], end_step=SCHEDULE["end_step"], power=SCHEDULE["power"],
        frequency=SCHEDULE["frequency"],
    )
    sparsity = 0.0
    for step in range(1, steps_taken + 1):  # TF-MOT's n-th training step is step n
        should_prune, value = tfmot_schedule(np.int64(step))
        if bool(should_prune):
            sparsity = float(value)
    return expected_zero_fraction(size, sparsity) if sparsity else 0.0


def test_sparsity_follows_tfmot_polynomial_decay_at_every_step():
    joint = compile_joint(tfjoint.prepare(small_cnn(), **SCHEDULE))
    x, y = image_data(n=8)
    kernels = pruned_kernels(joint)
    assert {pk.layer_name for pk in kernels} == {"conv", "fc"}
    for steps_taken in range(1, 21):
        joint.fit(x, y, batch_size=8, epochs=1, verbose=0)  # one step
        for pk in kernels:
            size = pk.mask.numpy().size
            expected = _tfmot_zero_fraction(size, steps_taken)
            assert int(pk.step.numpy()) == steps_taken
            # Exact up to one weight: where size * (1 - sparsity) lands on .5 in
            # float32, the graph's fused pow() can round the other way.
            zeros = np.mean(pk.mask.numpy() == 0)
            assert zeros == pytest.approx(expected, abs=1.01 / size), (pk.layer_name, steps_taken)
            assert np.mean(_quantized_kernel(pk) == 0) >= expected - 1e-9
    # After end_step the target holds.
    for pk in kernels:
        assert np.mean(pk.mask.numpy() == 0) == pytest.approx(expected_zero_fraction(pk.mask.numpy().size, 0.8))


def test_pruned_weights_stay_zero_in_quantized_weights_after_end_step():
    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.75, end_step=4, frequency=2)), 1e-2)
    x, y = image_data(n=32)
    joint.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 4 steps: at target now
    zero_positions = {pk.layer_name: _quantized_kernel(pk) == 0 for pk in pruned_kernels(joint)}
    for _ in range(5):  # 20 more steps with a large learning rate
        joint.fit(x, y, batch_size=8, epochs=1, verbose=0)
        for pk in pruned_kernels(joint):
            quantized = _quantized_kernel(pk)
            assert np.all(quantized[zero_positions[pk.layer_name]] == 0), pk.layer_name
            assert np.mean(quantized == 0) >= 0.75 - 1 / quantized.size


def _output_range(model, layer: str) -> tuple[float, float]:
    """A layer's output range (a MovingAverageQuantizer's variables)."""
    [low] = [w.numpy() for w in model.weights if w.name == f"quant_{layer}/output_min:0"]
    [high] = [w.numpy() for w in model.weights if w.name == f"quant_{layer}/output_max:0"]
    return float(low), float(high)


def test_fake_quant_switches_on_at_quant_start_step():
    """Before the start: the float model, quantizers not even run; at it: ranges from that batch."""
    model = small_cnn()
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=200, begin_step=100, quant_start_step=3))
    compile_joint(joint, learning_rate=0.0)  # weights never change: only the quantization state does
    relu_output = keras.Model(model.inputs, model.get_layer("relu").output)
    x, _ = image_data(n=8)
    previous_max = 0.0
    for step in range(5):
        scaled = x * (step + 1)  # a different range each call
        before = joint(scaled, training=True).numpy()  # the call counts as a step too
        float_out = model(scaled, training=True).numpy()
        # The call above was the (step+1)-th; it is quantized when step >= 3.
        if step < 3:
            np.testing.assert_allclose(before, float_out, atol=1e-5)
            assert _output_range(joint, "relu") == (-6.0, 6.0)  # TF-MOT's initial range, never updated
            continue
        assert np.max(np.abs(before - float_out)) > 1e-4
        relu_max = float(np.max(relu_output(scaled, training=True)))
        # (rel=0.01: the quantized model's ReLU sees a fake-quantized conv, the float model's a float one)
        if step == 3:  # warm start: the first quantized batch's range
            assert _output_range(joint, "relu") == pytest.approx((0.0, relu_max), rel=0.01)
        else:  # the second quantized step: decay min(0.999, 1 - 1/2), the mean of the two batch ranges
            assert _output_range(joint, "relu")[1] == pytest.approx(0.5 * previous_max + 0.5 * relu_max, rel=0.01)
        previous_max = _output_range(joint, "relu")[1]
    assert training_step(joint) == 5


def _step_counters(model) -> list[str]:
    return [w.name for w in model.weights if "tfjoint_step" in w.name]


def _range_variables(model) -> list:
    return [w for w in model.weights if w.name.endswith(("_min:0", "_max:0"))]


def test_only_quantizers_that_read_the_step_count_it():
    """Pruned kernels and moving-average activation quantizers count steps; the others do not."""
    default = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100))
    # ReLU output and fc pre-activation: warm-started on their first step. The input (AllValuesQuantizer) is not.
    activation_counters = sorted(n for n in _step_counters(default) if "kernel" not in n)
    assert activation_counters == ["quant_fc/pre_activation_tfjoint_step:0", "quant_relu/output_tfjoint_step:0"]
    assert len(_step_counters(default)) == len(pruned_kernels(default)) + 2 == 4
    nothing_pruned = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100),
                                     layers=tfjoint.LayerSelection(exclude=["conv", "fc"]))
    assert len(_step_counters(nothing_pruned)) == 2 and training_step(nothing_pruned) == 0
    compile_joint(nothing_pruned).fit(*image_data(n=16), batch_size=8, verbose=0)
    assert training_step(nothing_pruned) == 2


def test_ranges_follow_tfmots_moving_average_past_its_horizon():
    """From the 1000th quantized step on, a range moves as TF-MOT's MovingAverageQuantizer's: decay 0.999."""
    model = small_cnn()
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=100),
                            layers=tfjoint.LayerSelection(exclude=["conv", "fc"]))
    x, _ = image_data(n=8)
    joint(x, training=True)
    [counter] = [w for w in joint.weights if w.name == "quant_relu/output_tfjoint_step:0"]
    for steps_before, weight_of_new in ((1, 1 / 2), (9, 1 / 10), (5000, 1 - 0.999)):
        counter.assign(steps_before)
        previous = _output_range(joint, "relu")[1]
        scaled = x * 3  # a wider batch range than before
        joint(scaled, training=True)
        relu_max = float(np.max(keras.Model(model.inputs, model.get_layer("relu").output)(scaled, training=True)))
        expected = (1 - weight_of_new) * previous + weight_of_new * relu_max
        assert _output_range(joint, "relu")[1] == pytest.approx(expected, rel=0.005), steps_before


def test_unpruned_training_forward_is_tfmot_quantize_model_after_the_warm_start():
    """Nothing pruned: TF-MOT's quantize_model graph, with the first 1000 ranges averaged (then TF-MOT's EMA)."""
    x, _ = image_data(n=8)
    model = small_cnn()
    ours = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=100),
                           layers=tfjoint.LayerSelection(exclude=["conv", "fc"]))
    theirs = tfmot.quantization.keras.quantize_model(small_cnn())
    ours(x, training=True)
    relu_max = float(np.max(keras.Model(model.inputs, model.get_layer("relu").output)(x, training=True)))
    assert _output_range(ours, "relu") == pytest.approx((0.0, relu_max), rel=0.01)  # TF-MOT's: 0.999 * [-6, 6] + ...
    # TF-MOT's model takes ours' state after that step (ranges, BatchNorm statistics): only the counters are ours.
    ours_state = [w for w in ours.weights if "tfjoint_step" not in w.name]
    assert [w.shape for w in ours_state] == [w.shape for w in theirs.weights]
    assert len(_range_variables(ours)) == len(_range_variables(theirs)) == 10
    for mine, their in zip(ours_state, theirs.weights):
        their.assign(mine)
    for _ in range(3):  # on the same batch the mean of its ranges is its range: TF-MOT's (after the copy) too
        np.testing.assert_allclose(ours(x, training=True).numpy(), theirs(x, training=True).numpy(), atol=1e-6)
    np.testing.assert_allclose(ours(x, training=False).numpy(), theirs(x, training=False).numpy(), atol=1e-6)


def test_off_grid_end_step_reaches_the_target_exactly_at_end_step():
    """end_step=8 with frequency 3: TF-MOT would stop at step 6 (60%); tfjoint updates again at 8."""
    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.8, end_step=8, power=1, frequency=3)))
    x, y = image_data(n=8)
    for steps_taken in range(1, 10):
        joint.fit(x, y, batch_size=8, epochs=1, verbose=0)
        for pk in pruned_kernels(joint):
            size = pk.mask.numpy().size
            zeros = float(np.mean(pk.mask.numpy() == 0))
            if steps_taken in (6, 7):  # after the last grid step: 60%
                assert zeros == pytest.approx(expected_zero_fraction(size, 0.6), abs=1.01 / size), pk.layer_name
            if steps_taken >= 8:
                assert zeros == pytest.approx(expected_zero_fraction(size, 0.8), abs=1.01 / size), pk.layer_name


def test_a_shared_layer_counts_each_step_once():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = keras.layers.Dense(4, name="shared")
    merged = keras.layers.Concatenate()([shared(a), shared(b)])
    model = keras.Model([a, b], keras.layers.Dense(2, name="head")(merged))
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4, frequency=2))
    joint.compile("adam", "mse")
    x = np.ones((24, 6), np.float32)
    joint.fit([x, x], np.zeros((24, 2)), batch_size=8, epochs=1, verbose=0)  # 3 steps
    assert {pk.layer_name: int(pk.step.numpy()) for pk in pruned_kernels(joint)} == {"shared": 3, "head": 3}


def test_a_training_mode_call_is_one_step_and_inference_is_none():
    joint = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=10, frequency=1))
    x, _ = image_data(n=4)
    joint(x, training=True)
    assert training_step(joint) == 1
    joint(x)
    joint.predict(x, verbose=0)
    assert training_step(joint) == 1


def test_fit_without_callbacks_follows_the_schedule():
    joint = compile_joint(tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=4, frequency=2)))
    x, y = image_data(n=32)
    joint.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for pk in pruned_kernels(joint):
        assert np.mean(pk.mask.numpy() == 0) == pytest.approx(expected_zero_fraction(pk.mask.numpy().size, 0.5))


def test_prepare_copies_weights_and_leaves_the_input_model_alone():
    model = small_cnn()
    before = [w.copy() for w in model.get_weights()]
    joint = compile_joint(tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=100)))
    for pk in pruned_kernels(joint):
        np.testing.assert_array_equal(pk.kernel.numpy(), model.get_layer(pk.layer_name).kernel.numpy())
    joint.fit(*image_data(n=16), batch_size=8, verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def _conv1d_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 4), name="signal")
    x = keras.layers.Conv1D(8, 5, activation="relu", name="conv1d")(inputs)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def test_conv1d_is_pruned_and_quantized():
    joint = compile_joint(tfjoint.prepare(_conv1d_model(), tfjoint.JointSchedule(0.6, end_step=2, frequency=1)))
    x = np.random.default_rng(0).random((16, 32, 4), dtype=np.float32)
    joint.fit(x, np.zeros(16), batch_size=8, epochs=1, verbose=0)
    by_name = {pk.layer_name: pk for pk in pruned_kernels(joint)}
    assert set(by_name) == {"conv1d", "head"}
    quantized = _quantized_kernel(by_name["conv1d"])
    assert np.mean(quantized == 0) == pytest.approx(expected_zero_fraction(quantized.size, 0.6))
    # Quantized: at most 255 distinct values per tensor (per-tensor int8 grid).
    assert len(np.unique(quantized)) <= 255
    assert not np.array_equal(quantized, by_name["conv1d"].kernel.numpy() * by_name["conv1d"].mask.numpy())


def _depthwise_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    x = keras.layers.Conv2D(4, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_depthwise_is_quantized_but_pruned_only_on_request():
    default = tfjoint.prepare(_depthwise_model(), tfjoint.JointSchedule(0.5, end_step=100))
    assert {pk.layer_name for pk in pruned_kernels(default)} == {"pw", "out"}
    assert "quant_dw" in [layer.name for layer in default.layers]
    opted_in = tfjoint.prepare(_depthwise_model(), tfjoint.JointSchedule(0.5, end_step=2, frequency=1),
                               layers=tfjoint.LayerSelection(prune_depthwise=True))
    opted_in.compile("adam", "mse")
    opted_in.fit(np.ones((4, 8, 8, 4), np.float32), np.zeros((4, 2)), batch_size=2, verbose=0)
    dw = {pk.layer_name: pk for pk in pruned_kernels(opted_in)}["dw"]
    assert dw.weight_name == "depthwise_kernel"
    assert np.mean(dw.mask.numpy() == 0) == pytest.approx(expected_zero_fraction(dw.mask.numpy().size, 0.5))


def test_exclude_by_name_and_by_predicate():
    by_name = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100),
                              layers=tfjoint.LayerSelection(exclude=["fc"]))
    assert [pk.layer_name for pk in pruned_kernels(by_name)] == ["conv"]
    by_predicate = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100),
                                   layers=tfjoint.LayerSelection(
                                       exclude=lambda layer: isinstance(layer, keras.layers.Conv2D)))
    assert [pk.layer_name for pk in pruned_kernels(by_predicate)] == ["fc"]
    only = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100),
                           layers=tfjoint.LayerSelection(prune_only=["conv"]))
    assert [pk.layer_name for pk in pruned_kernels(only)] == ["conv"]


def test_multi_input_multi_output_functional_and_sequential():
    keras.utils.set_random_seed(3)
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    merged = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu", name="da")(a), b])
    model = keras.Model([a, b], [keras.layers.Dense(3, name="o1")(merged), keras.layers.Dense(1, name="o2")(merged)])
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=2, frequency=1))
    joint.compile("adam", ["mse", "mse"])
    joint.fit([np.ones((8, 6)), np.ones((8, 4))], [np.zeros((8, 3)), np.zeros((8, 1))], batch_size=4, verbose=0)
    assert {pk.layer_name for pk in pruned_kernels(joint)} == {"da", "o1", "o2"}
    assert all(np.mean(pk.mask.numpy() == 0) > 0.4 for pk in pruned_kernels(joint))

    sequential = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    joint = tfjoint.prepare(sequential, tfjoint.JointSchedule(0.5, end_step=100))
    assert len(pruned_kernels(joint)) == 2


# --- Bad models get clear errors --------------------------------------------


def test_a_schedule_object_or_the_keywords_not_both():
    schedule = tfjoint.JointSchedule(target_sparsity=0.5, end_step=10, frequency=5)
    assert tfjoint.inspect.schedule_of(tfjoint.prepare(small_cnn(), schedule)) == schedule
    with pytest.raises(tfjoint.ConfigError, match="either `schedule` or `frequency`, `target_sparsity`, not both"):
        tfjoint.prepare(small_cnn(), schedule, target_sparsity=0.5, frequency=2)
    with pytest.raises(tfjoint.ConfigError, match="prepare needs a schedule: a target sparsity"):
        tfjoint.prepare(small_cnn())
    with pytest.raises(tfjoint.ConfigError, match="`schedule` must be a target sparsity.*received str 'high'"):
        tfjoint.prepare(small_cnn(), "high")


def test_the_model_is_checked_before_the_arguments():
    """A wrong model and wrong arguments: the first error names the model, the real problem."""
    with pytest.raises(tfjoint.errors.ModelTypeError, match="expected a Keras model.*str.*tfjoint.load_model"):
        tfjoint.prepare("model.h5", 1.5)
    with pytest.raises(tfjoint.ConfigError, match="target_sparsity"):
        tfjoint.prepare(small_cnn(), 1.5)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3), np.float32))
    with pytest.raises(tfjoint.errors.ModelTypeError, match="subclassed.*Functional API"):
        tfjoint.prepare(net, tfjoint.JointSchedule(0.5, end_step=100))


def test_already_wrapped_models_are_refused():
    pruned = tfmot.sparsity.keras.prune_low_magnitude(small_cnn())
    with pytest.raises(tfjoint.errors.ModelStructureError, match="PruneLowMagnitude.*already pruned or quantized"):
        tfjoint.prepare(pruned, tfjoint.JointSchedule(0.5, end_step=100))
    prepared = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100))
    with pytest.raises(tfjoint.errors.ModelStructureError, match="already pruned or quantized"):
        tfjoint.prepare(prepared, tfjoint.JointSchedule(0.5, end_step=100))


def test_a_nested_model_is_flattened_into_its_layers_and_one_whose_names_clash_is_refused_naming_them():
    """Transfer learning's idiom, a base model called as a layer of the outer model: TF-MOT rewrites no nested
    model, so `prepare` calls the base's own layers in its place (the same weights); the model computes the same."""
    inner = small_cnn()
    inner.get_layer("bn").trainable = False
    inputs = keras.Input((8, 8, 1), name="image")
    outer = keras.Model(inputs, keras.layers.Dense(3, name="head")(inner(inputs)), name="outer")
    prepared = tfjoint.prepare(outer, tfjoint.JointSchedule(0.5, end_step=100))
    kinds = {layer.name: layer for layer in prepared.layers}
    assert "small_cnn" not in kinds and {"quant_conv", "quant_fc", "quant_head"} <= set(kinds), sorted(kinds)
    assert not kinds["quant_bn"].trainable  # the user's flag kept
    kernel = next(w for w in kinds["quant_conv"].weights if w.name.endswith("kernel:0"))
    np.testing.assert_array_equal(kernel.numpy(), inner.get_layer("conv").kernel.numpy())
    x, _ = image_data(8)
    flat = flattened(outer)  # what prepare wrapped
    assert [layer.name for layer in flat.layers] == ["image", "conv", "bn", "relu", "flatten", "fc", "head"]
    np.testing.assert_allclose(flat.predict(x, verbose=0), outer.predict(x, verbose=0), atol=1e-6)

    clash = keras.Model(inputs, keras.layers.Dense(3, name="fc")(small_cnn()(inputs)))  # "fc" twice
    with pytest.raises(tfjoint.errors.ModelStructureError, match=r"nested model.*cannot flatten.*: fc\)"):
        tfjoint.prepare(clash, tfjoint.JointSchedule(0.5, end_step=100))


def test_pruning_an_unprunable_layer_is_refused():
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'bn' \\(BatchNormalization\\).*cannot be"):
        tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100),
                        layers=tfjoint.LayerSelection(prune_only=["conv", "bn"]))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="prune_depthwise=True"):
        tfjoint.prepare(_depthwise_model(), tfjoint.JointSchedule(0.5, end_step=100),
                        layers=tfjoint.LayerSelection(prune_only=["dw"]))


def test_unknown_layer_names_are_refused():
    with pytest.raises(tfjoint.ConfigError, match="does not have: \\['nope'\\]"):
        tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=100),
                        layers=tfjoint.LayerSelection(exclude=["nope"]))


def test_unquantizable_layer_is_named():
    inputs = keras.Input((5, 3))
    x = keras.layers.SimpleRNN(4, name="rnn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError, match="'rnn' \\(SimpleRNN\\)"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=100))



@pytest.mark.parametrize("where", ["layer argument", "ActivityRegularization layer"])
def test_an_activity_regularizer_is_refused_before_training_naming_the_layer(where):
    """TF-MOT's wrapper cannot carry the loss an activity regularizer adds in its call: the fit failed with
    TensorFlow's 'out of scope' TypeError."""
    inputs = keras.Input((8,))
    argument = where == "layer argument"
    x = keras.layers.Dense(8, name="hidden" if argument else "dense",
                           activity_regularizer=keras.regularizers.l2(1e-3) if argument else None)(inputs)
    if not argument:
        x = keras.layers.ActivityRegularization(l2=1e-3, name="hidden")(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(tfjoint.errors.UnsupportedLayerError,
                       match="'hidden' \\(.*activity_regularizer=None"):
        tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=4), check=False)


@pytest.mark.parametrize("outputs", ["list", "dict"])
def test_losses_metrics_and_labels_keyed_by_the_users_output_names(outputs):
    """keras.io's multi-output idiom, `loss={"classes": ...}` and `y={"classes": ...}`, on the prepared model, whose
    outputs are the quantized wrappers ('quant_classes'), trains each output on its own loss and weight."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    classes = keras.layers.Dense(10, activation="softmax", name="classes")(hidden)
    flag = keras.layers.Dense(1, activation="sigmoid", name="flag")(hidden)
    model = keras.Model(inputs, [classes, flag] if outputs == "list" else {"classes": classes, "flag": flag})
    joint = tfjoint.prepare(model, tfjoint.JointSchedule(0.5, end_step=2, frequency=1), check=False)
    joint.compile("adam", loss={"classes": "sparse_categorical_crossentropy", "flag": "binary_crossentropy"},
                  loss_weights={"classes": 1.0, "flag": 0.5}, metrics={"classes": "accuracy"})
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    labels = {"classes": rng.integers(0, 10, 32), "flag": rng.integers(0, 2, (32, 1)).astype(np.float32)}
    history = joint.fit(x, labels, batch_size=8, verbose=0, validation_data=(x, labels)).history
    total, first, second = history["loss"][0], history["quant_classes_loss"][0], history["quant_flag_loss"][0]
    assert total == pytest.approx(first + 0.5 * second, rel=1e-4) and "quant_classes_accuracy" in history
    assert "val_quant_flag_loss" in history
    evaluated = joint.evaluate(x, labels, verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(evaluated["quant_classes_loss"] + 0.5 * evaluated["quant_flag_loss"],
                                              rel=1e-4)
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
    history = joint.fit(dataset, verbose=0, validation_data=dataset).history
    assert history["loss"][0] == pytest.approx(history["quant_classes_loss"][0] + 0.5 * history["quant_flag_loss"][0],
                                               rel=1e-4)
    assert joint.evaluate(dataset, verbose=0, return_dict=True)["loss"] > 0
