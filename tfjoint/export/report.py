"""`ExportReport`: what was shipped and what compression cost, as a table and as JSON.

The report is built once, at the end of `export_tflite`, from what its stages
measured; every figure is read back from the flatbuffer or measured by
running it (in LiteRT or TensorFlow Lite Micro), never taken from what the
converter was asked to do. An estimate says it is one.
"""

import dataclasses
import json
import math
from typing import Any

from tfjoint._files import atomic_write_text
from tfjoint.tflite.flatbuffer import FlatbufferSummary

__all__ = ["ExportReport"]


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


def _num(value, fmt="{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


@dataclasses.dataclass
class ExportReport:
    """Every measurement `tfjoint.export_tflite` made, read back from the artifact.

    Accuracy figures are fractions in [0, 1]; None where they could not be
    measured (no labels, no float model, not a classifier). The headline
    figures (`int8_accuracy`, `top1_agreement`, `sqnr_db`, ...) are those of
    the first runtime in `runtimes`; `per_runtime` has each runtime's.
    `keras_accuracy` is the Keras model the file was converted from (the QAT
    model, or for post-training quantization the float model itself).
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
    schedule: dict[str, Any] | None = None
    # How the per-layer plan was made (`SparsityPlan.to_dict()`: method, curves), when the command allocated it.
    allocation: dict[str, Any] | None = None
    # The channel plan a budget asked for (`tfjoint.plan_for_budget`), and each budget against its measured figure.
    plan: dict[str, Any] | None = None
    budget: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    float_size_bytes: int | None = None
    float_gzip_size_bytes: int | None = None
    num_validation_samples: int = 0
    runtimes: list[str] = dataclasses.field(default_factory=list)
    per_runtime: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    float_accuracy: float | None = None
    keras_accuracy: float | None = None
    int8_accuracy: float | None = None
    top1_agreement: float | None = None
    float_top1_agreement: float | None = None
    sqnr_db: float | None = None
    float_sqnr_db: float | None = None
    per_output: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    per_layer_error: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    macs: int | None = None
    latency_ms: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    passed: bool = False
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

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "flatbuffer"}
        data["compression_ratio"] = self.compression_ratio
        data["latency_ratio"] = self.latency_ratio
        return _json_safe(data)

    def save_json(self, path: str) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def _arena_row(self) -> tuple[str, str]:
        memory = self.memory
        if memory.get("tflm_arena_bytes") is not None:
            return ("TFLM arena (measured: head + tail)", f"{_kb(memory['tflm_arena_bytes'])} "
                    f"({_kb(memory.get('tflm_arena_head_bytes'))} + {_kb(memory.get('tflm_arena_tail_bytes'))})")
        return ("TFLM arena head (estimate, no tail)", _kb(memory.get("activation_bytes")))

    def _summary_rows(self) -> list[tuple[str, str]]:
        where = self.runtimes[0] if self.runtimes else "no runtime"
        keras_model = "QAT" if self.quantization == "qat" else "float"
        rows = [
            ("file", self.tflite_path or "(not written)"),
            ("quantization", self.quantization + (f" (of {', '.join(self.quantization_candidates)}; asked "
                                                  f"'{self.quantization_requested}')"
                                                  if len(self.quantization_candidates) > 1 else "")),
            ("fully int8", "yes" if self.fully_int8 else "NO"),
            ("float accuracy", _pct(self.float_accuracy)),
            (f"Keras ({keras_model}) accuracy", _pct(self.keras_accuracy)),
            (f"int8 accuracy ({where})", _pct(self.int8_accuracy)),
        ]
        for runtime in self.runtimes[1:]:
            rows.append((f"int8 accuracy ({runtime})", _pct(self.per_runtime.get(runtime, {}).get("int8_accuracy"))))
        rows += [
            ("top-1 agreement int8 vs Keras", _pct(self.top1_agreement)),
            ("SQNR int8 vs Keras", _num(self.sqnr_db, "{:.1f} dB")),
            ("SQNR int8 vs float model", _num(self.float_sqnr_db, "{:.1f} dB")),
            ("weight sparsity (flatbuffer)", _pct(self.weight_sparsity)),
            ("size int8 (raw / gzip)", f"{_kb(self.size_bytes)} / {_kb(self.gzip_size_bytes)}"),
            ("size float32 (raw / gzip)", f"{_kb(self.float_size_bytes)} / {_kb(self.float_gzip_size_bytes)}"),
            ("compression (gzip, float/int8)", _num(self.compression_ratio, "{:.2f}x")),
            ("MACs", "n/a" if self.macs is None else f"{self.macs / 1e6:.2f} M"),
            ("flash (the file) / weights", f"{_kb(self.memory.get('flash_bytes'))} / "
                                           f"{_kb(self.memory.get('weights_bytes'))}"),
            self._arena_row(),
            ("peak RSS running int8 / float32", f"{_kb(self.memory.get('int8_peak_rss_bytes'))} / "
                                                f"{_kb(self.memory.get('float_peak_rss_bytes'))}"),
            ("latency int8 (1 / 4 threads)", self._latency("int8")),
            ("latency int8, builtin kernels", self._latency("int8_builtin")),
            ("latency float32 (1 / 4 threads)", self._latency("float")),
            ("latency int8 / float32 (1 thread)", _num(self.latency_ratio, "{:.2f}x")),
            ("validation samples", str(self.num_validation_samples)),
            ("passed", "yes" if self.passed else "NO"),
        ]
        return rows

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
            lines += ["", f"{'channels':<24} {'original':>8} {'keras':>8} {'tflite':>8} {'MACs':>10}"]
            for name, entry in removed.items():
                macs = self.per_layer_macs.get(name)
                lines.append(f"{name[:24]:<24} {entry.get('original')!s:>8} {entry.get('keras')!s:>8} "
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
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)
