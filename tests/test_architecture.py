"""What issue 27 asked of the code's shape, as behaviour: one schedule object (open to TF-MOT's protocol), one layer
selection, one options object, and one operator table."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from conftest import compile_joint, image_data, small_cnn

import tfjoint
from tfjoint.tflite import operators


def test_a_tfmot_pruning_schedule_of_the_users_drives_the_masks():
    constant = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, end_step=4, frequency=1)
    joint = tfjoint.prepare(small_cnn(), constant)
    schedule = tfjoint.inspect.schedule_of(joint)
    assert schedule.end_step == 4 and schedule.target_sparsity == pytest.approx(0.5)
    x, y = image_data(32)
    compile_joint(joint).fit(x, y, batch_size=8, epochs=1, verbose=0)  # 4 steps
    assert tfjoint.inspect.layer_sparsity(joint) == pytest.approx({"conv": 0.5, "fc": 0.5}, abs=0.01)
    again = tfjoint.JointSchedule.from_dict(schedule.to_dict())
    assert again.to_dict() == schedule.to_dict() and again.sparsity_at(3) == pytest.approx(0.5)
    with pytest.raises(tfjoint.ConfigError, match="no end_step: pass `end_step`"):
        tfjoint.prepare(small_cnn(), tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    with pytest.warns(DeprecationWarning, match="prepare\\(target_sparsity=...\\) is deprecated"), \
            pytest.raises(tfjoint.ConfigError, match="either a PruningSchedule or `target_sparsity`"):
        tfjoint.prepare(small_cnn(), constant, target_sparsity=0.5)


def test_a_default_value_given_beside_a_ready_schedule_is_refused():
    schedule = tfjoint.JointSchedule(target_sparsity=0.5, end_step=10)
    with pytest.raises(tfjoint.ConfigError, match="either `schedule` or `frequency`, not both"):
        tfjoint.prepare(small_cnn(), schedule=schedule, frequency=100)  # 100 is the default, given explicitly


def test_one_layer_selection_or_its_keywords():
    selection = tfjoint.LayerSelection(exclude=["fc"])
    joint = tfjoint.prepare(small_cnn(), tfjoint.JointSchedule(0.5, end_step=10), layers=selection)
    assert [pk.layer_name for pk in tfjoint.inspect.pruned_kernels(joint)] == ["conv"]
    with pytest.raises(tfjoint.ConfigError, match="either `layers` or `exclude`, not both"):
        tfjoint.prepare(small_cnn(), 0.5, layers=selection, exclude=["conv"])
    with pytest.raises(tfjoint.ConfigError, match="`exclude` must be a list of layer names.*Write \\['fc'\\]"):
        tfjoint.LayerSelection(exclude="fc")


def test_export_options_are_one_checked_value():
    options = tfjoint.ExportOptions(runtimes="tflm", compression="none")
    assert options.runtimes == ("tflm",) and options.replace(batch_size=8).batch_size == 8
    with pytest.raises(tfjoint.ConfigError, match="`quantization` must be one of.*received 'int4'"):
        tfjoint.ExportOptions(quantization="int4")
    with pytest.raises(tfjoint.ConfigError, match="`batch_size` must be an int >= 1; received 0"):
        tfjoint.ExportOptions(batch_size=0)
    with pytest.raises(tfjoint.ConfigError, match="`max_total_drop` must be a fraction in \\[0, 1\\]; received 2"):
        tfjoint.Tolerances(max_total_drop=2)


def test_every_operator_a_registered_kind_becomes_has_a_row_and_tflm_has_it_or_the_registry_says_instead():
    """A registered kind's operators are TFLite's; one TFLM lacks has a stand-in for TFLM (GELU) or is refused."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    for cls, kind in tfjoint.registry.registered_kinds().items():
        for op in kind.tflite_ops:
            assert hasattr(schema.BuiltinOperator, op), (cls.__name__, op)
            if not operators.operator(op).in_tflm:
                assert kind.quantization.micro_substitute is not None or kind.quantization.refused, (cls, op)
    assert operators.operators_missing_in_tflm(["CONV_2D", "GELU", "CONV_2D"]) == ["GELU"]


def test_operator_macs_are_the_closed_form_counts():
    # CONV_2D: every output value takes kh * kw * in_channels MACs; DEPTHWISE_CONV_2D: kh * kw.
    assert operators.op_macs("CONV_2D", [(1, 8, 8, 3), (16, 3, 3, 3)], (1, 8, 8, 16)) == 8 * 8 * 16 * 27
    assert operators.op_macs("DEPTHWISE_CONV_2D", [(1, 8, 8, 4), (1, 3, 3, 4)], (1, 8, 8, 4)) == 8 * 8 * 4 * 9
    assert operators.op_macs("FULLY_CONNECTED", [(2, 10), (5, 10)], (2, 5)) == 2 * 5 * 10
    assert operators.op_macs("BATCH_MATMUL", [(1, 4, 6, 8), (1, 4, 8, 6)], (1, 4, 6, 6)) == 4 * 6 * 6 * 8
    assert operators.op_macs("RESHAPE", [(1, 8), (2,)], (1, 8)) == 0
    assert operators.operator("DEPTHWISE_CONV_2D").output_axis == 3 and operators.operator("CONV_2D").input_axis == 3


@pytest.mark.slow
def test_the_probes_run_as_modules_in_a_child_process(tmp_path):
    from tfjoint.export import memory
    from tfjoint.tflite import tflm

    content = _tiny_file()
    arena = tflm.measure_arena(content)
    assert arena.total_bytes == arena.head_bytes + arena.tail_bytes and arena.tail_bytes > 0
    assert memory.peak_rss_bytes(content) > 1_000_000  # an interpreter process, read from its own VmHWM


def _tiny_file() -> bytes:
    import tf_keras as keras

    from tfjoint.tflite import convert

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="y")(inputs))
    return convert.to_int8(model, [np.random.default_rng(0).random((8, 4), dtype=np.float32)])
