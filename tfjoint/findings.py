"""`Finding`: a failure or a note, as a typed record (its kind, severity, runtime and figure), never as text to parse.

Every stage that has something to say returns findings; the report renders
them and later stages decide on their `kind` and `severity`.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Iterable

__all__ = ["Kind", "Severity", "Finding", "note", "failure", "largest_first"]


class Severity(enum.Enum):
    NOTE = "note"
    WARNING = "warning"
    FAILURE = "failure"


class Kind(enum.Enum):
    """What a finding is about."""

    # Validation failures (tolerances and budgets).
    ACCURACY_DROP = "accuracy_drop"
    TOTAL_DROP = "total_drop"
    AGREEMENT = "agreement"
    SQNR = "sqnr"
    MSE = "mse"
    BUDGET = "budget"
    LUT_DECODING = "lut_decoding"
    STREAMING_MISMATCH = "streaming_mismatch"
    # What was (not) done.
    NOT_VALIDATED = "not_validated"
    QUANTIZATION_CHOICE = "quantization_choice"
    SOURCE = "source"
    FLOAT_REFERENCE = "float_reference"
    CANDIDATE_SKIPPED = "candidate_skipped"
    REJECTED_FILE = "rejected_file"
    # What the numbers alone would hide.
    DATA_RANGE = "data_range"
    EXACT_MATCH = "exact_match"
    COARSE_OUTPUT = "coarse_output"
    TIES = "ties"
    RUNTIMES_DISAGREE = "runtimes_disagree"
    # The device.
    MEMORY = "memory"
    DEVICE_FIT = "device_fit"
    COMPRESSION = "compression"
    TFLM = "tflm"
    # Advice.
    HEADS_UP = "heads_up"
    SHORTFALL = "shortfall"
    EXPLAIN = "explain"
    LATENCY = "latency"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing a stage found: what kind, how serious, where, which figure against which limit, and the sentence.

    Attributes:
      kind: what it is about (`Kind`).
      text: the sentence the report shows.
      severity: a note, a warning, or a failure (a failure refuses the file).
      runtime: the runtime it was measured in, if any.
      subject: the output, layer, tensor or budget it is about, if any.
      measured: the figure, if any.
      limit: the limit it was checked against, if any.
      excess: how far past its limit, in accuracy points' terms (an accuracy
        drop or agreement shortfall as a fraction, an SQNR shortfall / 100 dB,
        an MSE excess / 10, a budget overrun as a fraction), so reports lead
        with the largest failure.
    """

    kind: Kind
    text: str
    severity: Severity = Severity.NOTE
    runtime: str | None = None
    subject: str | None = None
    measured: float | None = None
    limit: float | None = None
    excess: float = 0.0

    def __str__(self) -> str:
        return self.text

    def __contains__(self, part: str) -> bool:
        """Whether the sentence contains `part` (for reading a report by eye or in a test; decide on `kind`)."""
        return part in self.text

    @property
    def is_failure(self) -> bool:
        return self.severity is Severity.FAILURE

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "severity": self.severity.value, "text": self.text, "runtime": self.runtime,
                "subject": self.subject, "measured": self.measured, "limit": self.limit}


def note(kind: Kind, text: str, **fields) -> Finding:
    return Finding(kind, text, Severity.NOTE, **fields)


def failure(kind: Kind, text: str, **fields) -> Finding:
    return Finding(kind, text, Severity.FAILURE, **fields)


def largest_first(found: Iterable[Finding]) -> list[Finding]:
    """Findings sorted by `excess`, largest first (stable)."""
    return sorted(found, key=lambda finding: -finding.excess)
