"""`Budget` (what the device allows) and `CompressionPlan` (what to remove to fit it).

A microcontroller developer has flash, RAM and time budgets, not sparsity
ratios. `Budget` holds them: the file's bytes (flash: TFLM runs the
flatbuffer in place), the RAM the device must provide (TFLM's tensor arena,
plus the alternate memory DECODE writes LUT-compressed weights into), and
the multiply-accumulates of one inference (time). `tfjoint.plan_for_budget`
turns a budget into a `CompressionPlan` (a fraction of channels kept per
channel group, optionally a weight sparsity per layer), `tfjoint.prepare`
trains it, and `tfjoint.export_tflite(budget=...)` measures the file (the
arena in TFLM itself) and refuses one that misses any budget.

Plain Python: no TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import warnings
from typing import Any, Mapping

from tfjoint import errors
from tfjoint.findings import Finding, Kind, failure
from tfjoint.prune.schedule import check_clusters, checked_scores

__all__ = ["Budget", "CompressionPlan", "BUDGET_FIGURES"]

# Budget field -> the report figure it is checked against.
BUDGET_FIGURES = {"flash_bytes": "flash_bytes", "ram_bytes": "ram_bytes", "macs": "macs"}


def _positive_int_or_none(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise errors.ConfigError(f"`{name}` must be a positive number of {'MACs' if name == 'macs' else 'bytes'}; "
                                 f"received {value!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the device allows one model: any subset of flash, arena (RAM) and MACs (time).

    Example:
      >>> import tfjoint
      >>> budget = tfjoint.Budget(flash_bytes=256 * 1024, ram_bytes=64 * 1024)
      >>> budget.given
      ('flash_bytes', 'ram_bytes')

    Attributes:
      flash_bytes: largest .tflite file (TFLM reads it from flash in place).
      ram_bytes: most RAM the model may take on the device, as TensorFlow
        Lite Micro measures it: the tensor arena (planned activations and its
        persistent structures) plus, for a LUT-compressed file, the alternate
        memory its DECODE operators write weights into (or the one larger
        arena without it, where that is smaller). `arena_bytes=` is the old
        name (deprecated).
      macs: most multiply-accumulates per inference (CONV, DEPTHWISE_CONV,
        FULLY_CONNECTED, TRANSPOSE_CONV), the cost device latency follows.
    """

    flash_bytes: int | None = None
    ram_bytes: int | None = None
    macs: int | None = None
    arena_bytes: dataclasses.InitVar[int | None] = None

    def __post_init__(self, arena_bytes=None):
        if arena_bytes is not None and not isinstance(arena_bytes, property):
            warnings.warn("Budget(arena_bytes=...) is deprecated: it is a RAM budget, Budget(ram_bytes=...), and "
                          "counts the alternate decompression memory too.", DeprecationWarning, stacklevel=3)
            if self.ram_bytes is not None:
                raise errors.ConfigError("give `ram_bytes` or its old name `arena_bytes`, not both.")
            object.__setattr__(self, "ram_bytes", arena_bytes)
        for name in BUDGET_FIGURES:
            object.__setattr__(self, name, _positive_int_or_none(name, getattr(self, name)))
        if not self.given:
            raise errors.ConfigError("a Budget needs at least one of `flash_bytes`, `ram_bytes`, `macs`.")

    @property
    def given(self) -> tuple[str, ...]:
        """The budgets set, in field order."""
        return tuple(name for name in BUDGET_FIGURES if getattr(self, name) is not None)

    def to_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in BUDGET_FIGURES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        data = dict(data)
        if "arena_bytes" in data:  # written before the RAM budget had its name
            data.setdefault("ram_bytes", data.pop("arena_bytes"))
        unknown = sorted(set(data) - set(BUDGET_FIGURES))
        if unknown:
            raise errors.ConfigError(f"unknown Budget fields {unknown}; known: {sorted(BUDGET_FIGURES)}.")
        return cls(**data)

    def misses(self, figures: Mapping[str, int | None]) -> dict[str, int]:
        """The budgets `figures` (by budget name) exceed, with the figure."""
        missed = {}
        for name in self.given:
            figure = figures.get(name)
            if figure is not None and figure > getattr(self, name):
                missed[name] = int(figure)
        return missed

    def check(self, memory: Mapping[str, Any], macs: int) -> tuple[dict[str, dict[str, Any]], list[Finding]]:
        """Each budget against the file's measured figure: the report's `budget` section and the failures.

        Args:
          memory: the report's `memory` (flash_bytes, ram_bytes, ...).
          macs: the file's MACs.
        """
        measured = {"flash_bytes": memory.get("flash_bytes"), "ram_bytes": memory.get("ram_bytes"), "macs": macs}
        where = {"flash_bytes": "the .tflite file's size",
                 "ram_bytes": "TensorFlow Lite Micro on this host: " + str(memory.get("ram_layout") or "the arena"),
                 "macs": "the file's weight operators"}
        section: dict[str, dict[str, Any]] = {}
        failures = []
        for name in self.given:
            limit, figure = getattr(self, name), measured[name]
            if figure is None:
                failures.append(failure(Kind.BUDGET, f"budget {name}={limit}: the figure could not be measured (is "
                                                     "tflite-micro installed and able to run the file?)",
                                        subject=name, limit=float(limit), excess=1.0))
                continue
            margin = (limit - figure) / limit
            section[name] = {"limit": limit, "measured": int(figure), "margin": margin, "measured_by": where[name]}
            if figure > limit:
                failures.append(failure(
                    Kind.BUDGET, f"budget {name}: the file needs {int(figure)}, {int(figure) - limit} "
                                 f"({figure / limit - 1:.1%}) over the limit {limit} (measured by {where[name]})",
                    subject=name, measured=float(figure), limit=float(limit), excess=figure / limit - 1))
        return section, failures


