"""Plain numpy measurements: sparsity, sizes, output fidelity. No TensorFlow here."""

import gzip
import math

import numpy as np

__all__ = [
    "zero_fraction",
    "gzip_size",
    "sqnr_db",
    "cosine_similarity",
    "max_abs_error",
    "top1_agreement",
    "decided_predictions",
    "accuracy",
    "entropy_bound_bytes",
    "is_classifier_output",
    "mse",
    "mae",
    "relative_increase",
    "correct_per_sample",
    "exact_binomial_p",
]


def zero_fraction(values: np.ndarray) -> float:
    """Fraction of exact zeros in `values` (0.0 for an empty array)."""
    values = np.asarray(values)
    return float(np.count_nonzero(values == 0) / values.size) if values.size else 0.0


def gzip_size(data: bytes) -> int:
    """Bytes after gzip at maximum compression: what an app download really costs."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `test` against `reference`, in dB.

    `inf` when the two are equal; `-inf` when the reference is all zeros but
    the test is not.
    """
    reference = np.asarray(reference, dtype=np.float64)
    return power_ratio_db(np.sum(reference**2), np.sum((reference - np.asarray(test, dtype=np.float64)) ** 2))


def power_ratio_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise): `inf` without noise, `-inf` for noise without signal."""
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return float(10.0 * np.log10(signal / noise))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays (1.0 if both are all zeros)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norms)


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def is_classifier_output(outputs: np.ndarray) -> bool:
    """True for (batch, classes) outputs with at least 2 classes."""
    return outputs.ndim == 2 and outputs.shape[1] >= 2


def is_multi_label_output(outputs: np.ndarray) -> bool:
    """True for (batch, classes) probabilities that do not sum to one per row: independent sigmoids, one decision
    per label (multi-label), which argmax misreads."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim != 2 or outputs.shape[1] < 2 or outputs.size == 0:
        return False
    if float(outputs.min()) < 0.0 or float(outputs.max()) > 1.0:
        return False
    return bool(np.median(np.abs(outputs.sum(axis=1) - 1.0)) > 0.05)


def top1_agreement(a: np.ndarray, b: np.ndarray, decided: np.ndarray | None = None) -> float:
    """Fraction of rows whose argmax is the same in `a` and `b`; for multi-label outputs
    (`is_multi_label_output(a)`), the fraction of labels decided the same way (probability > 0.5).

    `decided` (from `decided_predictions(a, step)`): count only those rows (labels); 1.0 if there are none.
    """
    if is_multi_label_output(a):
        same = ((np.asarray(a) > 0.5) == (np.asarray(b) > 0.5)).reshape(-1)
    else:
        same = (np.argmax(a, axis=-1) == np.argmax(b, axis=-1)).reshape(-1)
    if decided is not None:
        same = same[np.asarray(decided, bool).reshape(-1)]
        if not same.size:
            return 1.0
    return float(np.mean(same))


def decided_predictions(reference: np.ndarray, step: float) -> np.ndarray:
    """Which predictions of `reference` an output on a grid of `step` can make the same way, one entry per
    prediction as `correct_per_sample` counts them: the top two classes at least `step` apart (a one-unit or
    multi-label probability at least `step` from 0.5). Closer than one step, an int8 output cannot order them: its
    choice there is rounding, not what quantization did to the model."""
    reference = np.asarray(reference, np.float64)
    if reference.ndim == 2 and (reference.shape[1] == 1 or is_multi_label_output(reference)):
        return (np.abs(reference - 0.5) >= step).reshape(-1)
    if reference.shape[-1] < 2:
        return np.ones(reference.shape[:-1], bool).reshape(-1)
    top_two = np.sort(reference, axis=-1)[..., -2:]
    return (top_two[..., 1] - top_two[..., 0] >= step).reshape(-1)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy against integer labels or one-hot rows; a one-unit output is a probability (> 0.5)."""
    return float(np.mean(correct_per_sample(outputs, labels)))


def mse(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error."""
    return float(np.mean((np.asarray(outputs, np.float64) - np.asarray(labels, np.float64)) ** 2))


def mae(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(outputs, np.float64) - np.asarray(labels, np.float64))))


def relative_increase(value: float, reference: float) -> float:
    """(value - reference) / reference; inf if the reference is 0 and the value is not."""
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return (value - reference) / reference


def entropy_bound_bytes(total: int, nonzero: int, bits_per_value: int = 8) -> float:
    """Size floor for sparse weights: mask entropy plus `bits_per_value` per non-zero.

    An ideal coder needs `total * H(p)` bits to say where the non-zeros are
    (p = nonzero / total) and `bits_per_value` bits for each of them.
    """
    if total == 0:
        return 0.0
    p = nonzero / total
    entropy = 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return (total * entropy + nonzero * bits_per_value) / 8.0


def _multi_hot(labels: np.ndarray) -> bool:
    """0/1 label rows that are not all one-hot (some sample has no label or several)."""
    return bool(labels.ndim == 2 and np.all((labels == 0) | (labels == 1)) and np.any(labels.sum(axis=1) != 1))


def correct_per_sample(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each prediction is right: top-1 against integer labels or one-hot rows; a one-unit output is a
    probability (> 0.5), and so is each label of a multi-label output against multi-hot rows. One entry per
    prediction (per sample, per time step of a sequence output, or per label)."""
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return (outputs.reshape(-1) > 0.5) == labels.reshape(-1).astype(bool)
    if labels.shape == outputs.shape and _multi_hot(labels) and is_multi_label_output(outputs):
        return ((outputs > 0.5) == labels.astype(bool)).reshape(-1)  # one decision per label (Keras's binary accuracy)
    if labels.ndim == outputs.ndim and labels.shape[-1] == outputs.shape[-1] and labels.shape[-1] > 1:
        labels = np.argmax(labels, axis=-1)
    return np.argmax(outputs, axis=-1).reshape(-1) == labels.reshape(-1)


def exact_binomial_p(wins: int, losses: int) -> float:
    """Two-sided exact p-value that `wins` and `losses` come from a fair coin (McNemar's exact test on the
    discordant pairs of a paired comparison; the sign test)."""
    n = int(wins) + int(losses)
    if n == 0:
        return 1.0
    k = min(int(wins), int(losses))
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))
