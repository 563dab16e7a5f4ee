"""How the export compares the int8 outputs with the Keras model's and the labels, by kind of output."""

import numpy as np

import tfjoint
from tfjoint.export import compare


def test_a_multi_label_output_is_judged_per_label_not_by_its_argmax():
    """Independent sigmoids (several labels per sample): a label is right when its probability is on the right side
    of 0.5; two near-equal labels swapping places (which flips argmax) is not a disagreement."""
    keras_out = np.array([[0.90, 0.91, 0.10], [0.20, 0.10, 0.05], [0.70, 0.20, 0.80], [0.10, 0.95, 0.40]])
    int8_out = np.array([[0.91, 0.90, 0.10], [0.20, 0.10, 0.05], [0.71, 0.20, 0.79], [0.10, 0.95, 0.40]])
    labels = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1], [0, 1, 1]])
    entry = compare.compare_outputs(["tags"], [int8_out], [keras_out], None, [labels])["tags"]
    assert entry["multi_label"] and entry["top1_agreement"] == 1.0  # argmax agreement would be 0.5
    assert entry["int8_accuracy"] == entry["keras_accuracy"] == 11 / 12  # one label of twelve wrong: [3, 2]
    flipped = int8_out.copy()
    flipped[0, 0] = 0.3  # one decision of twelve changes
    entry = compare.compare_outputs(["tags"], [flipped], [keras_out], None, [labels])["tags"]
    assert entry["top1_agreement"] == 11 / 12
    found = compare.failures({"tags": entry}, tfjoint.Tolerances())
    assert any("per-label agreement of int8 with its Keras model 0.9167 < min_agreement" in str(f) for f in found)


def test_a_softmax_output_is_judged_by_its_argmax():
    keras_out = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    int8_out = np.array([[0.3, 0.6, 0.1], [0.2, 0.5, 0.3]])
    entry = compare.compare_outputs(["classes"], [int8_out], [keras_out], None, [np.array([0, 1])])["classes"]
    assert not entry["multi_label"] and entry["top1_agreement"] == 0.5
    assert entry["int8_accuracy"] == 0.5 and entry["keras_accuracy"] == 1.0


def test_ties_the_int8_output_cannot_order_are_left_out_of_the_gate_and_real_flips_are_not():
    """A softmax output moves in steps of 1/256: where the Keras model's top two classes are closer than that, the
    int8 file's choice is rounding. An undecided model (outputs near uniform) flips such ties on a third of its
    samples; the gate must not call that a quantization loss, and must still catch a flip of a decided sample."""
    step = 1 / 256
    rng = np.random.default_rng(0)
    keras_out = np.full((100, 3), 1 / 3) + rng.uniform(-0.001, 0.001, (100, 3))  # top two within 0.002 < one step
    keras_out[:60] = [0.7, 0.2, 0.1]  # decided samples
    labels = np.argmax(keras_out, axis=-1)
    int8_out = np.round(keras_out / step) * step
    int8_out[60:] = int8_out[60:, ::-1]  # every tie ordered the other way
    scales = {"classes": step}
    entry = compare.compare_outputs(["classes"], [int8_out], [keras_out], None, [labels], output_scales=scales)
    entry = entry["classes"]
    assert entry["undecided"] == 0.4 and entry["top1_agreement"] == 1.0
    assert entry["keras_accuracy"] == 1.0 and entry["int8_accuracy"] < 0.9  # reported as measured, ties and all
    assert compare.failures({"classes": entry}, tfjoint.Tolerances()) == []
    notes = compare.notes_on_outputs({"classes": entry}, [keras_out], scales, has_float=False)
    assert any(n.kind.value == "ties" and "40%" in str(n) for n in notes)
    # Without the output's step (no tie can be told apart) the same outputs fail, as before.
    plain = compare.compare_outputs(["classes"], [int8_out], [keras_out], None, [labels])["classes"]
    assert "undecided" not in plain and plain["top1_agreement"] < 0.9
    assert {f.kind.value for f in compare.failures({"classes": plain}, tfjoint.Tolerances())} == {
        "agreement", "accuracy_drop"}
    # A decided sample flipped is still a failure, named with what was left out.
    int8_out[:10] = [0.1, 0.7, 0.2]
    entry = compare.compare_outputs(["classes"], [int8_out], [keras_out], None, [labels], output_scales=scales)
    found = compare.failures(entry, tfjoint.Tolerances())
    assert {"agreement", "accuracy_drop"} <= {f.kind.value for f in found}
    assert any("0.8333 (leaving out the 40.0% of predictions the int8 output cannot decide)" in str(f) for f in found)
    assert any(f.kind.value == "accuracy_drop" and abs(f.measured - 0.1) < 1e-9 for f in found)
