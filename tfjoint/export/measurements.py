"""Stage 4 of `export_tflite`: what the shipped file needs and does, read back from it.

Memory (flash, weights, the arena measured in TFLM), MACs, latency, the
error each int8 operator adds (`per_layer_error`), the budget figures, and per
layer: the zeros in its int8 weights, its channels and its MACs, all by the
user's layer names. One frozen `Measurements` with its own notes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tfjoint import metrics
from tfjoint._keras import weight_short_name
from tfjoint._names import float_layer_name
from tfjoint.export import explain
from tfjoint.export.compression import DEFAULT_RAM_GROWTH
from tfjoint.export.memory import MemoryFigures, measure_memory, memory_use
from tfjoint.export.options import QAT, ExportOptions
from tfjoint.export.source import Source
from tfjoint.export.validation import CandidateResult
from tfjoint.findings import Finding, Kind, Severity, note
from tfjoint.registry import kind_of, output_channels, pruned_weight_name, unwrapped
from tfjoint.tflite import convert, tflm
from tfjoint.tflite.flatbuffer import FlatbufferSummary, layer_of
from tfjoint.tflite.operators import op_macs
from tfjoint.tflite.runtimes import TFLiteModel
from tfjoint.tflite.streaming import TYPICAL_MCU_FLASH_BYTES, TYPICAL_MCU_RAM_BYTES, unrolled_finding

__all__ = ["Measurements", "measure_shipped", "EXPLAIN_MAX_WEIGHT_OPS"]

EXPLAIN_MAX_WEIGHT_OPS = 200


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What the shipped file needs and does (see the module docstring)."""

    memory: dict
    macs: int
    per_layer_error: list
    latency: dict
    budget: dict
    per_layer_sparsity: dict
    per_layer_channels: dict
    per_layer_macs: dict
    notes: tuple[Finding, ...] = ()
    compression: dict = dataclasses.field(default_factory=dict)


def _kernel_values(layer) -> np.ndarray | None:
    weight_name = pruned_weight_name(layer, prune_depthwise=True)
    for weight in layer.weights:
        if weight_short_name(weight) == weight_name:
            return weight.numpy()
    return None


def _layer_of_unnamed_ops(model, summary: FlatbufferSummary) -> dict[str, str]:
    """Operators whose weights the converter names after nothing (`arith.constant`), tied to the one layer whose
    registry kind becomes that operator, when there is exactly one such layer and one such operator."""
    claims: dict[str, list[str]] = {}
    for layer in model.layers:
        for op in getattr(kind_of(layer), "tflite_ops", ()):
            claims.setdefault(op, []).append(layer.name)
    counts: dict[str, int] = {}
    for op in summary.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    return {op: layers[0] for op, layers in claims.items() if len(layers) == 1 and counts.get(op) == 1}


def per_layer_sparsity(model, summary: FlatbufferSummary, plan: dict[str, float] | None) -> dict[str, dict]:
    """Zeros per pruned layer (only those): planned, in the Keras kernel, and in the flatbuffer's int8 weights.

    Without a plan (a model trained elsewhere), the layers whose kernels hold zeros are listed, planned unknown.
    """
    layers = [layer for layer in model.layers if _kernel_values(layer) is not None]
    tensors = summary.weights_of([layer.name for layer in layers], _layer_of_unnamed_ops(model, summary))
    found = {}
    for layer in layers:
        name = float_layer_name(layer.name)
        kernel = _kernel_values(layer)
        if kernel is None or (plan is not None and not plan.get(name)):  # not pruned, or planned to stay dense
            continue
        if plan is None and not np.any(kernel == 0):
            continue
        weights = tensors.get(layer.name, [])
        size = sum(t.size for t in weights)
        found[name] = {
            "planned": plan.get(name) if plan is not None else None,
            "keras": metrics.zero_fraction(kernel),
            "tflite": sum(t.zeros for t in weights) / size if size else None,
            "tflite_tensors": [t.tensor_name for t in weights],
            "size": int(kernel.size),
        }
    return found


