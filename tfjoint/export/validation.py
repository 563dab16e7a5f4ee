"""Stage 3 of `export_tflite`: each candidate file validated in each runtime, budgets checked, one chosen.

Every candidate runs in every runtime asked for (LiteRT, its reference
kernels, TFLM) on the validation data; its outputs are compared with the
Keras model it was converted from (the gate), the pruned float model and the
float model (the report's accuracy steps), and the labels. With a budget,
each candidate's memory is measured (the arena and the RAM in TFLM) and
checked.

Which candidate ships (`choose`) is decided on evidence: a candidate that
passes beats one that fails; between two that pass, the one that is more
accurate on the same samples wins only if a paired test says the difference
is not noise (McNemar's exact test on the samples one gets right and the
other wrong, p < 0.05; for real-valued outputs the sign test on which is
closer to the label). Otherwise the smaller file ships, then the
quantization-aware one. The decision and the rule are in the report.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from tfjoint import errors, metrics
from tfjoint.data import outputs_as_list
from tfjoint.export import compare
from tfjoint.export.candidates import Candidate, Candidates
from tfjoint.export.memory import MemoryFigures, measure_memory, memory_use
from tfjoint.export.options import QAT, ExportOptions
from tfjoint.findings import Finding, Kind, failure, largest_first, note
from tfjoint.tflite import convert
from tfjoint.tflite.flatbuffer import missing_in_tflm

__all__ = ["RuntimeResult", "CandidateResult", "Decision", "Validation", "validate_candidates", "choose",
           "SIGNIFICANCE"]

_REDUCED_CHECK_SAMPLES = 64  # samples the reduced file (compression='tflm') is checked on against the converter's

SIGNIFICANCE = 0.05  # a paired difference with a larger p-value is noise


@dataclasses.dataclass(frozen=True)
class RuntimeResult:
    """One candidate file in one runtime: per-output comparisons, the failures, notes, and per-sample outcomes.

    `outcomes` is, for the primary labelled output, per prediction: 1.0 if
    right (a classifier) or minus the squared error (a real-valued output),
    for paired comparisons between candidates; None without labels.
    """

    runtime: str
    per_output: Mapping[str, dict]
    failures: tuple[Finding, ...]
    notes: tuple[Finding, ...] = ()
    outcomes: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def headline(self) -> dict[str, Any]:
        return compare.headline(self.per_output)

    def to_dict(self) -> dict[str, Any]:
        """The report's `per_runtime[runtime]` entry."""
        return dict(self.headline, per_output=dict(self.per_output), failures=[f.to_dict() for f in self.failures])


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """One candidate file: its results per runtime, and its memory and budget failures when a budget was checked."""

    candidate: Candidate
    runtimes: tuple[RuntimeResult, ...] = ()
    memory: MemoryFigures | None = None
    budget_failures: tuple[Finding, ...] = ()

    @property
    def quantization(self) -> str:
        return self.candidate.quantization

    @property
    def failures(self) -> list[Finding]:
        """Every failure of this file, largest first."""
        return largest_first([f for result in self.runtimes for f in result.failures] + list(self.budget_failures))

    def in_runtime(self, runtime: str) -> RuntimeResult | None:
        return next((result for result in self.runtimes if result.runtime == runtime), None)

    @property
    def headline_runtime(self) -> str | None:
        """The runtime the report leads with: the one with the largest failure, else the first asked for."""
        failing = [f.runtime for f in self.failures if f.runtime is not None]
        if failing:
            return failing[0]
        return self.runtimes[0].runtime if self.runtimes else None

    def summary(self, runtime: str) -> dict[str, Any]:
        """The report's `quantization_candidates` entry: headline figures in `runtime`, failures, per runtime."""
        first = self.in_runtime(runtime)
        headline = first.headline if first is not None else {}
        return {"size_bytes": len(self.candidate.shipped_content), "int8_accuracy": headline.get("int8_accuracy"),
                "top1_agreement": headline.get("top1_agreement"), "sqnr_db": headline.get("sqnr_db"),
                "float_sqnr_db": headline.get("float_sqnr_db"), "failures": [f.to_dict() for f in self.failures],
                "per_runtime": {r.runtime: dict(r.headline, failures=[f.to_dict() for f in r.failures])
                                for r in self.runtimes}}


