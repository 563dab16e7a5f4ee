"""One obvious way (issue 36): a small public surface, one value per setting, the old keywords still working with a
warning for one release, and decisions made on typed values rather than on message text."""

import ast
import dataclasses
import inspect
import os
import re
import warnings

import numpy as np
import pytest
import tf_keras as keras
from conftest import compile_joint, image_data, small_cnn

import tfjoint
from tfjoint.export.export_tflite import _options
from tfjoint.findings import Kind

PACKAGE_DIR = os.path.dirname(tfjoint.__file__)


def test_the_public_surface_is_small():
    assert len(tfjoint.__all__) <= 25
    for name in tfjoint.__all__:
        assert getattr(tfjoint, name) is not None
    assert len(inspect.signature(tfjoint.prepare).parameters) <= 6
    assert len(inspect.signature(tfjoint.export_tflite).parameters) <= 7
    # Readback and registry internals live in documented submodules.
    assert {"pruned_kernels", "training_step", "read_flatbuffer", "TFLMModel"} <= set(tfjoint.inspect.__all__)
    assert "LayerKind" in tfjoint.registry.__all__ and "keras" not in tfjoint.__all__


def test_moved_names_still_work_for_one_release_with_a_warning_naming_the_new_place():
    with pytest.warns(DeprecationWarning, match="tfjoint.pruned_kernels is deprecated.*tfjoint.inspect.pruned_kernels"):
        moved = tfjoint.pruned_kernels
    assert moved is tfjoint.inspect.pruned_kernels
    with pytest.warns(DeprecationWarning, match="tfjoint.keras is deprecated.*import tf_keras as keras"):
        assert tfjoint.keras is keras


def test_preparing_with_the_old_keywords_warns_and_builds_the_same_schedule():
    with pytest.warns(DeprecationWarning, match=r"prepare\(target_sparsity=...\) is deprecated.*JointSchedule"):
        old = tfjoint.prepare(small_cnn(), target_sparsity=0.5, end_step=10, frequency=2, exclude=["fc"],
                              check_conversion=False)
    new = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=10, frequency=2),
                          layers=tfjoint.LayerSelection(exclude=["fc"]), check=False)
    assert old.schedule == new.schedule
    assert [pk.layer_name for pk in tfjoint.inspect.pruned_kernels(old)] == ["conv"]
    with pytest.raises(TypeError, match="unexpected keyword argument.*'sparsity'.*tfjoint.JointSchedule"):
        tfjoint.prepare(small_cnn(), sparsity=0.5)


def test_exporting_with_the_old_keywords_warns_and_sets_the_same_options():
    with pytest.warns(DeprecationWarning) as caught:
        options, _ = _options(None, dict(runtimes=("tflm",), max_accuracy_drop=0.05, measure_latency=True))
    assert options == tfjoint.ExportOptions(runtimes=("tflm",), measure_latency=True,
                                            tolerances=tfjoint.Tolerances(max_accuracy_drop=0.05))
    messages = [str(w.message) for w in caught]
    assert any("export_tflite(max_accuracy_drop=...)" in m and "Tolerances(max_accuracy_drop" in m for m in messages)
    with pytest.raises(TypeError, match="unexpected keyword argument.*'fast'"):
        _options(None, dict(fast=True))


def test_a_target_sparsity_alone_reaches_it_half_way_through_the_first_fit():
    joint = compile_joint(tfjoint.prepare(small_cnn(), 0.5, check=False))
    assert joint.schedule.end_step is None
    x, y = image_data(64)
    joint.fit(x, y, batch_size=8, epochs=2, verbose=0)  # 16 steps: the target at step 8, ~16 updates before
    assert joint.schedule.end_step == 8 and joint.schedule.frequency == 1
    assert tfjoint.inspect.layer_sparsity(joint) == pytest.approx({"conv": 0.5, "fc": 0.5}, abs=0.01)
    config = joint.get_config()["tfjoint_schedule"]  # the model stores the schedule the fit set
    assert config["end_step"] == 8


def test_a_plan_is_a_schedule():
    plan = tfjoint.CompressionPlan(channel_fractions={}, weight_sparsity={"fc": 0.5})
    joint = tfjoint.prepare(small_cnn(), plan, check=False)
    assert joint.schedule.target_sparsity == {"fc": 0.5} and joint.schedule.end_step is None


def test_a_plan_prints_what_it_removes_and_against_which_budget():
    plan = tfjoint.CompressionPlan({"conv1": 0.25, "conv2": 0.0}, {"fc": 0.5}, budget=tfjoint.Budget(macs=1000),
                                   notes=("made by hand",))
    assert str(plan).splitlines() == ["compression plan", f"{'':12}{'budget':>10}{'predicted':>11}{'in TFLM':>10}"
                                      f"{'unpruned':>10}", f"{'macs':12}{1000:>10}{'-':>11}{'-':>10}{'-':>10}",
                                      "channels removed: conv1 25.0%", "weight sparsity: fc 50.0%",
                                      "note: made by hand"]


def test_the_report_is_one_frozen_value():
    fields = {f.name for f in dataclasses.fields(tfjoint.ExportReport)}
    report = tfjoint.ExportReport(tflite_path=None, quantization="qat", size_bytes=1, gzip_size_bytes=1,
                                  fully_int8=True, ops=[], float_ops=[], weight_sparsity=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.passed = True
    assert {"passed", "validated", "headline_runtime", "quantization_decision"} <= fields


def test_findings_are_typed_records():
    finding = tfjoint.findings.failure(Kind.BUDGET, "budget flash_bytes: over", subject="flash_bytes",
                                       measured=2.0, limit=1.0, excess=1.0)
    assert finding.is_failure and str(finding) == "budget flash_bytes: over" and "over" in finding
    assert finding.to_dict()["kind"] == "budget"


_MESSAGE_PARSING = re.compile(r"str\([^)]*\)\.startswith\(|\bin str\(|\.text\.startswith\(|note\.startswith\(")


def test_no_decision_is_made_by_parsing_a_message():
    offences = []
    for path, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                source = open(os.path.join(path, name)).read()
                offences += [f"{name}: {m.group(0)}" for m in _MESSAGE_PARSING.finditer(source)]
    assert not offences


def test_no_module_keeps_live_objects_in_a_global_beside_the_users_model():
    """No WeakKeyDictionary (or dict) keyed by models or layers: what a model carries, it carries itself."""
    offences = []
    for path, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(path, name)).read())
            for node in tree.body:
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and "WeakKeyDictionary" in ast.dump(node):
                    offences.append(name)
    assert not offences


def test_the_one_way_to_register_a_layer_is_its_facets_the_flat_keywords_warn():
    @keras.utils.register_keras_serializable(package="test_api")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    with tfjoint.registry.scoped():
        kind = tfjoint.register_layer(Scale, channels=tfjoint.registry.Channels(rule="follows"),
                                      quantization=tfjoint.registry.Quantization.output_only(), tflite_ops=("MUL",))
        assert kind.channels.rule.name == "follows"
        with pytest.warns(DeprecationWarning, match="register_layer\\(channel_axes=...\\).*Channels\\(axes="):
            tfjoint.register_layer(Scale, channels="follows", channel_axes={"gain": 0})


def test_nothing_in_the_library_warns_about_its_own_deprecated_api(digits_data):
    """The library itself uses only the new form (a user sees no warning they did not cause)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        joint = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=4), check=False)
        compile_joint(joint).fit(*image_data(16), batch_size=8, verbose=0, callbacks=tfjoint.callbacks())
        tfjoint.strip(joint)
    assert np.isfinite(joint.predict(image_data(4)[0], verbose=0)).all()
