"""Weight sharing's starting point: every clustered kernel's centroids placed from its weights, before training."""

from __future__ import annotations

from tfjoint.quantize.clusters import initial_centroids, initial_levels
from tfjoint.quantize.quantizers import CENTROIDS
from tfjoint.train.readback import pruned_kernels

__all__ = ["place_centroids"]


def place_centroids(prepared) -> None:
    """Sets every clustered kernel's centroids (or a shared table's levels) from its current weights (k-means per
    table, before training)."""
    for pk in pruned_kernels(prepared):
        quantizer = pk.quantizer
        if quantizer.clusters is not None:
            kernel, sparsity = pk.masked_kernel(shared=False), quantizer.final_sparsity or 0.0
            if quantizer.shared_table and quantizer.cluster_axis is not None:
                centroids = initial_levels(kernel, quantizer.clusters, quantizer.cluster_axis, sparsity)
            else:
                centroids = initial_centroids(kernel, quantizer.clusters, quantizer.cluster_axis, sparsity)
            pk.quantizer_weights[CENTROIDS].assign(centroids)
