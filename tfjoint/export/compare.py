"""The comparisons of the int8 file's outputs that the `Tolerances` apply to, and the failures they find.

For every output, the dequantized int8 outputs (run in LiteRT or TFLM) are
compared with the Keras model they were converted from (what quantization
did: the default gate), with the pruned and fine-tuned float model (what
fake quantization did) and with the float model (what compression cost in
all, gated only with `max_total_drop`), and with the labels when given:
accuracy for classifier outputs, MSE and MAE for real-valued ones.
"""

import math
from typing import Any

import numpy as np

from tfjoint import errors, metrics
from tfjoint._names import float_layer_name
from tfjoint.export.options import Tolerances
from tfjoint.findings import Finding, Kind, failure, largest_first, note

__all__ = ["labels_per_output", "compare_outputs", "failures", "notes_on_outputs", "primary_output",
           "input_range_notes", "headline", "largest_first"]

# Differences this small are rounding, not a violation: 0.9260 - 0.9060 = 0.020000000000000018 meets 0.02.
_SLACK = 1e-9
_NOTED_TIES = 0.01  # a share of undecided predictions worth a note


def labels_per_output(labels, output_names) -> list:
    """One label array (or None) per output, from an array, a list or a dict by output name."""
    if labels is None:
        return [None] * len(output_names)
    if isinstance(labels, dict):
        # By output name, or by the user's layer name (a prepared model's outputs are 'quant_<name>').
        by_name = {float_layer_name(name): name for name in output_names} | {name: name for name in output_names}
        unknown = sorted(set(labels) - set(by_name))
        if unknown:
            raise errors.DataError(
                f"`validation_data`: labels for outputs {unknown} that the model does not have; its outputs are "
                f"{sorted({float_layer_name(name) for name in output_names})}."
            )
        named = {by_name[key]: value for key, value in labels.items()}
        return [named.get(name) for name in output_names]
    if isinstance(labels, list):
        if len(labels) != len(output_names):
            raise errors.DataError(
                f"`validation_data`: {len(labels)} label arrays for {len(output_names)} outputs {list(output_names)}; "
                "give one array (or None) per output."
            )
        return labels
    if len(output_names) > 1:
        raise errors.DataError(
            f"`validation_data`: the model has {len(output_names)} outputs {list(output_names)}; give labels as a list "
            "with one array (or None) per output."
        )
    return [labels]


def _is_binary(outputs: np.ndarray, labels: np.ndarray) -> bool:
    """A one-unit probability output with 0/1 labels."""
    return bool(
        outputs.ndim == 2 and outputs.shape[1] == 1 and np.all((labels == 0) | (labels == 1))
        and float(np.min(outputs)) >= 0.0 and float(np.max(outputs)) <= 1.0
    )


def _regression_metrics(entry, prefix, outputs, labels) -> None:
    labels = np.asarray(labels, np.float64).reshape(outputs.shape)
    entry[f"{prefix}_mse"] = metrics.mse(outputs, labels)
    entry[f"{prefix}_mae"] = metrics.mae(outputs, labels)


def compare_outputs(output_names, int8_out, keras_out, float_out, labels, pruned_out=None,
                    output_scales: dict[str, float | None] | None = None) -> dict[str, dict[str, Any]]:
    """Per output: fidelity against Keras and the float model, and metrics against the labels.

    `pruned_out`: the pruned and fine-tuned float model's outputs (no fake
    quantization), for the accuracy steps of the report.
    `output_scales`: each int8 output's step. A prediction whose Keras top
    two classes lie within one step of each other is a tie the int8 output
    cannot order (`metrics.decided_predictions`): the agreement and the
    accuracy drop the gate checks leave those out (`undecided` is their
    share), so rounding a tie is not taken for what quantization cost.
    """
    per_output = {}
    for i, name in enumerate(output_names):
        entry: dict[str, Any] = {
            "sqnr_db": metrics.sqnr_db(keras_out[i], int8_out[i]),
            "cosine_similarity": metrics.cosine_similarity(keras_out[i], int8_out[i]),
            "max_abs_error": metrics.max_abs_error(keras_out[i], int8_out[i]),
        }
        classifier = metrics.is_classifier_output(int8_out[i])
        entry["classifier"] = classifier
        entry["multi_label"] = metrics.is_multi_label_output(keras_out[i])  # agreement and accuracy per label
        step = (output_scales or {}).get(name)
        decided = metrics.decided_predictions(keras_out[i], step) if step else None
        if decided is not None and not decided.all():
            entry["undecided"] = float(1.0 - np.mean(decided))
        if classifier:
            entry["top1_agreement"] = metrics.top1_agreement(keras_out[i], int8_out[i], decided)
        if float_out is not None:
            entry["float_sqnr_db"] = metrics.sqnr_db(float_out[i], int8_out[i])
            entry["float_max_abs_error"] = metrics.max_abs_error(float_out[i], int8_out[i])
            if classifier:
                entry["float_top1_agreement"] = metrics.top1_agreement(float_out[i], int8_out[i])
        label = labels[i]
        if label is not None:
            label = np.asarray(label)
            if classifier or _is_binary(keras_out[i], label):
                entry["int8_accuracy"] = metrics.accuracy(int8_out[i], label)
                entry["keras_accuracy"] = metrics.accuracy(keras_out[i], label)
                if "undecided" in entry:
                    entry["decided_accuracy_drop"] = _decided_drop(keras_out[i], int8_out[i], label, decided)
                if float_out is not None:
                    entry["float_accuracy"] = metrics.accuracy(float_out[i], label)
                if pruned_out is not None:
                    entry["pruned_accuracy"] = metrics.accuracy(pruned_out[i], label)
            elif label.size == int8_out[i].size:
                _regression_metrics(entry, "int8", int8_out[i], label)
                _regression_metrics(entry, "keras", keras_out[i], label)
                if float_out is not None:
                    _regression_metrics(entry, "float", float_out[i], label)
                entry["mse_increase"] = metrics.relative_increase(entry["int8_mse"], entry["keras_mse"])
        per_output[name] = entry
    return per_output