@dataclasses.dataclass(frozen=True)
class Decision:
    """Which candidate shipped and by which rule (the report's `quantization_decision`)."""

    shipped: str
    rule: str
    p_value: float | None = None
    discordant: tuple[int, int] | None = None  # (shipped right, other wrong), (shipped wrong, other right)
    runtime: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Validation:
    """Every candidate's results, the one shipped and why, and this stage's notes."""

    results: tuple[CandidateResult, ...]
    shipped: CandidateResult
    validated: bool  # whether validation data was given (else the files were checked for structure only)
    decision: Decision | None = None
    notes: tuple[Finding, ...] = ()


def _predict(model, inputs, batch_size) -> list[np.ndarray] | None:
    if model is None:
        return None
    return outputs_as_list(model.predict(inputs if len(inputs) > 1 else inputs[0], batch_size=batch_size,
                                         verbose=0))


def _outcomes(per_output: Mapping[str, dict], int8_out, labels) -> np.ndarray | None:
    """Per prediction of the primary labelled output: 1/0 right or wrong (classifier), or -squared error."""
    for index, (name, entry) in enumerate(per_output.items()):
        label = labels[index]
        if label is None:
            continue
        if "int8_accuracy" in entry:
            return metrics.correct_per_sample(int8_out[index], label).astype(np.float64)
        if "int8_mse" in entry:
            error = (np.asarray(int8_out[index], np.float64) - np.asarray(label, np.float64).reshape(
                np.shape(int8_out[index]))) ** 2
            return -error.reshape(error.shape[0], -1).mean(axis=1)
    return None


def _streaming_cost(candidate: Candidate, validation_data, keras_out, options: ExportOptions) -> Finding:
    """What running the model call by call changed, in Keras (before any int8): the streaming Keras model against
    the whole-sequence one. Reported, not gated: causal layers stream exactly; 'valid' ones see zeros before a
    sequence's first frames."""
    inputs, labels = validation_data
    names = convert.keras_names(candidate.keras_model)[1]
    whole = _predict(candidate.keras_model, inputs, options.batch_size)
    assert whole is not None
    per_output = compare.compare_outputs(names, keras_out, whole, None, compare.labels_per_output(labels, names))
    parts = []
    for name, entry in per_output.items():
        figures = [f"SQNR {entry['sqnr_db']:.1f} dB"]
        if "top1_agreement" in entry:
            figures.append(f"top-1 agreement {entry['top1_agreement']:.2%}")
        if "int8_accuracy" in entry:
            figures.append(f"accuracy {entry['keras_accuracy']:.2%} whole -> {entry['int8_accuracy']:.2%} streaming")
        parts.append(f"'{name}': " + ", ".join(figures))
    return note(Kind.STREAMING_MISMATCH, "streaming, in Keras before int8 (the model call by call against the "
                                         "whole sequence): " + "; ".join(parts) + ". The gate compares the int8 "
                                         "file with the streaming Keras model; layers with padding='valid' see "
                                         "zeros before a sequence's first frames (padding='causal' streams exactly)")