Budget.arena_bytes = property(lambda self: self.ram_bytes,  # type: ignore[attr-defined, assignment]
                              doc="The old name of `ram_bytes` (deprecated).")


@dataclasses.dataclass(frozen=True)
class CompressionPlan:
    """What to remove so a model fits a `Budget`: channels per channel group, and weight sparsity per layer.

    `tfjoint.prepare(model, plan=plan)` trains it in one fit, with QAT.

    Attributes:
      channel_fractions: channel group (named after its first producer
        layer) -> fraction of its channels removed, in [0, 1).
      weight_sparsity: layer -> fraction of its kernel's weights zeroed
        within the kept channels (unstructured; shrinks the download, not
        flash or RAM on TFLM). Empty for channels only.
      clusters: layer -> distinct weight values per table (weight sharing,
        `prepare(clusters=...)`): 4 or 16 where the planner chose 2- or
        4-bit weights as the cheaper way to meet a flash budget; the file
        then ships with `export_tflite(compression="lut")`. Empty: 8 bits.
      channel_scores: channel group -> one measured importance per channel,
        which ranks the group's channels instead of their norms (the highest
        kept). The planner fills it for attention heads: each head's score is
        the validation loss its removal alone costs. Empty: norms rank every
        group.
      budget: the budget it was planned for, if any.
      predicted: the figures the cost model predicts for the int8 file
        (flash_bytes, arena_bytes, macs, and what they are measured on).
      notes: what the planner had to say (budgets met by default, caps).
    """

    channel_fractions: Mapping[str, float]
    weight_sparsity: Mapping[str, float] = dataclasses.field(default_factory=dict)
    clusters: Mapping[str, int] = dataclasses.field(default_factory=dict)
    channel_scores: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    budget: Budget | None = None
    predicted: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        for field in ("channel_fractions", "weight_sparsity"):
            values = dict(getattr(self, field))
            for name, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                    raise errors.ConfigError(f"`{field}['{name}']` must be a fraction in [0, 1); received {value!r}.")
            object.__setattr__(self, field, types.MappingProxyType({k: float(v) for k, v in values.items()}))
        clusters = {name: check_clusters(f"clusters['{name}']", value) for name, value in dict(self.clusters).items()}
        object.__setattr__(self, "clusters", types.MappingProxyType(clusters))
        object.__setattr__(self, "channel_scores", checked_scores(self.channel_scores))
        object.__setattr__(self, "predicted", types.MappingProxyType(dict(self.predicted)))
        object.__setattr__(self, "notes", tuple(self.notes))

    def __str__(self) -> str:
        """What `print(plan)` shows: the budget against the prediction, then what is removed, per group."""
        predicted, full = self.predicted, self.predicted.get("full") or {}
        measured = self.predicted.get("measured_in_tflm") or {}
        strategy = self.predicted.get("strategy") or {}
        lines = ["compression plan" + (f" ({strategy['strategy']}: {strategy['reason']})" if strategy else "")]
        figures = [name for name in ("flash_bytes", "ram_bytes", "macs")
                   if name in predicted or (self.budget is not None and getattr(self.budget, name) is not None)]
        if figures:
            lines.append(f"{'':12}{'budget':>10}{'predicted':>11}{'in TFLM':>10}{'unpruned':>10}")
            for name in figures:
                limit = getattr(self.budget, name) if self.budget is not None else None
                row = [limit, predicted.get(name), measured.get(name), full.get(name)]
                lines.append(f"{name:12}" + "".join(f"{'-' if v is None else int(v):>{w}}"
                                                      for v, w in zip(row, (10, 11, 10, 10))))
        for title, values, form in (("channels removed", self.channel_fractions, "{:.1%}"),
                                    ("weight sparsity", self.weight_sparsity, "{:.1%}"),
                                    ("clusters", self.clusters, "{}")):
            chosen = {name: value for name, value in values.items() if value}
            if chosen:
                lines.append(f"{title}: " + ", ".join(f"{name} {form.format(v)}" for name, v in chosen.items()))
        if self.channel_scores:
            lines.append("ranked by a loss scan (heads): " + ", ".join(self.channel_scores))
        if "accuracy_before_fine_tuning" in predicted:
            before, float_accuracy = predicted["accuracy_before_fine_tuning"], predicted["float_accuracy"]
            lines.append(f"accuracy with that removed, before fine-tuning: {before:.2%} (float {float_accuracy:.2%}); "
                         "the fine-tuning recovers from there")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"channel_fractions": dict(self.channel_fractions), "weight_sparsity": dict(self.weight_sparsity),
                "clusters": dict(self.clusters),
                "channel_scores": {group: list(scores) for group, scores in self.channel_scores.items()},
                "budget": self.budget.to_dict() if self.budget else None,
                "predicted": dict(self.predicted), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionPlan:
        data = dict(data)
        budget = data.pop("budget", None)
        return cls(budget=Budget.from_dict({k: v for k, v in budget.items() if v is not None}) if budget else None,
                   **{k: v for k, v in data.items() if k in ("channel_fractions", "weight_sparsity", "clusters",
                                                              "channel_scores", "predicted", "notes")})
