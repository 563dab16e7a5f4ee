"""Budgets in, a per-group channel plan out, verified in TFLM.

plan_for_budget -> prepare(plan=...) -> export_tflite(budget=...).
"""

import numpy as np
import pytest
import tf_keras as keras  # noqa: E402

import tfjoint
from tfjoint.plan.cost import ONE_CHANNEL, build_cost_model, measure_plan
from tfjoint.plan.for_budget import channel_groups_of
from tfjoint.prune.schedule import JointSchedule
from tfjoint.tflite.tflm import measure_arena

pytestmark = pytest.mark.slow  # conversions and TFLM


@pytest.fixture(scope="module")
def full_figures(digits_float_model, digits_data):
    """The unpruned digits CNN's int8 figures, as the cost model predicts them."""
    plan = channel_groups_of(digits_float_model)
    return build_cost_model(digits_float_model, plan).full


@pytest.fixture(scope="module")
def planned(digits_float_model, digits_data, full_figures):
    budget = tfjoint.Budget(flash_bytes=int(full_figures["flash_bytes"] * 0.5),
                            ram_bytes=int(full_figures["ram_bytes"] * 0.5))
    plan = tfjoint.plan_for_budget(digits_float_model, budget,
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]))
    return plan


def test_the_cost_model_of_the_unpruned_model_is_the_file(digits_float_model, digits_data, full_figures, tmp_path):
    joint = tfjoint.prepare(digits_float_model, tfjoint.JointSchedule(0.0, end_step=1), check=False)
    joint.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    joint.fit(digits_data["x_train"][:64], digits_data["y_train"][:64], batch_size=32, verbose=0)  # trained values
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(tmp_path / "m.tflite"),
                                   options=tfjoint.ExportOptions(quantization="qat"))
    assert full_figures["flash_bytes"] == pytest.approx(report.size_bytes, abs=64)  # up to the buffers' padding
    assert full_figures["macs"] == report.macs
    assert full_figures["arena_bytes"] == report.memory["tflm_arena_bytes"] == full_figures["ram_bytes"]


def test_a_plan_meets_its_budgets_in_tflm_and_the_report_says_by_how_much(digits_float_model, digits_data, planned,
                                                                        tmp_path):
    assert planned.channel_fractions and set(planned.budget.given) == {"flash_bytes", "ram_bytes"}
    joint = tfjoint.prepare(digits_float_model, tfjoint.JointSchedule.from_plan(planned, end_step=40, frequency=10),
                            check=False)
    assert joint.schedule.channel_sparsity == planned.channel_fractions  # stored with the model, by group
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(digits_data["x_train"], digits_data["y_train"], epochs=2, verbose=0)
    path = tmp_path / "m.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path),
                                   validation_data=(digits_data["x_val"], digits_data["y_val"]),
                                   float_model=digits_float_model,
                                   options=tfjoint.ExportOptions(runtimes=("tflm",), budget=planned.budget))
    content = path.read_bytes()
    assert len(content) <= planned.budget.flash_bytes
    assert measure_arena(content).total_bytes <= planned.budget.ram_bytes  # TFLM itself, on the written file
    for name in ("flash_bytes", "ram_bytes"):
        entry = report.budget[name]
        assert entry["measured"] <= entry["limit"] == getattr(planned.budget, name)
        assert entry["margin"] == pytest.approx((entry["limit"] - entry["measured"]) / entry["limit"])
    # The cost model predicted the file it planned, within a few percent.
    assert planned.predicted["flash_bytes"] == pytest.approx(len(content), rel=0.05)
    assert planned.predicted["arena_bytes"] == pytest.approx(measure_arena(content).total_bytes, rel=0.05)
    assert planned.predicted["macs"] == report.macs
    # Each group kept the planned share of its channels in the file.
    for group, fraction in planned.channel_fractions.items():
        channels = report.per_layer_channels[group]
        assert channels["tflite"] == max(round(channels["original"] * (1 - fraction)), 1)


