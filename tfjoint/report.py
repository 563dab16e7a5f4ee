"""`ExportReport`: what was shipped and what compression cost, as a table and as JSON."""

import dataclasses
import json
import math
import os
import tempfile
from typing import Any

__all__ = ["ExportReport", "atomic_write_bytes"]


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temp file in the same directory and a rename.

    Readers see either the old file or the whole new one, never a partial write.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclasses.dataclass
class ExportReport:
    """Every measurement `tfjoint.export_tflite` made, read back from the artifact.

    Accuracy figures are fractions in [0, 1]; None where they could not be
    measured (no labels, no float model, not a classifier).
    """

    tflite_path: str | None
    quantization: str  # "qat" or "post_training" (fallback for a float model)
    size_bytes: int
    gzip_size_bytes: int
    fully_int8: bool
    ops: list[str]
    float_ops: list[dict[str, Any]]
    weight_sparsity: float
    per_layer_sparsity: dict[str, dict[str, Any]]
    float_size_bytes: int | None = None
    float_gzip_size_bytes: int | None = None
    num_validation_samples: int = 0
    float_accuracy: float | None = None
    qat_accuracy: float | None = None
    int8_accuracy: float | None = None
    top1_agreement: float | None = None
    float_top1_agreement: float | None = None
    sqnr_db: float | None = None
    float_sqnr_db: float | None = None
    per_output: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    int8_latency_ms: float | None = None
    float_latency_ms: float | None = None
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    passed: bool = False

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
        data = dataclasses.asdict(self)
        data["compression_ratio"] = self.compression_ratio
        data["latency_ratio"] = self.latency_ratio
        return _json_safe(data)

    def save_json(self, path: str) -> None:
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    def __str__(self) -> str:
        def pct(value):
            return "n/a" if value is None else f"{100 * value:.2f}%"

        def kb(value):
            return "n/a" if value is None else f"{value / 1024:.1f} KB"

        def num(value, fmt="{:.2f}"):
            return "n/a" if value is None else fmt.format(value)

        rows = [
            ("file", self.tflite_path or "(not written)"),
            ("quantization", self.quantization),
            ("fully int8", "yes" if self.fully_int8 else "NO"),
            ("float accuracy", pct(self.float_accuracy)),
            ("int8 accuracy (LiteRT)", pct(self.int8_accuracy)),
            ("top-1 agreement int8 vs Keras", pct(self.top1_agreement)),
            ("SQNR int8 vs Keras", num(self.sqnr_db, "{:.1f} dB")),
            ("weight sparsity (flatbuffer)", pct(self.weight_sparsity)),
            ("size int8 (raw / gzip)", f"{kb(self.size_bytes)} / {kb(self.gzip_size_bytes)}"),
            ("size float32 (raw / gzip)", f"{kb(self.float_size_bytes)} / {kb(self.float_gzip_size_bytes)}"),
            ("compression (gzip, float/int8)", num(self.compression_ratio, "{:.2f}x")),
            ("latency int8 / float32 (1 thread)", num(self.latency_ratio, "{:.2f}x")),
            ("validation samples", str(self.num_validation_samples)),
            ("passed", "yes" if self.passed else "NO"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if self.per_layer_sparsity:
            lines.append("")
            lines.append(f"{'pruned layer':<24} {'keras':>8} {'tflite':>8}")
            for name, entry in self.per_layer_sparsity.items():
                lines.append(f"{name:<24} {pct(entry.get('keras')):>8} {pct(entry.get('tflite')):>8}")
        for failure in self.failures:
            lines.append(f"FAILED: {failure}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)
