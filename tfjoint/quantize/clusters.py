"""Weight sharing: a kernel's weights snapped to a few trained values (centroids), zero always among them.

A clustered kernel holds at most `clusters` distinct values per table: per
output channel where the converter quantizes the kernel per channel (each
channel its own centroids, as it has its own int8 scale), else one set for
the whole kernel. One of them is exactly 0 and is not trained, so pruned
weights (and removed channels) stay exactly zero and the sparsity schedule
holds; the other `clusters - 1` are trainable weights of the layer.

Each forward pass assigns every weight to its nearest centroid (a search in
the sorted centroids' midpoints: memory linear in the kernel, whatever the
number of clusters) and uses the centroid's value. The gradient reaches both
sides: each centroid gets the sum of its members' gradients (it is trained),
and each weight gets its own (straight through), so weights can move to
another cluster as training goes on. Fake quantization then maps the
centroids onto the int8 grid; quantizing never splits a value, so the int8
file holds at most `clusters` values per table, which TFLM's LUT compression
stores as `ceil(log2(clusters))`-bit indices.

`initial_centroids` places them before training (quantiles of the weights,
refined by a few k-means steps), in numpy; `snap` is the in-graph
assignment.
"""

from __future__ import annotations

import numpy as np

from tfjoint._keras import tf

__all__ = ["initial_centroids", "snap", "channels_first", "index_bits"]

_KMEANS_STEPS = 12


def index_bits(values: int) -> int:
    """The index width a table of `values` entries needs (1 at least)."""
    return max(int(values - 1).bit_length(), 1)


def channels_first(values: np.ndarray, axis: int | None) -> np.ndarray:
    """`values` as (tables, entries): one row per channel along `axis`, or one row for the whole tensor."""
    if axis is None:
        return values.reshape(1, -1)
    return np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)


def _kmeans_1d(values: np.ndarray, count: int) -> np.ndarray:
    """`count` centroids of 1-D `values` (quantile start, Lloyd steps), none of them 0; padded if too few values."""
    if values.size == 0:
        return np.linspace(-1e-3, 1e-3, count + 1)[np.arange(count + 1) != count // 2][:count].astype(np.float32)
    centroids = np.quantile(values, (np.arange(count) + 0.5) / count)
    ordered = np.sort(values)
    for _ in range(_KMEANS_STEPS):
        boundaries = (centroids[1:] + centroids[:-1]) / 2
        members = np.searchsorted(boundaries, ordered)
        sums = np.bincount(members, ordered, minlength=count)
        counts = np.bincount(members, minlength=count)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    spread = max(float(np.abs(values).max()), 1e-6) * 1e-3
    centroids = np.where(np.abs(centroids) < spread, np.where(centroids < 0, -spread, spread), centroids)
    return np.sort(centroids).astype(np.float32)


def initial_centroids(values: np.ndarray, clusters: int, axis: int | None, sparsity: float = 0.0) -> np.ndarray:
    """(tables, clusters - 1) trainable centroids for `values` (zero, the other centroid, is implicit).

    Per table, k-means of the weights pruning will keep (the largest
    `1 - sparsity` of them by magnitude) into `clusters - 1` centroids, so
    no centroid is spent on weights the schedule is about to zero.
    """
    tables = []
    for row in channels_first(np.asarray(values, np.float64), axis):
        row = row[row != 0]
        if sparsity > 0 and row.size:
            row = row[np.abs(row) >= np.quantile(np.abs(row), min(sparsity, 1.0 - 1.0 / row.size))]
        tables.append(_kmeans_1d(row, clusters - 1))
    return np.stack(tables)


def snap(values, centroids, axis: int | None):
    """`values` with each weight replaced by its nearest centroid (0 or one of `centroids`), in the graph.

    Args:
      values: the kernel (masked).
      centroids: (tables, clusters - 1): trained centroids, one row per
        channel along `axis`, or one row (`axis` None).
      axis: the channel axis of per-channel tables, or None.

    The forward value is the centroid; the gradient flows to the centroids
    (summed over their members) and to `values` (straight through).
    """
    rank = values.shape.rank
    tables = tf.shape(centroids)[0]
    moved = values if axis is None else tf.experimental.numpy.moveaxis(values, axis % rank, 0)
    rows = tf.reshape(moved, tf.stack([tables, -1]))
    full = tf.sort(tf.concat([tf.zeros_like(centroids[:, :1]), centroids], axis=1), axis=1)
    boundaries = (full[:, 1:] + full[:, :-1]) / 2
    members = tf.searchsorted(boundaries, tf.stop_gradient(rows), side="left")
    snapped = tf.gather(full, members, batch_dims=1)
    snapped = snapped + (rows - tf.stop_gradient(rows))  # straight through for the weights
    snapped = tf.reshape(snapped, tf.shape(moved))
    return snapped if axis is None else tf.experimental.numpy.moveaxis(snapped, 0, axis % rank)