def per_layer_channels(model, summary: FlatbufferSummary, original: dict) -> dict[str, dict[str, Any]]:
    """Output channels (an attention layer's heads: `unit`) per weight layer: before pruning, in the Keras model,
    and in the int8 file (its weight tensor's output channels over the unit's width)."""
    layers = [layer for layer in model.layers if output_channels(layer) is not None]
    tensors = summary.weights_of([layer.name for layer in layers])
    found: dict[str, dict[str, Any]] = {}
    for layer in layers:
        channels = kind_of(layer).channels  # type: ignore[union-attr]  # output_channels says it has a kind
        width = channels.unit_width(unwrapped(layer)) if channels.unit_width is not None else 1
        in_file = tensors[layer.name][0].output_channels if tensors.get(layer.name) else None
        found[float_layer_name(layer.name)] = {
            "original": original.get(float_layer_name(layer.name)), "keras": output_channels(layer),
            "tflite": in_file // width if in_file is not None else None, "unit": channels.unit}
    return found


def per_layer_macs(model, summary: FlatbufferSummary) -> dict[str, int]:
    """MACs of each layer's weight operators in the file (by the user's layer names)."""
    shapes = {t.index: t.shape for t in summary.tensors}
    names = [layer.name for layer in model.layers]
    found: dict[str, int] = {}
    for op in summary.ops:
        macs = op_macs(op.name, [shapes.get(i, ()) for i in op.inputs], shapes.get(op.outputs[0], ()) if op.outputs
                       else ())
        if not macs:
            continue
        weight_tensor = next((t for t in summary.weights if t.op_index == op.index), None)
        layer = layer_of(weight_tensor.tensor_name, names) if weight_tensor is not None else None
        key = float_layer_name(layer) if layer else f"{op.name}#{op.index}"
        found[key] = found.get(key, 0) + macs
    return found


def _originals(source: Source, float_model) -> dict[str, int]:
    """Output channels before pruning: the float model's if given, else what the source recorded, else the file's."""
    found = dict(source.original_channels)
    model = source.qat_model or source.float_model
    for layer in list(float_model.layers if float_model is not None else []) + list(model.layers if model else []):
        channels = output_channels(layer)
        if channels is not None:
            found.setdefault(float_layer_name(layer.name), channels)
    return found


def _latency(shipped: CandidateResult, float_content, float_model) -> dict[str, dict[str, float]]:
    """Median single-sample latency: int8 with XNNPACK (1 and 4 threads) and builtin kernels, float32 likewise."""
    candidate = shipped.candidate
    names = candidate.file_names  # a streaming file: one call (one hop of frames)
    runners = {"int8": TFLiteModel(candidate.content, *names)}
    if float_content is not None:
        runners["float"] = TFLiteModel(float_content, *convert.keras_names(float_model))
    latency = {kind: {str(threads): 1000 * runner.median_latency_s(num_threads=threads) for threads in (1, 4)}
               for kind, runner in runners.items()}
    # On small models XNNPACK's per-call overhead hides the compute: LiteRT's builtin kernels show it.
    builtin = TFLiteModel(candidate.content, *names, kernels="builtin")
    latency["int8_builtin"] = {"1": 1000 * builtin.median_latency_s(num_threads=1)}
    return latency


def _explained(shipped: CandidateResult, source: Source, float_model, inputs,
               explain_layers: bool | None) -> tuple[list, list[Finding]]:
    """`per_layer_error` against the float model (the converted float weights without one), and its notes."""
    summary = shipped.candidate.summary
    if explain_layers is None and len(summary.weights) > EXPLAIN_MAX_WEIGHT_OPS:
        return [], [note(Kind.EXPLAIN, f"per_layer_error was skipped: the file has {len(summary.weights)} weight "
                                       f"operators (more than {EXPLAIN_MAX_WEIGHT_OPS}); pass "
                                       "ExportOptions(explain_layers=True) to compute it anyway")]
    if explain_layers is False:
        return [], []
    candidate = shipped.candidate
    if candidate.stream is not None:
        return [], [note(Kind.EXPLAIN, "per_layer_error is not computed for a streaming file (its tensors hold one "
                                       "call's frames, the Keras layers' the whole sequence); export with "
                                       "streaming=False to see it per layer")]
    qat = candidate.quantization == QAT
    reference = float_model if float_model is not None else (source.pruned_float or source.float_model
                                                             or candidate.keras_model)
    notes = []
    if qat and float_model is None:
        notes.append(note(Kind.EXPLAIN, "per_layer_error compares with the pruned float model (the QAT model's "
                                        "weights without fake quantization): pass float_model to compare every layer "
                                        "with the original float model"))
    return explain.per_layer_error(candidate.content, summary, reference, inputs,
                                   qat_model=candidate.keras_model if qat else None,
                                   pruned_model=source.pruned_float), notes


def _decoding_ram_finding(shipped: CandidateResult, figures, options: ExportOptions) -> Finding | None:
    """Without a RAM budget, a LUT file whose decoding takes the RAM past 1.5x the uncompressed file's: a warning
    with the figures and the budget that would split it."""
    candidate = shipped.candidate
    ram = figures.get("ram_bytes")
    if not candidate.alt_decompression_bytes or options.budget is not None or not ram or not tflm.tflm_available():
        return None
    plain = tflm.measure_arena(candidate.content).total_bytes
    if ram <= DEFAULT_RAM_GROWTH * plain:
        return None
    largest = max(candidate.compressed.compressed, key=lambda table: table.bytes_before, default=None)
    which = f" (the largest: '{largest.layer or largest.tensor}', {largest.bytes_before} bytes)" if largest else ""
    return Finding(Kind.MEMORY, f"LUT decoding takes the RAM from {plain} bytes (the uncompressed file) to {ram} "
                                f"({ram / plain:.1f}x): TFLM rebuilds each compressed tensor whole before its "
                                f"operator{which}. Give a RAM budget (ExportOptions(budget=tfjoint.Budget("
                                "ram_bytes=...)), or --ram_kb) and the export splits the largest tensors into channel "
                                "groups that fit", Severity.WARNING, measured=float(ram), limit=float(plain))


def _too_big_finding(summary: FlatbufferSummary, figures, options: ExportOptions) -> Finding | None:
    """For a microcontroller (TFLM among the runtimes): a warning when the file's flash or RAM exceeds a typical
    board's (1 MB, 256 KB), naming what takes it and what shrinks it."""
    if "tflm" not in options.runtimes:
        return None
    flash, ram = figures.get("flash_bytes") or 0, figures.get("ram_bytes") or 0
    if flash <= TYPICAL_MCU_FLASH_BYTES and ram <= TYPICAL_MCU_RAM_BYTES:
        return None
    weights = sum(t.size for t in summary.weights)
    tail = figures.get("tflm_arena_tail_bytes")
    causes = [f"{len(summary.ops)} operators" + (f" (TFLM keeps {tail // 1024} KB of data for them)" if tail else ""),
              f"{weights // 1024} KB of int8 weights", f"{(figures.get('tflm_arena_head_bytes') or 0) // 1024} KB "
                                                      "of activations at their peak"]
    return Finding(Kind.DEVICE_FIT, f"the file needs {flash // 1024} KB of flash and {ram // 1024} KB of RAM, past a "
                                    f"typical microcontroller's {TYPICAL_MCU_FLASH_BYTES >> 20} MB / "
                                    f"{TYPICAL_MCU_RAM_BYTES >> 10} KB: {', '.join(causes)}. Remove channels "
                                    "(JointSchedule(channel_sparsity=...), or plan them with tfjoint.Budget and "
                                    "plan_for_budget), share weights (clusters with compression='lut'), or use a "
                                    "smaller input", Severity.WARNING, measured=float(max(flash, ram)))


def measure_shipped(shipped: CandidateResult, source: Source, validation_data, float_model, float_content,
                    options: ExportOptions, phases) -> Measurements:
    """Everything the report says about the shipped file beyond its validation."""
    summary, content = shipped.candidate.summary, shipped.candidate.content
    memory: MemoryFigures | None = shipped.memory
    if memory is None or options.measure_latency:  # not measured for the budget, or the RSS is wanted too
        candidate = shipped.candidate
        memory = measure_memory(summary, content, float_content, options.measure_latency, phases,
                                candidate.shipped_content if candidate.compressed is not None else None,
                                candidate.alt_decompression_bytes)
    notes = list(memory.notes)
    fit = unrolled_finding(shipped.candidate.keras_model, memory.figures, options.runtimes) \
        if shipped.candidate.stream is None else None
    fit = fit or _too_big_finding(summary, memory.figures, options)
    notes += [fit] if fit is not None else []
    decoding = _decoding_ram_finding(shipped, memory.figures, options)
    notes += [decoding] if decoding is not None else []
    per_layer_error: list[Any] = []
    if validation_data is not None:
        with phases.run("per-layer error"):
            per_layer_error, explained = _explained(shipped, source, float_model, validation_data[0],
                                                    options.explain_layers)
        notes += explained
    latency = {}
    if options.measure_latency:
        with phases.run("latency"):
            latency = _latency(shipped, float_content, float_model)
    macs = memory_use(summary).macs
    budget = options.budget.check(memory.figures, macs)[0] if options.budget is not None else {}
    model = shipped.candidate.keras_model
    compression = {}
    if shipped.candidate.compressed is not None:
        compression = shipped.candidate.compressed.to_dict()
        compression["tflm_arena_bytes_without_alt_memory"] = memory.figures.get("tflm_arena_bytes_without_alt_memory")
    return Measurements(
        memory=dict(memory.figures), macs=macs, per_layer_error=per_layer_error, latency=latency, budget=budget,
        per_layer_sparsity=per_layer_sparsity(model, summary, source.plan),
        per_layer_channels=per_layer_channels(model, summary, _originals(source, float_model)),
        per_layer_macs=per_layer_macs(model, summary), notes=tuple(notes), compression=compression)

