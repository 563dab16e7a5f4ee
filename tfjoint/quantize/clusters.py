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

One table for every channel (`shares_one_table`): per-channel tables cost a
table per channel in the file, which on a small kernel (a 64x64 pointwise
convolution) is more than the indices save. There the
channels share one set of levels relative to each channel's largest weight
(`snap_shared`): a weight becomes `peak_c * l_k`, the levels `l_k` trained
and symmetric (`{-l, 0, +l}`, so that a sign flipped by folding a
BatchNormalization keeps the set), each on the int8 grid of the channel's
range. The per-channel int8 scale is then `peak_c * max(l) / 127`, and every
channel's int8 values are the same `round(127 * l_k / max(l))`: one LUT table
for the whole tensor, whatever the per-channel scales.
"""

from __future__ import annotations

import numpy as np

from tfjoint._keras import tf

__all__ = ["initial_centroids", "snap", "channels_first", "index_bits", "initial_levels", "snap_shared",
           "level_count", "shares_one_table", "along_range", "lut_bytes", "MIN_SAVING_BYTES", "DCM_BYTES"]

_KMEANS_STEPS = 12
_INT8_STEPS = 127  # a symmetric, narrow-range int8 scale: the channel's range maps to +-127

# What TFLM's LUT compression adds to the file (measured on the files TFLM's tool writes).
MIN_SAVING_BYTES = 64  # what a compressed tensor must save, after everything it adds to the file
DCM_BYTES = 16  # DECODE's common metadata, ahead of the value tables
# What each compressed tensor adds besides its indices and tables: the decoded and the ancillary tensors' entries and
# names (each its own copy of the name), DECODE's operator, and a copy of the tensor's quantization parameters (per
# channel: a float32 scale and an int64 zero point each).
_TENSOR_ENTRY_BYTES = 96
_QUANTIZATION_BYTES_PER_SCALE = 12
_TYPICAL_NAME_LENGTH = 32  # a converted weight tensor's name, before the file exists


def lut_bytes(size: int, bits: int, tables: int, table_length: int, name_length: int, scales: int) -> int:
    """What a LUT-compressed tensor of `size` weights costs in the file (an estimate, checked on the written file).

    Its `bits`-bit indices, `tables` value tables of `table_length` entries,
    DECODE's metadata, and what each compressed tensor adds: the decoded and
    ancillary tensors' entries and names (`name_length` characters each),
    and a copy of its quantization parameters (`scales` of them).
    """
    return (-(-size * bits // 8) + tables * max(table_length, 1) + DCM_BYTES + _TENSOR_ENTRY_BYTES
            + 2 * name_length + _QUANTIZATION_BYTES_PER_SCALE * scales)


def along_range(shape, axis: int | None) -> bool:
    """Whether a kernel's channels along `axis` are its quantizer's range axis: TF-MOT's per-channel range runs
    along a weight's last axis (a depthwise kernel's channels are on axis 2, its multiplier last)."""
    return axis is not None and axis % len(shape) == len(shape) - 1


def shares_one_table(shape, axis: int | None, clusters: int, shared_tables: bool | None = None) -> bool:
    """Whether a clustered kernel's channels share one LUT table (`snap_shared`) instead of one table each.

    Only a kernel quantized per channel (`axis` set) along its last axis has
    a choice: TF-MOT's range runs along a weight's last axis, so a depthwise
    kernel (channels on axis 2, its multiplier last) is trained with one
    range for every channel, and the converter quantizes it per channel from
    values already rounded to that range: levels relative to each channel's
    largest weight would not survive, and it keeps a table per channel.
    With `shared_tables` None, the channels share one table where
    per-channel tables would cost more bytes than the compression saves
    with them, and one table makes the compression pay (indices, tables and
    DECODE's additions against the int8 tensor, by `lut_bytes`): where
    neither pays, the tensor ships uncompressed, and tables of their own
    keep the weights closer. True or False decides for every kernel.
    """
    if not along_range(shape, axis):
        return False
    if shared_tables is not None:
        return bool(shared_tables)
    size = int(np.prod(shape))
    channels, bits = int(shape[axis]), index_bits(clusters)
    per_channel = lut_bytes(size, bits, channels, clusters, _TYPICAL_NAME_LENGTH, channels)
    one_table = lut_bytes(size, bits, 1, clusters, _TYPICAL_NAME_LENGTH, channels)
    return channels * clusters > size - per_channel and size - one_table >= MIN_SAVING_BYTES


def best_lut_saving(shape, clusters: int, axis: int | None, shared_table: bool) -> int:
    """The most bytes LUT compression can save on a kernel of `shape` clustered to `clusters` values, before any
    training: no name stored, and every table `clusters` entries long (the trained file can only do worse).

    Per-channel kernels (`axis` set) keep a scale per channel, which DECODE copies; their channels share one table
    where `shared_table`, else have one each, or the export puts all their values in one table where that is
    smaller: the better of the two counts.
    """
    size = int(np.prod(shape))
    scales = int(shape[axis]) if axis is not None else 1
    tables = 1 if shared_table or axis is None else scales
    own = lut_bytes(size, index_bits(clusters), tables, clusters, 0, scales)
    # the export may also store a per-channel kernel's values (at most 256 int8 ones) in one table
    values = min(clusters * scales, 256)
    return size - min(own, lut_bytes(size, index_bits(values), 1, values, 0, scales))


def level_count(clusters: int) -> int:
    """The trained level magnitudes of a shared table: `{-l, 0, +l}` for each, within `clusters` values."""
    return (clusters - 1) // 2


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


def initial_levels(values: np.ndarray, clusters: int, axis: int, sparsity: float = 0.0) -> np.ndarray:
    """(1, `level_count(clusters)`) level magnitudes in (0, 1] one table shares across the channels along `axis`.

    k-means of the weights' magnitudes relative to their channel's largest,
    over the weights pruning will keep (the largest `1 - sparsity` of each
    channel).
    """
    rows = channels_first(np.asarray(values, np.float64), axis)
    kept = []
    for row, peak in zip(rows, np.abs(rows).max(axis=1)):
        row = np.abs(row[row != 0])
        if peak <= 0 or not row.size:
            continue
        if sparsity > 0:
            row = row[row >= np.quantile(row, min(sparsity, 1.0 - 1.0 / row.size))]
        kept.append(row / peak)
    magnitudes = np.concatenate(kept) if kept else np.zeros(0)
    levels = np.clip(_kmeans_1d(magnitudes, level_count(clusters)), 1e-3, 1.0)
    return np.sort(np.abs(levels))[None, :].astype(np.float32)


def snap_shared(values, levels, axis: int):
    """`values` with each weight replaced by `peak_c * l` for the nearest shared level `l` (or 0), in the graph.

    Args:
      values: the kernel (masked).
      levels: (1, n): trained level magnitudes; each is used as `+l` and `-l`,
        clipped to (0, 1] and placed on the int8 grid of the largest
        (`round(127 * l / max(l))`, straight through).
      axis: the channel axis the kernel is quantized along.

    Every channel's largest weight becomes `peak_c * max(l)`, so its int8
    scale is `peak_c * max(l) / 127` and its int8 values are the shared
    `round(127 * l / max(l))`. The forward value is the snapped weight; the
    gradient flows to the levels and, straight through, to `values`.
    """
    rank = values.shape.rank
    axis = axis % rank
    peak = tf.stop_gradient(tf.reduce_max(tf.abs(values), axis=[d for d in range(rank) if d != axis], keepdims=True))
    normalized = values / tf.maximum(peak, 1e-12)
    magnitudes = tf.sort(tf.clip_by_value(tf.abs(tf.reshape(levels, [-1])), 1e-3, 1.0))
    top = magnitudes[-1]
    on_grid = tf.round(magnitudes / top * _INT8_STEPS) / _INT8_STEPS * top
    magnitudes = magnitudes + tf.stop_gradient(on_grid - magnitudes)
    full = tf.concat([-tf.reverse(magnitudes, [0]), tf.zeros([1], magnitudes.dtype), magnitudes], axis=0)
    boundaries = (full[1:] + full[:-1]) / 2
    flat = tf.reshape(tf.stop_gradient(normalized), [1, -1])
    members = tf.searchsorted(boundaries[None, :], flat, side="left")
    snapped = tf.reshape(tf.gather(full, members[0]), tf.shape(values)) * peak
    return snapped + (values - tf.stop_gradient(values))  # straight through for the weights