def test_the_arena_of_a_small_plan_is_the_one_tflm_needs(digits_float_model):
    """At a few channels per group, TFLM's planning memory (not the activations) sets the head: the floor."""
    cost = build_cost_model(digits_float_model, channel_groups_of(digits_float_model), measure_floor=True)
    for fractions in ({group: ONE_CHANNEL for group in cost.groups}, {group: 0.9 for group in cost.groups}):
        predicted, measured = cost.predict(fractions), measure_plan(digits_float_model, fractions)
        assert predicted["arena_bytes"] >= measured["arena_bytes"] * 0.97  # never far under TFLM's own figure
        assert predicted["arena_bytes"] == pytest.approx(measured["arena_bytes"], rel=0.1)
        assert predicted["flash_bytes"] == pytest.approx(measured["flash_bytes"], rel=0.05)
        assert predicted["macs"] == measured["macs"]
    assert cost.head_floor_bytes > cost.predict({group: ONE_CHANNEL for group in cost.groups})["head_bytes"] - 1
    without_floor = build_cost_model(digits_float_model, channel_groups_of(digits_float_model))
    assert without_floor.predict({g: ONE_CHANNEL for g in cost.groups})["head_bytes"] < cost.head_floor_bytes


def test_the_planner_checks_its_plan_in_tflm(planned):
    measured = planned.predicted["measured_in_tflm"]  # the plan's file, built untrained and measured in TFLM
    assert not planned.budget.misses(measured)
    assert set(measured) >= {"flash_bytes", "ram_bytes", "arena_bytes", "macs"}
    # print(plan): each budget beside its prediction, its TFLM measurement and the unpruned model's figure.
    rows = {line.split()[0]: line.split()[1:] for line in str(planned).splitlines()[2:5]}
    for name in ("flash_bytes", "ram_bytes"):
        assert rows[name] == [str(getattr(planned.budget, name)), str(planned.predicted[name]), str(measured[name]),
                              str(planned.predicted["full"][name])], str(planned)
    assert "channels removed: " in str(planned) and "before fine-tuning" in str(planned)


def test_when_every_plan_is_at_chance_untrained_the_one_keeping_most_macs_is_chosen(digits_float_model, digits_data,
                                                                                   full_figures):
    """Labels the model cannot predict put every candidate plan at chance: their losses rank noise."""
    shuffled = np.random.default_rng(0).permutation(digits_data["y_val"])
    budget = tfjoint.Budget(ram_bytes=int(full_figures["ram_bytes"] * 0.6))
    plan = tfjoint.plan_for_budget(digits_float_model, budget, validation_data=(digits_data["x_val"], shuffled))
    chosen = plan.predicted["strategy"]
    assert "most MACs" in chosen["reason"] and len(chosen["macs"]) >= 2
    measured = measure_plan(digits_float_model, plan.channel_fractions)  # the plan's file, read back in TFLM
    assert measured["macs"] == max(chosen["macs"].values()) and not budget.misses(measured)
    assert any("most MACs" in note for note in plan.notes)


