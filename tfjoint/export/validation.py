"""Stage 3 of `export_tflite`: each candidate file validated in each runtime, budgets checked, one chosen.

Every candidate runs in every runtime asked for (LiteRT, its reference
kernels, TFLM) on the validation data; its outputs are compared with the
Keras model it was converted from (the gate), the pruned float model and the
float model (the report's accuracy steps), and the labels. With a budget,
each candidate's memory is measured (the arena in TFLM) and checked. The
candidate that passes, then scores best in the first runtime, is shipped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from tfjoint import errors
from tfjoint.data import outputs_as_list
from tfjoint.export import validate
from tfjoint.export.candidates import Candidate, Candidates
from tfjoint.export.memory import MemoryFigures, measure_memory, memory_use
from tfjoint.export.options import QAT, ExportOptions
from tfjoint.export.runtime import runtime_model
from tfjoint.tflite import convert
from tfjoint.tflite.flatbuffer import missing_in_tflm

__all__ = ["RuntimeResult", "CandidateResult", "Validation", "validate_candidates"]


@dataclasses.dataclass(frozen=True)
class RuntimeResult:
    """One candidate file in one runtime: per-output comparisons, the failures, and notes."""

    runtime: str
    per_output: Mapping[str, dict]
    failures: tuple[validate.Failure, ...]
    notes: tuple[str, ...] = ()

    @property
    def headline(self) -> dict[str, Any]:
        return validate.headline(self.per_output)

    def to_dict(self) -> dict[str, Any]:
        """The report's `per_runtime[runtime]` entry."""
        return dict(self.headline, per_output=dict(self.per_output), failures=list(self.failures))


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """One candidate file: its results per runtime, and its memory and budget failures when a budget was checked."""

    candidate: Candidate
    runtimes: tuple[RuntimeResult, ...] = ()
    memory: MemoryFigures | None = None
    budget_failures: tuple[validate.Failure, ...] = ()

    @property
    def quantization(self) -> str:
        return self.candidate.quantization

    @property
    def failures(self) -> list[validate.Failure]:
        """Every failure of this file, largest first."""
        return validate.largest_first([f for result in self.runtimes for f in result.failures]
                                      + list(self.budget_failures))

    def in_runtime(self, runtime: str) -> RuntimeResult | None:
        return next((result for result in self.runtimes if result.runtime == runtime), None)

    def summary(self, runtime: str) -> dict[str, Any]:
        """The report's `quantization_candidates` entry: headline figures in `runtime`, failures, per runtime."""
        first = self.in_runtime(runtime)
        headline = first.headline if first is not None else {}
        return {"size_bytes": len(self.candidate.content), "int8_accuracy": headline.get("int8_accuracy"),
                "top1_agreement": headline.get("top1_agreement"), "sqnr_db": headline.get("sqnr_db"),
                "float_sqnr_db": headline.get("float_sqnr_db"), "failures": list(self.failures),
                "per_runtime": {r.runtime: dict(r.headline, failures=list(r.failures)) for r in self.runtimes}}


@dataclasses.dataclass(frozen=True)
class Validation:
    """Every candidate's results, the one shipped, and this stage's notes."""

    results: tuple[CandidateResult, ...]
    shipped: CandidateResult
    validated: bool  # whether validation data was given (else the files were checked for structure only)
    notes: tuple[str, ...] = ()


def _predict(model, inputs, batch_size) -> list[np.ndarray] | None:
    if model is None:
        return None
    return outputs_as_list(model.predict(inputs if len(inputs) > 1 else inputs[0], batch_size=batch_size,
                                         verbose=0))


