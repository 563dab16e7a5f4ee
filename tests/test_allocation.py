"""allocate_sparsity: every plan meets the budget under its caps; each method does what it says."""

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint
from tfjoint.prune.allocation import lamp_scores


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="first")(inputs)
    x = keras.layers.Dense(256, activation="relu", name="wide")(x)
    x = keras.layers.Dense(64, activation="relu", name="narrow")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="last")(x))


_PROJECTION = np.random.default_rng(99).standard_normal((4, 4))


def _data(n=256, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    return x, (x[:, :4] @ _PROJECTION).argmax(1)


@pytest.fixture(scope="module")
def trained():
    model = _mlp()
    x, y = _data(1024)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=5, verbose=0)
    return model


def _weighted_mean(plan, model):
    sizes = tfjoint.inspect.prunable_layers(model)
    return sum(plan[n] * sizes[n] for n in plan) / sum(sizes[n] for n in plan)


@pytest.mark.parametrize("method", ["uniform", "global", "erk", "sensitivity"])
@pytest.mark.parametrize("target", [0.5, 0.9, 0.95])
def test_every_plan_meets_the_budget_under_its_caps(trained, method, target):
    plan = tfjoint.allocate_sparsity(trained, target, method=method, validation_data=_data(256, 1), verbose=False)
    assert isinstance(plan, dict) and set(plan) == {"first", "wide", "narrow", "last"}
    assert _weighted_mean(plan, trained) == pytest.approx(target, abs=0.005)
    assert plan.mean_sparsity == pytest.approx(target, abs=0.005)
    assert max(plan.values()) <= 0.98 + 1e-9 and min(plan.values()) >= 0.0
    if method != "uniform":  # the defaults protect the first and last layers
        assert plan["first"] <= target / 2 + 1e-9 and plan["last"] <= target / 2 + 1e-9


def test_erk_densities_follow_the_shapes(trained):
    plan = tfjoint.allocate_sparsity(trained, 0.9, method="erk", protect_first_last=False)  # no layer clamped
    density = {n: 1 - s for n, s in plan.items()}
    shapes = {"wide": (8, 256), "narrow": (256, 64)}
    raw = {n: sum(s) / np.prod(s) for n, s in shapes.items()}
    assert density["wide"] / density["narrow"] == pytest.approx(raw["wide"] / raw["narrow"], rel=1e-6)


def test_lamp_scores_follow_the_formula():
    weights = np.array([0.5, -2.0, 1.0, 0.1])  # squares 0.25, 4, 1, 0.01
    expected = [0.25 / (0.25 + 1 + 4), 4 / 4, 1 / (1 + 4), 0.01 / (0.01 + 0.25 + 1 + 4)]
    np.testing.assert_allclose(lamp_scores(weights), expected)
    # Scores rank weights as magnitudes do within a layer, and the largest weight of any layer scores 1.
    assert list(np.argsort(lamp_scores(weights))) == list(np.argsort(np.abs(weights)))
    assert lamp_scores(np.array([3.0, 0.2]))[0] == 1.0


def test_sensitivity_scans_each_layer_and_spends_the_budget_where_it_is_cheap(trained):
    x_val, y_val = _data(256, 1)
    plan = tfjoint.allocate_sparsity(trained, 0.8, method="sensitivity", validation_data=(x_val, y_val),
                                     protect_first_last=False, verbose=False)
    assert set(plan.curves) == set(plan)
    baseline = trained.evaluate(x_val, y_val, verbose=0)
    for points in plan.curves.values():
        assert points[0]["sparsity"] == 0.0 and points[0]["loss"] == pytest.approx(baseline, rel=1e-3)
        assert [p["sparsity"] for p in points[1:]] == list(tfjoint.prune.allocation.DEFAULT_LEVELS)
    # The 2048-weight `wide` layer costs less loss per removed weight than the 128-weight `first` one.
    assert plan["wide"] > plan["first"]
    assert plan.to_dict()["curves"] and plan.to_dict()["method"] == "sensitivity"


def test_a_plan_goes_into_prepare_and_each_layer_reaches_its_own_target(trained):
    plan = tfjoint.allocate_sparsity(trained, 0.8, method="erk")
    joint = tfjoint.prepare(trained, tfjoint.JointSchedule(plan, end_step=4, frequency=2))
    joint.compile("adam", "sparse_categorical_crossentropy")
    joint.fit(*_data(64), batch_size=16, verbose=0)
    achieved = tfjoint.inspect.layer_sparsity(joint)
    sizes = tfjoint.inspect.prunable_layers(trained)
    for name, target in plan.items():
        assert achieved[name] == pytest.approx(target, abs=1.01 / sizes[name] + 1e-6), name
    assert tfjoint.inspect.schedule_of(joint).target_sparsity == pytest.approx(dict(plan))


@pytest.mark.parametrize(
    "targets,match",
    [
        ({"nope": 0.5}, "does not have: \\['nope'\\]"),
        ({"wide": 1.0}, "target_sparsity\\['wide'\\]"),
        ({"wide": -0.1}, "target_sparsity\\['wide'\\]"),
    ],
)
def test_bad_per_layer_targets_are_refused_naming_them(trained, targets, match):
    with pytest.raises(tfjoint.ConfigError, match=match):
        tfjoint.prepare(trained, tfjoint.JointSchedule(targets, end_step=10))


def test_a_per_layer_target_on_a_layer_that_cannot_be_pruned_is_refused():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
    with pytest.raises(tfjoint.ConfigError, match="layer 'bn' \\(BatchNormalization\\).*cannot be pruned"):
        tfjoint.prepare(model, tfjoint.JointSchedule({"conv": 0.5, "bn": 0.5}, end_step=10))


def test_bad_allocation_arguments_are_named(trained):
    with pytest.raises(tfjoint.ConfigError, match="`method` must be one of \\['uniform', 'global', 'erk', 'sens"):
        tfjoint.allocate_sparsity(trained, 0.8, method="magic")
    with pytest.raises(tfjoint.ConfigError, match="validation_data=\\(x_val, y_val\\)"):
        tfjoint.allocate_sparsity(trained, 0.8, method="sensitivity")
    x, y = _data(32)
    with pytest.raises(tfjoint.errors.DataError, match="31 labels for 32 samples"):
        tfjoint.allocate_sparsity(trained, 0.8, validation_data=(x, y[:31]))
    with pytest.raises(tfjoint.errors.DataError, match="input 'features' has shape \\(32, 5\\)"):
        tfjoint.allocate_sparsity(trained, 0.8, validation_data=(x[:, :5], y))
    with pytest.raises(tfjoint.ConfigError, match="`target_sparsity` must be in \\[0, 1\\)"):
        tfjoint.allocate_sparsity(trained, 1.2, method="erk")


def test_a_model_with_nothing_to_prune_gets_a_clear_error():
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(inputs)))
    with pytest.raises(tfjoint.ConfigError, match="no layer to plan: tfjoint prunes the weights of Conv1D, Conv2D, "
                                                  "Dense"):
        tfjoint.allocate_sparsity(model, 0.8, method="erk")


def test_an_unreachable_target_relaxes_protection_then_fails(trained):
    plan = tfjoint.allocate_sparsity(trained, 0.97, method="erk", max_sparsity=0.98)
    assert plan.mean_sparsity == pytest.approx(0.97, abs=0.005) and plan.notes  # protection relaxed, said so
    with pytest.raises(tfjoint.ConfigError, match="cannot be reached.*max_sparsity=0.9"):
        tfjoint.allocate_sparsity(trained, 0.95, method="erk", max_sparsity=0.9)