def test_a_missed_budget_fails_validation_naming_it_and_writes_nothing(digits_joint, digits_data, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(tfjoint.ValidationError,
                       match=r"budget macs: the file needs \d+, \d+ \(.*%\) over the limit 1000"):
        tfjoint.export_tflite(digits_joint, str(path), validation_data=(digits_data["x_val"], digits_data["y_val"]),
                              options=tfjoint.ExportOptions(budget=tfjoint.Budget(macs=1000)))
    assert not path.exists()


def test_an_unreachable_budget_is_refused_before_training_with_the_smallest_figure(digits_float_model, digits_data):
    with pytest.raises(tfjoint.ConfigError, match=r"`flash_bytes`=1000 is below \d+, the smallest reachable"):
        tfjoint.plan_for_budget(digits_float_model, tfjoint.Budget(flash_bytes=1000),
                                validation_data=(digits_data["x_val"], digits_data["y_val"]))


def test_an_arena_below_tflms_planning_memory_is_refused_before_training(digits_float_model, digits_data,
                                                                         full_figures):
    # 30% of the arena: the activations of a small plan fit, but TFLM's tail and planning memory do not.
    arena = int(full_figures["arena_bytes"] * 0.3)
    with pytest.raises(tfjoint.ConfigError, match=rf"`ram_bytes`={arena} is below \d+, the smallest reachable"):
        tfjoint.plan_for_budget(digits_float_model, tfjoint.Budget(ram_bytes=arena),
                                validation_data=(digits_data["x_val"], digits_data["y_val"]))


@pytest.mark.parametrize("budget,match", [
    (dict(flash_bytes=0), "`flash_bytes` must be a positive number of bytes; received 0"),
    (dict(ram_bytes=-5), "`ram_bytes` must be a positive number of bytes; received -5"),
    (dict(macs="many"), "`macs` must be a positive number of MACs; received 'many'"),
    (dict(), "at least one of `flash_bytes`, `ram_bytes`, `macs`"),
])
def test_bad_budgets_are_refused_naming_the_argument(budget, match):
    with pytest.raises(tfjoint.ConfigError, match=match):
        tfjoint.Budget(**budget)


def test_the_old_budget_keywords_still_plan_with_a_deprecation_warning(digits_float_model, digits_data):
    with pytest.warns(DeprecationWarning, match="plan_for_budget\\(flash_bytes=...\\) is deprecated.*tfjoint.Budget"):
        plan = tfjoint.plan_for_budget(digits_float_model, flash_bytes=10 ** 9,
                                       validation_data=(digits_data["x_val"], digits_data["y_val"]))
    assert plan.budget == tfjoint.Budget(flash_bytes=10 ** 9) and not plan.channel_fractions
    with pytest.raises(tfjoint.ConfigError, match="`budget` must be a tfjoint.Budget.*received str 'small'"):
        tfjoint.plan_for_budget(digits_float_model, "small", validation_data=(digits_data["x_val"],
                                                                              digits_data["y_val"]))


def test_a_plan_for_another_model_names_the_groups_that_do_not_match(digits_float_model):
    plan = tfjoint.CompressionPlan(channel_fractions={"conv1": 0.5, "not_a_layer": 0.5})
    with pytest.raises(tfjoint.ConfigError,
                       match=r"names groups that model 'digits_cnn' does not have: \['not_a_layer'\]"):
        tfjoint.prepare(digits_float_model, plan=plan, end_step=10)


def test_a_per_group_channel_plan_round_trips_in_the_schedule():
    schedule = JointSchedule(target_sparsity=0.5, end_step=10, channel_sparsity={"conv1": 0.25, "fc1": 0.5})
    again = JointSchedule.from_dict(schedule.to_dict())
    assert again == schedule and again.channel_target_for("conv1") == 0.25 and again.channel_target_for("x") == 0.0
    with pytest.raises(tfjoint.ConfigError, match=r"`channel_sparsity\['fc1'\]` must be in \[0, 1\)"):
        JointSchedule(target_sparsity=0.5, end_step=10, channel_sparsity={"fc1": 1.5})


def test_bits_beside_channels_meet_a_flash_budget_in_tflm_with_fewer_channels_removed(digits_float_model, digits_data,
                                                                                      full_figures, tmp_path):
    budget = int(full_figures["flash_bytes"] * 0.3)
    val = (digits_data["x_val"], digits_data["y_val"])
    channels_only = tfjoint.plan_for_budget(digits_float_model, flash_bytes=budget, validation_data=val)
    with_bits = tfjoint.plan_for_budget(digits_float_model, flash_bytes=budget, validation_data=val,
                                        weight_bits=(8, 4, 2))
    assert not channels_only.clusters
    assert with_bits.clusters and set(with_bits.clusters.values()) <= {4, 16}  # 2- or 4-bit kernels chosen
    bits = with_bits.predicted["weight_bits"]
    assert {name: 2 ** b for name, b in bits.items() if b < 8} == dict(with_bits.clusters)  # the plan records them
    measured = with_bits.predicted["measured_in_tflm"]  # the LUT file built and measured in TFLM while planning
    assert measured["flash_bytes"] <= budget and measured["alt_bytes"] > 0
    removed = sum(channels_only.channel_fractions.values())
    assert sum(with_bits.channel_fractions.values()) < removed  # bits freed flash channels would have had to
    assert "compression='lut'" in " ".join(with_bits.notes)

    joint = tfjoint.prepare(digits_float_model, plan=with_bits, end_step=20, frequency=5, check=False)
    joint.compile(keras.optimizers.Adam(5e-4), "sparse_categorical_crossentropy")
    joint.fit(digits_data["x_train"], digits_data["y_train"], epochs=1, verbose=0)
    path = tmp_path / "m.tflite"
    report = tfjoint.export_tflite(tfjoint.strip(joint), str(path), validation_data=val,
                                   options=tfjoint.ExportOptions(runtimes=("tflm",), budget=with_bits.budget,
                                                                 compression="lut"))
    assert len(path.read_bytes()) <= budget == report.budget["flash_bytes"]["limit"]
    by_layer = {t["layer"]: t for t in report.compression["tensors"]}  # read back from the written file
    for layer, clusters in with_bits.clusters.items():
        assert by_layer[layer]["values"] <= clusters