def _decided_drop(keras_out, int8_out, label, decided) -> float:
    """The accuracy (a fraction of every prediction) the int8 output loses on the predictions it can decide."""
    keras_correct = metrics.correct_per_sample(keras_out, label).astype(np.float64)
    int8_correct = metrics.correct_per_sample(int8_out, label).astype(np.float64)
    if keras_correct.shape != decided.shape:
        return float(np.mean(keras_correct) - np.mean(int8_correct))
    return float(np.mean((keras_correct - int8_correct) * decided))


def _ties(entry) -> str:
    """What the gate left out of an output's agreement and accuracy drop, for a failure's sentence."""
    if not entry.get("undecided"):
        return ""
    return f" (leaving out the {entry['undecided']:.1%} of predictions the int8 output cannot decide)"


def _agreement(entry) -> str:
    return "per-label agreement" if entry.get("multi_label") else "top-1 agreement"


def failures(per_output, tolerances: Tolerances, runtime: str | None = None) -> list[Finding]:
    """Every tolerance an output violates, as a sentence naming the runtime, the output, the value and the limit.

    Largest first (see `Finding.excess`). Values within 1e-9 of a limit meet it
    (floating-point rounding is not a violation).
    """
    found = []
    where = f"in {runtime}: " if runtime else ""
    for name, entry in per_output.items():
        if "int8_accuracy" in entry and "keras_accuracy" in entry:
            drop = entry.get("decided_accuracy_drop", entry["keras_accuracy"] - entry["int8_accuracy"])
            if drop > tolerances.max_accuracy_drop + _SLACK:
                found.append(failure(
                    Kind.ACCURACY_DROP,
                    f"{where}output '{name}': int8 accuracy {entry['int8_accuracy']:.4f} is {drop:.4f} below the Keras "
                    f"model it was converted from ({entry['keras_accuracy']:.4f}){_ties(entry)} > max_accuracy_drop "
                    f"{tolerances.max_accuracy_drop}", runtime=runtime, subject=name, measured=drop,
                    limit=tolerances.max_accuracy_drop, excess=drop))
        if tolerances.max_total_drop is not None and "float_accuracy" in entry:
            drop = entry["float_accuracy"] - entry["int8_accuracy"]
            if drop > tolerances.max_total_drop + _SLACK:
                found.append(failure(
                    Kind.TOTAL_DROP,
                    f"{where}output '{name}': int8 accuracy {entry['int8_accuracy']:.4f} is {drop:.4f} below the float "
                    f"model's {entry['float_accuracy']:.4f} > max_total_drop {tolerances.max_total_drop}",
                    runtime=runtime, subject=name, measured=drop, limit=tolerances.max_total_drop, excess=drop))
        if "top1_agreement" in entry and entry["top1_agreement"] < tolerances.min_agreement - _SLACK:
            found.append(failure(
                Kind.AGREEMENT,
                f"{where}output '{name}': {_agreement(entry)} of int8 with its Keras model "
                f"{entry['top1_agreement']:.4f}{_ties(entry)} < min_agreement {tolerances.min_agreement}",
                runtime=runtime,
                subject=name, measured=entry["top1_agreement"], limit=tolerances.min_agreement,
                excess=tolerances.min_agreement - entry["top1_agreement"]))
        if entry["sqnr_db"] < tolerances.min_sqnr_db - _SLACK:
            found.append(failure(Kind.SQNR, f"{where}output '{name}': SQNR {entry['sqnr_db']:.2f} dB < min_sqnr_db "
                                            f"{tolerances.min_sqnr_db}", runtime=runtime, subject=name,
                                 measured=entry["sqnr_db"], limit=tolerances.min_sqnr_db,
                                 excess=(tolerances.min_sqnr_db - entry["sqnr_db"]) / 100))
        if "mse_increase" in entry and entry["mse_increase"] > tolerances.max_mse_increase + _SLACK:
            found.append(failure(
                Kind.MSE,
                f"{where}output '{name}': int8 MSE {entry['int8_mse']:.6g} is {entry['mse_increase']:.0%} above the "
                f"Keras model's {entry['keras_mse']:.6g} > max_mse_increase {tolerances.max_mse_increase} "
                f"({tolerances.max_mse_increase:.0%})", runtime=runtime, subject=name, measured=entry["mse_increase"],
                limit=tolerances.max_mse_increase,
                excess=min(entry["mse_increase"] - tolerances.max_mse_increase, 1e3) / 10))
    return largest_first(found)


