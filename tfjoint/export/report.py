"""`ExportReport`: what was shipped and what compression cost, as a table and as JSON.

The report is assembled once, at the end of `export_tflite`, from the values
its stages returned (`assemble_report`); every figure is read back from the
flatbuffer or measured by running it (in LiteRT or TensorFlow Lite Micro),
never taken from what the converter was asked to do. An estimate says it is
one; a figure measured on this host, not the device, says so.
"""

import dataclasses
import json
import math
from typing import Any

import numpy as np

from tfjoint import metrics
from tfjoint._files import atomic_write_text
from tfjoint._names import float_layer_name
from tfjoint.export import micro
from tfjoint.export.candidates import Candidates
from tfjoint.export.measurements import Measurements
from tfjoint.export.options import QAT, ExportOptions
from tfjoint.export.source import Source
from tfjoint.export.validation import Validation
from tfjoint.findings import Finding, Kind, Severity, largest_first, note
from tfjoint.registry import kind_of, unwrapped
from tfjoint.registry.transformer import IntegerLayerNorm
from tfjoint.tflite.flatbuffer import FlatbufferSummary

__all__ = ["ExportReport", "assemble_report", "accuracy_steps"]


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _kb(value) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} KB"


def _macs(value) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1e6:.2f} M" if value >= 100_000 else f"{value / 1e3:.1f} K"