def _in_runtimes(candidate: Candidate, validation_data, float_out, pruned_out, options: ExportOptions,
                 phases) -> tuple[RuntimeResult, ...]:
    inputs, labels = validation_data
    keras_out = _predict(candidate.keras_model, inputs, options.batch_size)
    names = convert.keras_names(candidate.keras_model)
    per_output_labels = validate.labels_per_output(labels, names[1])
    output_scales = {t.signature_name or t.name: t.scale for t in candidate.summary.outputs}
    results = []
    for runtime in options.runtimes:
        missing = missing_in_tflm(candidate.summary, [layer.name for layer in candidate.keras_model.layers]) \
            if runtime == "tflm" else []
        if missing:
            raise errors.ExportError(f"the int8 file needs {'; '.join(missing)}, which TensorFlow Lite Micro has no "
                                     "kernel for: validate it on LiteRT (runtimes=('litert',)), or replace that "
                                     "layer's activation with one TFLM runs (relu, swish) and fine-tune.")
        compressed = candidate.compressed is not None and runtime == "tflm"
        with phases.run("validation", f"{candidate.quantization} file{' (LUT)' if compressed else ''} in {runtime}"):
            model = runtime_model(runtime, candidate.shipped_content if compressed else candidate.content,
                                  candidate.summary, *names, alt_decompression_bytes=candidate.alt_decompression_bytes)
            int8_out = model.predict(inputs, batch_size=options.batch_size, verbose=options.verbose)
        per_output = validate.compare_outputs(names[1], int8_out, keras_out, float_out, per_output_labels,
                                              pruned_out if candidate.quantization == QAT else None)
        failures = list(validate.failures(per_output, options.tolerances, runtime))
        notes = list(validate.notes_on_outputs(per_output, keras_out, output_scales, float_out is not None))
        if compressed:
            with phases.run("validation", f"{candidate.quantization} file (uncompressed) in {runtime}"):
                uncompressed = runtime_model(runtime, candidate.content, candidate.summary, *names).predict(
                    inputs, batch_size=options.batch_size, verbose=False)
            failures += _decoding_failures(names[1], int8_out, uncompressed)
            notes.append("the LUT-compressed file's outputs in TFLM are identical to the uncompressed int8 file's"
                         if not failures or not any(str(f).startswith("LUT") for f in failures) else
                         "the LUT-compressed file's outputs differ from the uncompressed file's")
        results.append(RuntimeResult(runtime, per_output, tuple(failures), tuple(notes)))
    return tuple(results)


def _decoding_failures(output_names, compressed_out, uncompressed_out) -> list[validate.Failure]:
    """The LUT-compressed file must compute exactly what the int8 file it was made from computes (DECODE only
    rebuilds the same int8 weights): any difference is a wrong decoding, never a tolerance."""
    failures = []
    for name, a, b in zip(output_names, outputs_as_list(compressed_out), outputs_as_list(uncompressed_out)):
        difference = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0
        if difference > 0:
            failures.append(validate.Failure(
                f"LUT: output '{name}' of the compressed file differs from the uncompressed int8 file's in TFLM "
                f"(max |difference| {difference:.4g}): its tables decode to other weights", 1.0))
    return failures


def _budget_check(candidate: Candidate, options: ExportOptions, float_content, phases) -> tuple:
    if options.budget is None:
        return None, ()
    memory = measure_memory(candidate.summary, candidate.content, float_content, False, phases,
                            candidate.shipped_content if candidate.compressed is not None else None,
                            candidate.alt_decompression_bytes)
    section, failures = options.budget.check(memory.figures, memory_use(candidate.summary).macs)
    overruns = {name: entry["measured"] / entry["limit"] - 1 for name, entry in section.items()}
    return memory, tuple(validate.Failure(text, next((overrun for name, overrun in overruns.items()
                                                       if text.startswith(f"budget {name}:")), 1.0))
                         for text in failures)


def _score(result: CandidateResult, runtime: str) -> tuple:
    """Higher is better: passes validation, then accuracy, then (negated) MSE, then SQNR against the float model."""
    first = result.in_runtime(runtime)
    primary = validate.primary_output(first.per_output if first is not None else {})
    sqnr = first.headline.get("float_sqnr_db") if first is not None else None
    return (not result.failures, primary.get("int8_accuracy", 0.0), -primary.get("int8_mse", 0.0),
            sqnr if sqnr is not None else 0.0, result.quantization == QAT)


def _choose(results: list[CandidateResult], runtimes, validated: bool) -> tuple[CandidateResult, list[str]]:
    if len(results) == 1:
        return results[0], []
    if not validated and not any(r.budget_failures for r in results):
        return results[0], ["no validation_data: shipped the quantization-aware file without comparing it with "
                            "post-training quantization"]
    shipped = max(results, key=lambda r: _score(r, runtimes[0]))
    others = [r.quantization for r in results if r is not shipped]
    return shipped, [f"shipped the {shipped.quantization} file: it scored better in {runtimes[0]} than "
                     f"{', '.join(others)} (see quantization_candidates)"]


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
    for candidate in candidates.files:
        runtimes = () if validation_data is None else _in_runtimes(candidate, validation_data, float_out, pruned_out,
                                                                  options, phases)
        memory, budget_failures = _budget_check(candidate, options, float_content, phases)
        results.append(CandidateResult(candidate, runtimes, memory, budget_failures))
    shipped, notes = _choose(results, options.runtimes, validation_data is not None)
    if validation_data is None:
        notes.append("no validation_data: the int8 file was checked for structure only")
    return Validation(tuple(results), shipped, validation_data is not None, tuple(notes))