def notes_on_outputs(per_output, keras_out, output_scales: dict[str, float | None], has_float: bool) -> list[Finding]:
    """What the numbers alone would hide: an exact match that proves little, and a coarse output grid."""
    notes = []
    for i, (name, entry) in enumerate(per_output.items()):
        if math.isinf(entry["sqnr_db"]) and not has_float:
            notes.append(note(
                Kind.EXACT_MATCH,
                f"output '{name}': the int8 file reproduces its Keras model exactly (SQNR inf), which says the "
                "conversion is faithful, not that quantization is harmless: that Keras model is as coarse as the "
                "int8 one. Pass float_model= (and labels) to measure what quantization cost.", subject=name))
        scale = output_scales.get(name)
        if entry.get("undecided", 0.0) >= _NOTED_TIES:
            notes.append(note(
                Kind.TIES,
                f"output '{name}': on {entry['undecided']:.0%} of the validation predictions the Keras model's top "
                f"two are closer than one step of the int8 output ({scale:.4g}): the file cannot order them, so its "
                "choice there is rounding. The agreement and accuracy-drop gates count the other predictions; the "
                "accuracies shown count all of them. A model this undecided may need more training.",
                subject=name, measured=entry["undecided"]))
        values = np.asarray(keras_out[i], np.float64)
        if scale and values.size and not entry["classifier"]:  # probabilities move in 1/256 steps by design
            low, high = np.percentile(values, [1, 99])
            steps = (high - low) / scale
            if steps < 64:
                notes.append(note(
                    Kind.COARSE_OUTPUT,
                    f"output '{name}': the int8 output moves in steps of {scale:.4g}, only {steps:.0f} steps across "
                    f"the 1st-99th percentile range of its values on the validation data ({low:.4g} .. {high:.4g}); "
                    "small differences are lost. Scale the targets to a wider range (e.g. standardize them) "
                    "or keep this output in float.", subject=name, measured=float(steps)))
    return notes


def input_range_notes(inputs: list[np.ndarray], io_tensors, argument: str) -> list[Finding]:
    """Notes for data whose values the int8 input cannot represent (0-255 pixels into a model trained on 0-1).

    The int8 input clips everything outside `float_range`; a few outliers are
    normal, a large share means the data is not preprocessed as the model
    was trained.
    """
    notes = []
    for array, tensor in zip(inputs, io_tensors):
        float_range = tensor.float_range
        if float_range is None or not array.size:
            continue
        low, high = float_range
        margin = (tensor.scale or 0.0) / 2
        outside = float(np.mean((array < low - margin) | (array > high + margin)))
        if outside > 0.01:
            name = tensor.signature_name or tensor.name
            notes.append(note(
                Kind.DATA_RANGE,
                f"`{argument}`: {outside:.0%} of input '{name}''s values lie outside [{low:.4g}, {high:.4g}], the "
                f"range its int8 input can represent (the data spans [{float(array.min()):.4g}, "
                f"{float(array.max()):.4g}]); they are clipped. Preprocess the data as for training (e.g. scale pixels "
                "to the model's range) before validating, calibrating or deploying.", subject=argument,
                measured=outside))
    return notes


def headline(per_output) -> dict[str, Any]:
    """The report's headline figures from one runtime's outputs: the primary output's, the worst agreement/SQNR."""
    primary = primary_output(per_output)
    agreements = [e["top1_agreement"] for e in per_output.values() if "top1_agreement" in e]
    float_agreements = [e["float_top1_agreement"] for e in per_output.values() if "float_top1_agreement" in e]
    float_sqnrs = [e["float_sqnr_db"] for e in per_output.values() if "float_sqnr_db" in e]
    return {
        "float_accuracy": primary.get("float_accuracy"),
        "pruned_accuracy": primary.get("pruned_accuracy"),
        "keras_accuracy": primary.get("keras_accuracy"),
        "int8_accuracy": primary.get("int8_accuracy"),
        "top1_agreement": min(agreements) if agreements else None,
        "float_top1_agreement": min(float_agreements) if float_agreements else None,
        "sqnr_db": min(e["sqnr_db"] for e in per_output.values()) if per_output else None,
        "float_sqnr_db": min(float_sqnrs) if float_sqnrs else None,
    }


def primary_output(per_output) -> dict[str, Any]:
    """The entry the report's headline figures come from: labelled classifier, else classifier, else first."""
    for predicate in (lambda e: "int8_accuracy" in e, lambda e: e["classifier"], lambda e: "int8_mse" in e,
                      lambda e: True):
        for entry in per_output.values():
            if predicate(entry):
                return entry
    return {}