def _num(value, fmt="{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """Every measurement `tfjoint.export_tflite` made, read back from the artifact; a frozen value.

    `passed` is True (validated, every tolerance and budget met, the file
    written), False (a failure: nothing written at the path), or None (not
    validated: no validation data, the file checked for structure only).
    `failures` and `notes` are `Finding` records (kind, severity, runtime,
    figure) that render as sentences.

    Accuracy figures are fractions in [0, 1]; None where they could not be
    measured (no labels, no float model, not a classifier). The headline
    figures (`int8_accuracy`, `top1_agreement`, `sqnr_db`, ...) are those of
    `headline_runtime`: the runtime with the largest failure, else the first
    in `runtimes`; `per_runtime` has each runtime's.
    `float_accuracy` is `float_model`'s; `pruned_accuracy` the pruned and
    fine-tuned model's without fake quantization; `keras_accuracy` the Keras
    model the file was converted from (the QAT model, or for post-training
    quantization the pruned float model); `accuracy_steps` says what each
    step from one to the next cost, per runtime.
    """

    tflite_path: str | None
    quantization: str  # what was shipped: "qat" or "post_training"
    size_bytes: int
    gzip_size_bytes: int
    fully_int8: bool
    ops: list[str]
    float_ops: list[dict[str, Any]]
    weight_sparsity: float
    per_layer_sparsity: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    per_layer_channels: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    per_layer_macs: dict[str, int] = dataclasses.field(default_factory=dict)
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    outputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    operator_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    # The MicroMutableOpResolver calls a TensorFlow Lite Micro build needs for this file.
    micro_op_resolver: list[str] = dataclasses.field(default_factory=list)
    # "auto", "qat" or "ptq" as asked; and per candidate file, its headline figures and failures.
    quantization_requested: str = "auto"
    quantization_candidates: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Which candidate shipped and the rule that decided (a paired test, then the smaller file, then QAT).
    quantization_decision: dict[str, Any] = dataclasses.field(default_factory=dict)
    schedule: dict[str, Any] | None = None
    # Each budget against its measured figure.
    budget: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    float_size_bytes: int | None = None
    float_gzip_size_bytes: int | None = None
    num_validation_samples: int = 0
    validated: bool = False
    runtimes: list[str] = dataclasses.field(default_factory=list)
    headline_runtime: str | None = None
    per_runtime: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    float_accuracy: float | None = None
    pruned_accuracy: float | None = None
    keras_accuracy: float | None = None
    int8_accuracy: float | None = None
    accuracy_steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    top1_agreement: float | None = None
    float_top1_agreement: float | None = None
    sqnr_db: float | None = None
    float_sqnr_db: float | None = None
    per_output: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    per_layer_error: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    compression: dict[str, Any] = dataclasses.field(default_factory=dict)
    # A streaming file: frames per call, the state tensors to carry from each call's outputs to the next's inputs
    # (read back from the file: shape, bytes, scale, zero point) and how to reset them. Empty for a whole-sequence
    # file. Its memory, MACs and latency are per call.
    streaming: dict[str, Any] = dataclasses.field(default_factory=dict)
    macs: int | None = None
    latency_ms: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    failures: tuple[Finding, ...] = ()
    notes: tuple[Finding, ...] = ()
    passed: bool | None = None
    # The flatbuffer as read back (int8 weight values included), for plots and
    # tools that need more than the JSON; not serialized.
    flatbuffer: FlatbufferSummary | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def qat_accuracy(self) -> float | None:
        """The QAT Keras model's accuracy (None when the shipped file is post-training quantized)."""
        return self.keras_accuracy if self.quantization == "qat" else None

    @property
    def int8_latency_ms(self) -> float | None:
        """Median single-sample latency of the int8 file in LiteRT, 1 thread (from `latency_ms`)."""
        return self.latency_ms.get("int8", {}).get("1")

    @property
    def float_latency_ms(self) -> float | None:
        """Median single-sample latency of the float32 file in LiteRT, 1 thread (from `latency_ms`)."""
        return self.latency_ms.get("float", {}).get("1")

    @property
    def compression_ratio(self) -> float | None:
        """float32 gzip size / int8 gzip size."""
        if not self.float_gzip_size_bytes:
            return None
        return self.float_gzip_size_bytes / self.gzip_size_bytes

    @property
    def latency_ratio(self) -> float | None:
        """int8 latency / float32 latency (below 1 means int8 is faster)."""
        if self.int8_latency_ms is None or not self.float_latency_ms:
            return None
        return self.int8_latency_ms / self.float_latency_ms

    @property
    def ram_bytes(self) -> int | None:
        """The RAM the device must provide, measured in TFLM (arena, plus DECODE's alternate memory)."""
        return self.memory.get("ram_bytes")

    @property
    def device_memory(self) -> dict[str, int | None]:
        """The memory to give TFLM on the device, laid out as `ram_bytes` was measured: the arena, and DECODE's
        alternate memory (0 where one larger arena is smaller); what `write_c_array` writes to model_data.h."""
        memory = self.memory
        if memory.get("ram_uses_alt_memory") is False:
            return {"arena_bytes": memory.get("tflm_arena_bytes_without_alt_memory"), "alt_decompression_bytes": None}
        return {"arena_bytes": memory.get("tflm_arena_bytes"),
                "alt_decompression_bytes": memory.get("alt_decompression_bytes") or None}

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "flatbuffer"}
        data["failures"] = [f.to_dict() for f in self.failures]
        data["notes"] = [f.to_dict() for f in self.notes]
        data["qat_accuracy"] = self.qat_accuracy
        data["compression_ratio"] = self.compression_ratio
        data["latency_ratio"] = self.latency_ratio
        return _json_safe(data)

    def save_json(self, path: str, run: dict[str, Any] | None = None) -> None:
        """Writes the report as JSON (atomically); `run` adds what the command knows beside it (its plans)."""
        data = self.to_dict() if run is None else dict(self.to_dict(), run=_json_safe(run))
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    @property
    def status(self) -> str:
        """"passed", "FAILED" or "NOT VALIDATED (no validation_data: structure checked only)"."""
        if self.passed is None:
            return "NOT VALIDATED (no validation_data: structure checked only)"
        return "passed" if self.passed else "FAILED"

    def _ram_rows(self) -> list[tuple[str, str]]:
        memory = self.memory
        if memory.get("ram_bytes") is None:
            return [("RAM (TFLM arena head, estimate, no tail)", _kb(memory.get("activation_bytes")))]
        rows = [("RAM the device must provide (TFLM)", f"{_kb(memory['ram_bytes'])}: {memory.get('ram_layout')}")]
        if memory.get("ram_uses_alt_memory"):
            rows.append(("  arena + alternate decompression memory", f"{_kb(memory['tflm_arena_bytes'])} + "
                                                                     f"{_kb(memory.get('alt_decompression_bytes'))}"))
        elif memory.get("tflm_arena_bytes") is not None:
            rows.append(("  arena (head + tail)", f"{_kb(memory['tflm_arena_bytes'])} ("
                                                  f"{_kb(memory.get('tflm_arena_head_bytes'))} + "
                                                  f"{_kb(memory.get('tflm_arena_tail_bytes'))})"))
        return rows

    @property
    def for_microcontroller(self) -> bool:
        """Whether the file was validated for a microcontroller (TFLM the first runtime): host figures go last."""
        return bool(self.runtimes) and self.runtimes[0] == "tflm"

    def _accuracy_rows(self) -> list[tuple[str, str]]:
        where = self.headline_runtime or "no runtime"
        converted = "quantization-aware" if self.quantization == QAT else "pruned float"
        rows = [("float model accuracy", _pct(self.float_accuracy))]
        if self.pruned_accuracy is not None:
            rows.append(("pruned + fine-tuned model accuracy (float)", _pct(self.pruned_accuracy)))
        rows += [(f"Keras model converted ({converted}) accuracy", _pct(self.keras_accuracy)),
                 (f"int8 accuracy ({where})", _pct(self.int8_accuracy))]
        for runtime in (r for r in self.runtimes if r != self.headline_runtime):
            rows.append((f"int8 accuracy ({runtime})", _pct(self.per_runtime.get(runtime, {}).get("int8_accuracy"))))
        return rows + [
            (("per-label" if any(e.get("multi_label") for e in self.per_output.values()) else "top-1")
             + " agreement int8 vs Keras model converted", _pct(self.top1_agreement)),
            ("SQNR int8 vs Keras model converted", _num(self.sqnr_db, "{:.1f} dB")),
            ("SQNR int8 vs float model", _num(self.float_sqnr_db, "{:.1f} dB")),
        ]

    def _host_rows(self, label: str) -> list[tuple[str, str]]:
        return [
            (f"peak RSS running int8 / float32{label}", f"{_kb(self.memory.get('int8_peak_rss_bytes'))} / "
                                                        f"{_kb(self.memory.get('float_peak_rss_bytes'))}"),
            (f"latency int8, LiteRT XNNPACK (1 / 4 threads){label}", self._latency("int8")),
            (f"latency int8, LiteRT builtin kernels{label}", self._latency("int8_builtin")),
            (f"latency float32, LiteRT (1 / 4 threads){label}", self._latency("float")),
            (f"latency int8 / float32 (1 thread){label}", _num(self.latency_ratio, "{:.2f}x")),
        ]

    def _summary_rows(self) -> list[tuple[str, str]]:
        validated_in = ", ".join(self.runtimes) if self.validated else "nowhere (no validation_data)"
        rows = [
            ("status", self.status + (f", in {validated_in}" if self.validated else "")),
            ("file", self.tflite_path or "(not written)"),
            ("quantization", self.quantization + (f" (of {', '.join(self.quantization_candidates)}: "
                                                  f"{self.quantization_decision.get('rule')})"
                                                  if len(self.quantization_candidates) > 1 else "")),
            ("fully int8", "yes" if self.fully_int8 else "NO"),
        ]
        weights = ("int8 weights (uncompressed)" if self.compression else "int8 weights")
        device = [("flash (the .tflite file)", _kb(self.memory.get("flash_bytes")))] + self._ram_rows() + [
            (weights, _kb(self.memory.get("weights_bytes"))),
            ("MACs" + (" per call" if self.streaming else ""), _macs(self.macs))]
        reduction = self.compression.get("reduction") if self.compression else None
        if reduction:
            removed = (f"{reduction['zero_points_removed']} / {_kb(reduction['string_bytes_removed'])} "
                       f"({_kb(reduction['saved_bytes'])} saved)")
            device.insert(1, ("TFLM reduction: zero points / strings removed", removed))
        if self.compression and self.compression["method"] == "tflm":
            device.insert(1, ("reduced for TFLM: flash / int8 file (LiteRT cannot read it)",
                              f"{_kb(self.compression['flash_bytes'])} / "
                              f"{_kb(self.compression['uncompressed_flash_bytes'])}"))
        elif self.compression:
            tensors = self.compression["tensors"]
            device[1:1] = [
                ("LUT compression: flash / uncompressed int8 file", f"{_kb(self.compression['flash_bytes'])} / "
                 f"{_kb(self.compression['uncompressed_flash_bytes'])}"),
                ("tensors compressed / left as they are", f"{len(tensors)} "
                 f"({', '.join(sorted({str(t['bits']) + '-bit' for t in tensors}))}) / "
                 f"{len(self.compression['uncompressed'])}")]
            if self.compression.get("split"):
                device.insert(3, ("split to decode in less RAM", ", ".join(
                    f"'{entry['layer'] or entry['tensor']}' in {entry['groups']} channel groups"
                    for entry in self.compression["split"])))
        if self.streaming:
            states = self.streaming["states"]
            device.insert(0, ("streaming", f"{self.streaming['frames_per_call']} frame(s) per call; "
                                           f"{len(states)} state tensor(s), {sum(t['bytes'] for t in states)} B "
                                           "carried from call to call (MACs and latency per call)"))
        sizes = [("weight sparsity (flatbuffer)", _pct(self.weight_sparsity)),
                 ("size int8 (raw / gzip)", f"{_kb(self.size_bytes)} / {_kb(self.gzip_size_bytes)}"),
                 ("size float32 (raw / gzip)", f"{_kb(self.float_size_bytes)} / {_kb(self.float_gzip_size_bytes)}"),
                 ("compression (gzip, float/int8)", _num(self.compression_ratio, "{:.2f}x"))]
        if self.for_microcontroller:  # what the device needs first; this host's RSS and LiteRT timings last
            rows += device + self._accuracy_rows() + sizes + self._host_rows(" [this host, not the MCU]")
        else:
            rows += self._accuracy_rows() + sizes + device + self._host_rows("")
        return rows + [("validation samples", str(self.num_validation_samples))]

    def _latency(self, kind: str) -> str:
        times = self.latency_ms.get(kind)
        if not times:
            return "n/a"
        return " / ".join(f"{times[t]:.3f} ms" for t in ("1", "4") if t in times)

    def worst_layers(self, count: int = 3) -> list[dict[str, Any]]:
        """The `count` layers whose int8 operators add the most error on their own."""
        return self.per_layer_error[:count]

    def worst_layers_table(self, count: int = 3) -> str:
        """The `count` worst layers of `per_layer_error` as a small table (the command prints it)."""
        def db(value):
            return "n/a" if value is None else f"{value + 0.0:.1f} dB"  # + 0.0: never "-0.0"

        lines = [f"{'worst int8 layers':<24} {'own SQNR':>10} {'per chan.':>10} {'worst ch.':>10} {'vs QAT':>10} "
                 f"{'so far':>10}"]
        for entry in self.worst_layers(count):
            lines.append(f"{entry['layer'][:24]:<24} {db(entry['sqnr_db']):>10} "
                         f"{db(entry.get('mean_channel_sqnr_db')):>10} {db(entry.get('worst_channel_sqnr_db')):>10} "
                         f"{db(entry.get('qat_sqnr_db')):>10} {db(entry.get('cumulative_sqnr_db')):>10}")
        return "\n".join(lines)

    def _io_lines(self) -> list[str]:
        lines = [f"{'tensor':<8} {'name':<28} {'shape':<16} {'dtype':<6} {'scale':>12} {'zero point':>10}"]
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                shape = "x".join(str(d) for d in t["shape"])
                scale = "n/a" if t["scale"] is None else f"{t['scale']:.6g}"
                zero = "n/a" if t["zero_point"] is None else str(t["zero_point"])
                lines.append(f"{kind:<8} {(t['signature_name'] or t['name'])[:28]:<28} {shape:<16} {t['dtype']:<6} "
                             f"{scale:>12} {zero:>10}")
        return lines

    def _output_metric_lines(self) -> list[str]:
        lines = []
        for name, entry in self.per_output.items():
            if "int8_mse" in entry:
                reference = f"float {entry['float_mse']:.4g}, " if "float_mse" in entry else ""
                lines.append(f"output '{name}': MSE int8 {entry['int8_mse']:.4g} ({reference}Keras "
                             f"{entry['keras_mse']:.4g}); MAE int8 {entry['int8_mae']:.4g}")
        return lines

    def _layer_lines(self) -> list[str]:
        lines = []
        if self.per_layer_sparsity:
            lines += ["", f"{'pruned layer':<24} {'planned':>8} {'keras':>8} {'tflite':>8}"]
            for name, entry in self.per_layer_sparsity.items():
                lines.append(f"{name[:24]:<24} {_pct(entry.get('planned')):>8} {_pct(entry.get('keras')):>8} "
                             f"{_pct(entry.get('tflite')):>8}")
        removed = {name: e for name, e in self.per_layer_channels.items()
                   if e.get("original") is not None and e["original"] != e.get("tflite")}
        if removed:
            lines += ["", f"{'channels (heads)':<30} {'original':>8} {'keras':>8} {'tflite':>8} {'MACs':>10}"]
            for name, entry in removed.items():
                macs = self.per_layer_macs.get(name)
                unit = entry.get("unit", "channels")
                label = f"{name[:22]} heads" if unit == "heads" else name[:30]
                lines.append(f"{label:<30} {entry.get('original')!s:>8} {entry.get('keras')!s:>8} "
                             f"{entry.get('tflite')!s:>8} {'n/a' if macs is None else f'{macs / 1e6:.2f}M':>10}")
        return lines

    def _budget_lines(self) -> list[str]:
        if not self.budget:
            return []
        lines = ["", f"{'budget':<12} {'limit':>12} {'measured':>12} {'margin':>10}  where"]
        for name, entry in self.budget.items():
            lines.append(f"{name:<12} {entry['limit']:>12} {entry['measured']:>12} {entry['margin']:>+10.1%}  "
                         f"{entry['measured_by']}")
        return lines

    def __str__(self) -> str:
        rows = self._summary_rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if self.inputs or self.outputs:
            lines += [""] + self._io_lines()
        lines += self._output_metric_lines()
        if self.accuracy_steps:
            lines += ["", "where the accuracy went:"] + [f"  {step['step']:<58} {100 * step['change']:+.2f} points"
                                                         for step in self.accuracy_steps]
        if self.per_layer_error:
            lines += ["", self.worst_layers_table()]
        lines += self._layer_lines()
        lines += self._budget_lines()
        if self.operator_counts:
            lines.append("")
            lines.append("operators: " + ", ".join(f"{op} x{n}" for op, n in sorted(self.operator_counts.items())))
        if self.micro_op_resolver:
            lines.append(f"TFLM MicroMutableOpResolver<{len(self.micro_op_resolver)}>: "
                         + ", ".join(f"{call}()" for call in self.micro_op_resolver))
        if self.stage_seconds:
            lines.append("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds.items()))
        for failure in self.failures:
            lines.append(f"FAILED: {failure}")
        for finding in self.notes:
            lines.append(f"{'WARNING' if finding.severity is Severity.WARNING else 'note'}: {finding}")
        return "\n".join(lines)


def accuracy_steps(headline: dict[str, Any], per_runtime: dict[str, dict[str, Any]], quantization: str) -> list[dict]:
    """What each step from the float model to the int8 file cost (labelled classifier outputs only).

    float model -> pruned and fine-tuned (float) -> quantization-aware (fake quantization) -> int8 in each
    runtime; a step whose two ends are not both measured is left out.
    """
    chain = [("float model", headline.get("float_accuracy")),
             ("pruned + fine-tuned (float)", headline.get("pruned_accuracy") if quantization == QAT else None),
             ("quantization-aware Keras model" if quantization == QAT else "pruned Keras model converted",
              headline.get("keras_accuracy"))]
    known = [(name, value) for name, value in chain if value is not None]
    steps = [{"step": f"{a} -> {b}", "from": a, "to": b, "change": vb - va}
             for (a, va), (b, vb) in zip(known, known[1:])]
    if known:
        last, value = known[-1]
        for runtime, result in per_runtime.items():
            if result.get("int8_accuracy") is not None:
                steps.append({"step": f"{last} -> int8 in {runtime}", "from": last, "to": f"int8 in {runtime}",
                              "change": result["int8_accuracy"] - value})
    return steps


def _heads_up(source: Source, options: ExportOptions) -> list[Finding]:
    notes = []
    model = source.qat_model or source.float_model
    stand_ins = [float_layer_name(layer.name) for layer in (model.layers if model is not None else [])
                 if "micro_stand_in" in getattr(kind_of(layer), "tags", ())]
    if stand_ins:
        notes.append(note(Kind.HEADS_UP, f"{', '.join(stand_ins)} run GELU as x * sigmoid(1.702 x) (MUL, LOGISTIC, "
                                         "MUL), as prepared for TensorFlow Lite Micro (which has no GELU kernel); the "
                                         "model trained with it, so the file computes what it learned"))
    if "tflm" in options.runtimes and source.plan and any(v > 0 for v in source.plan.values()) \
            and options.compression != "lut":
        notes.append(note(Kind.HEADS_UP, "TensorFlow Lite Micro stores weights dense: unstructured zeros shrink the "
                                         "download (gzip), not flash or RAM on a microcontroller; channel_sparsity "
                                         "(or a tfjoint.Budget) removes whole filters, which shrinks both"))
    scanned = sorted(group for group in source.schedule.channel_scores
                     if source.schedule.channel_target_for(group) > 0) if source.schedule is not None else []
    if scanned:
        notes.append(note(Kind.HEADS_UP, f"the heads of {', '.join(repr(name) for name in scanned)} were chosen by a "
                                         "loss scan (the validation loss each one's removal alone cost), not by "
                                         "their weights' magnitude"))
    residual = source.schedule.residual_sparsity if source.schedule is not None else 0.0
    if residual > 0 and model is not None:
        widths = sorted({int(unwrapped(layer).gamma.shape[-1]) for layer in model.layers
                         if isinstance(unwrapped(layer), IntegerLayerNorm) and unwrapped(layer).gamma is not None})
        notes.append(note(Kind.HEADS_UP, f"the residual width was narrowed before the fit (residual_sparsity="
                                         f"{residual:g}): its embeddings, LayerNorms, Adds and every projection "
                                         f"writing or reading it keep {', '.join(map(str, widths)) or 'fewer'} "
                                         "channels, the same ones in each"))
    clusters = source.schedule.clusters if source.schedule is not None else None
    if clusters and options.compression != "lut":
        where = ("LiteRT has no LUT runtime: on a phone, shared weights shrink the download (gzip_size_bytes) and "
                 "nothing else" if "tflm" not in options.runtimes else
                 "the file stores them as dense int8: export with compression='lut' for TFLM's LUT compression, "
                 "which turns them into flash")
        shown = clusters if isinstance(clusters, int) else dict(clusters)
        notes.append(note(Kind.HEADS_UP, f"the weights share values (clusters={shown}): {where}"))
    return notes


def _streaming_section(stream, summary: FlatbufferSummary) -> dict[str, Any]:
    """The report's `streaming` section: the stream's layout, each state as the file has it (read back)."""
    if stream is None:
        return {}
    section = stream.to_dict()
    inputs = {t.signature_name: (position, t) for position, t in enumerate(summary.inputs)}
    outputs = {t.signature_name: (position, t) for position, t in enumerate(summary.outputs)}
    for state in section["states"]:
        (input_position, tensor), (output_position, _) = inputs[state["name"]], outputs[state["output_name"]]
        state.update(input_index=input_position, output_index=output_position, dtype=tensor.dtype,
                     bytes=int(np.prod(state["shape"])) * np.dtype(tensor.dtype).itemsize, scale=tensor.scale,
                     zero_point=tensor.zero_point)
    return section


def assemble_report(source: Source, candidates: Candidates, validation: Validation, measurements: Measurements,
                    options: ExportOptions, float_content: bytes | None, num_samples: int, data_notes,
                    stage_seconds: dict[str, float], tflite_path: str | None,
                    extra_notes: tuple[Finding, ...] = ()) -> "ExportReport":
    """The report, once, from what the stages returned (their notes in stage order), and where the file went."""
    shipped = validation.shipped
    summary = shipped.candidate.summary
    headline_runtime = shipped.headline_runtime
    first = shipped.in_runtime(headline_runtime) if headline_runtime is not None else None
    headline = first.headline if first is not None else {}
    per_runtime = {result.runtime: result.to_dict() for result in shipped.runtimes}
    notes = (list(source.notes) + list(candidates.notes) + list(validation.notes) + list(measurements.notes)
             + [note for result in shipped.runtimes for note in result.notes] + _heads_up(source, options)
             + list(data_notes) + list(extra_notes))
    failures = tuple(largest_first(shipped.failures))
    return ExportReport(
        tflite_path=tflite_path,
        quantization=shipped.quantization,
        quantization_requested=options.quantization,
        quantization_candidates={r.quantization: r.summary(options.runtimes[0]) for r in validation.results},
        quantization_decision=validation.decision.to_dict() if validation.decision is not None else {},
        size_bytes=len(shipped.candidate.shipped_content),
        gzip_size_bytes=metrics.gzip_size(shipped.candidate.shipped_content),
        fully_int8=summary.fully_int8,
        ops=summary.op_names,
        float_ops=[{"op": op.name, "tensors": list(op.float_tensors)} for op in summary.float_ops],
        weight_sparsity=summary.weight_sparsity,
        per_layer_sparsity=measurements.per_layer_sparsity,
        per_layer_channels=measurements.per_layer_channels,
        per_layer_macs=measurements.per_layer_macs,
        inputs=[t.to_dict() for t in summary.inputs],
        outputs=[t.to_dict() for t in summary.outputs],
        operator_counts=summary.operator_counts,
        micro_op_resolver=micro.micro_op_resolver_calls(
            summary.op_names + (["TFLM_DECODE"] if shipped.candidate.compressed is not None else [])),
        schedule=source.schedule.to_dict() if source.schedule is not None else None,
        budget=measurements.budget,
        float_size_bytes=len(float_content) if float_content is not None else None,
        float_gzip_size_bytes=metrics.gzip_size(float_content) if float_content is not None else None,
        num_validation_samples=num_samples,
        validated=validation.validated,
        runtimes=list(options.runtimes) if validation.validated else [],
        headline_runtime=headline_runtime,
        per_runtime=per_runtime,
        float_accuracy=headline.get("float_accuracy"),
        pruned_accuracy=headline.get("pruned_accuracy"),
        keras_accuracy=headline.get("keras_accuracy"),
        int8_accuracy=headline.get("int8_accuracy"),
        accuracy_steps=accuracy_steps(headline, per_runtime, shipped.quantization),
        top1_agreement=headline.get("top1_agreement"),
        float_top1_agreement=headline.get("float_top1_agreement"),
        sqnr_db=headline.get("sqnr_db"),
        float_sqnr_db=headline.get("float_sqnr_db"),
        per_output=dict(first.per_output) if first is not None else {},
        per_layer_error=measurements.per_layer_error,
        memory=measurements.memory,
        compression=measurements.compression,
        streaming=_streaming_section(shipped.candidate.stream, summary),
        macs=measurements.macs,
        latency_ms=measurements.latency,
        stage_seconds={name: round(seconds, 3) for name, seconds in stage_seconds.items()},
        thresholds=options.tolerances.to_dict(),
        failures=failures,
        notes=tuple(dict.fromkeys(notes)),
        passed=(not failures) if validation.validated else (None if not failures else False),
        flatbuffer=summary,
    )