def _in_runtimes(candidate: Candidate, validation_data, keras_out, float_out, pruned_out, options: ExportOptions,
                 phases) -> tuple[RuntimeResult, ...]:
    inputs, labels = validation_data
    names = convert.keras_names(candidate.keras_model)
    per_output_labels = compare.labels_per_output(labels, names[1])
    output_scales = {t.signature_name or t.name: t.scale for t in candidate.summary.outputs}
    results = []
    for runtime in options.runtimes:
        missing = missing_in_tflm(candidate.summary, [layer.name for layer in candidate.keras_model.layers]) \
            if runtime == "tflm" else []
        if missing:
            raise errors.ExportError(f"the int8 file needs {'; '.join(missing)}, which TensorFlow Lite Micro has no "
                                     "kernel for: prepare the model for TFLM (tfjoint.prepare(model, schedule, "
                                     "check='tflm') runs GELU as x * sigmoid(1.702 x)), replace that layer's "
                                     "activation with one TFLM runs (relu, swish) and fine-tune, or validate it on "
                                     "LiteRT (runtimes=('litert',)).")
        compressed = candidate.compressed is not None and runtime == "tflm"
        method = candidate.compressed.method if compressed else ""
        label = {"lut": " (LUT)", "tflm": " (reduced for TFLM)"}.get(method, "")
        with phases.run("validation", f"{candidate.quantization} file{label} in {runtime}"):
            model = candidate.runtime_model(runtime, compressed)
            int8_out = model.predict(inputs, batch_size=options.batch_size, verbose=options.verbose)
        per_output = compare.compare_outputs(names[1], int8_out, keras_out, float_out, per_output_labels,
                                             pruned_out if candidate.quantization == QAT else None, output_scales)
        failures = list(compare.failures(per_output, options.tolerances, runtime))
        notes = list(compare.notes_on_outputs(per_output, keras_out, output_scales, float_out is not None))
        if compressed:
            # Every sample for LUT decoding; the reduction drops only what TFLM never reads, so a few samples show
            # a broken file (and a large validation set is not run twice).
            count = None if method == "lut" else _REDUCED_CHECK_SAMPLES
            with phases.run("validation", f"{candidate.quantization} file (uncompressed) in {runtime}"):
                uncompressed = candidate.runtime_model(runtime).predict([x[:count] for x in inputs],
                                                                        batch_size=options.batch_size, verbose=False)
            compressed_out = [out[:count] for out in outputs_as_list(int8_out)]
            decoding = _decoding_failures(names[1], compressed_out, uncompressed, method)
            failures += decoding
            what = "LUT-compressed" if method == "lut" else "reduced"
            on = "" if count is None else f" on the first {min(count, len(inputs[0]))} samples"
            notes.append(note(Kind.COMPRESSION, f"the {what} file's outputs in TFLM are identical to the "
                                                f"uncompressed int8 file's{on}" if not decoding else
                              f"the {what} file's outputs differ from the uncompressed file's{on}", runtime=runtime))
        results.append(RuntimeResult(runtime, per_output, tuple(largest_first(failures)), tuple(notes),
                                     _outcomes(per_output, int8_out, per_output_labels)))
    return tuple(results)


def _decoding_failures(output_names, compressed_out, uncompressed_out, method: str) -> list[Finding]:
    """The file for TFLM must compute exactly what the int8 file it was made from computes (DECODE only rebuilds
    the same int8 weights; the reduction drops only what TFLM never reads): any difference is a wrong file, never a
    tolerance."""
    found = []
    for name, a, b in zip(output_names, outputs_as_list(compressed_out), outputs_as_list(uncompressed_out)):
        difference = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0
        if difference > 0:
            found.append(failure(
                Kind.LUT_DECODING,
                f"{method.upper()}: output '{name}' of the file for TFLM differs from the uncompressed int8 file's "
                f"in TFLM (max |difference| {difference:.4g})" + (": its tables decode to other weights"
                                                                  if method == "lut" else ""), runtime="tflm",
                subject=name, measured=difference, limit=0.0, excess=1.0))
    return found


def _budget_check(candidate: Candidate, options: ExportOptions, float_content, phases) -> tuple:
    if options.budget is None:
        return None, ()
    memory = measure_memory(candidate.summary, candidate.content, float_content, False, phases,
                            candidate.shipped_content if candidate.compressed is not None else None,
                            candidate.alt_decompression_bytes)
    _, failures = options.budget.check(memory.figures, memory_use(candidate.summary).macs)
    return memory, tuple(failures)


def _paired(a: RuntimeResult | None, b: RuntimeResult | None) -> tuple[int, int, float] | None:
    """(a better, b better, p) on the same samples; None without per-sample outcomes for both."""
    if a is None or b is None or a.outcomes is None or b.outcomes is None or a.outcomes.shape != b.outcomes.shape:
        return None
    wins, losses = int(np.sum(a.outcomes > b.outcomes)), int(np.sum(a.outcomes < b.outcomes))
    return wins, losses, metrics.exact_binomial_p(wins, losses)


