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