def choose(results: list[CandidateResult], runtimes: tuple[str, ...]) -> tuple[CandidateResult, Decision]:
    """The candidate to ship, and the rule that decided (see the module docstring)."""
    if len(results) == 1:
        return results[0], Decision(results[0].quantization, "the only candidate")
    passing = [r for r in results if not r.failures]
    if len(passing) == 1:
        return passing[0], Decision(passing[0].quantization, "the only candidate that passes validation")
    pool = passing or results
    runtime = runtimes[0]
    first, second = pool[0], pool[1]  # quantization-aware first
    paired = _paired(first.in_runtime(runtime), second.in_runtime(runtime))
    if paired is not None and paired[2] < SIGNIFICANCE:
        wins, losses, p = paired
        better = first if wins > losses else second
        won = (wins, losses) if better is first else (losses, wins)
        outcomes = np.asarray(first.in_runtime(runtime).outcomes)  # type: ignore[union-attr]  # paired: both known
        kind = "McNemar's exact test" if set(np.unique(outcomes)) <= {0.0, 1.0} else "the sign test on squared errors"
        return better, Decision(better.quantization, f"more accurate on the same samples ({kind}, p < "
                                                     f"{SIGNIFICANCE})", p, won, runtime)
    sizes = {id(r): len(r.candidate.shipped_content) for r in pool}
    smaller = min(pool, key=lambda r: sizes[id(r)])
    p_value = paired[2] if paired is not None else None
    discordant: tuple[int, int] | None = None
    if paired is not None:
        discordant = (paired[0], paired[1]) if smaller is first else (paired[1], paired[0])
    why = ("no paired evidence (no labels)" if paired is None else f"the accuracy difference is noise (p = "
           f"{paired[2]:.2g} >= {SIGNIFICANCE})")
    if sizes[id(first)] != sizes[id(second)]:
        return smaller, Decision(smaller.quantization, f"{why}: the smaller file", p_value, discordant, runtime)
    return first, Decision(first.quantization, f"{why}, equal sizes: the quantization-aware file", p_value,
                           discordant if smaller is first else None, runtime)


def validate_candidates(candidates: Candidates, validation_data, float_model, pruned_float, float_content,
                        options: ExportOptions, phases) -> Validation:
    """Each candidate in each runtime (with `validation_data`), each budget checked; the file to ship chosen.

    Args:
      candidates: the converted files.
      validation_data: `(inputs, labels)` split for the model, or None.
      float_model: the float model to compare with, or None.
      pruned_float: the pruned, fine-tuned float model (a QAT candidate's
        weights without fake quantization), or None.
      float_content: the float32 reference file, for the memory figures.
      options: the export's options (runtimes, tolerances, budget).
    """
    float_out = pruned_out = None
    if validation_data is not None:
        float_out = _predict(float_model, validation_data[0], options.batch_size)
        pruned_out = _predict(pruned_float, validation_data[0], options.batch_size)
    results = []
    notes = []
    for candidate in candidates.files:
        runtimes: tuple[RuntimeResult, ...] = ()
        if validation_data is not None:
            keras_out = candidate.reference_outputs(validation_data[0], options.batch_size)
            if candidate.stream is not None:
                notes.append(_streaming_cost(candidate, validation_data, keras_out, options))
            runtimes = _in_runtimes(candidate, validation_data, keras_out, float_out, pruned_out, options, phases)
        memory, budget_failures = _budget_check(candidate, options, float_content, phases)
        results.append(CandidateResult(candidate, runtimes, memory, budget_failures))
    if validation_data is None:
        shipped = next((r for r in results if not r.failures), results[0])
        decision = Decision(shipped.quantization, "not validated (no validation_data): the quantization-aware file")
        notes.append(note(Kind.NOT_VALIDATED, "no validation_data: the int8 file was checked for structure only (fully "
                                              "int8, converts, runs); nothing says it computes what the Keras model "
                                              "does. Pass validation_data to validate it"))
    else:
        shipped, decision = choose(results, tuple(options.runtimes))
    if len(results) > 1:
        notes.append(note(Kind.QUANTIZATION_CHOICE, f"shipped the {shipped.quantization} file: {decision.rule} (see "
                                                    "quantization_candidates)"))
    return Validation(tuple(results), shipped, validation_data is not None, decision, tuple(notes))
