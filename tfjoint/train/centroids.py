"""Weight sharing's starting point: every clustered kernel's centroids placed from its weights, before training."""

from __future__ import annotations

from tfjoint.quantize.clusters import initial_centroids
from tfjoint.quantize.quantizers import CENTROIDS
from tfjoint.train.readback import pruned_kernels

__all__ = ["place_centroids"]


def place_centroids(prepared) -> None:
    """Sets every clustered kernel's centroids from its current weights (k-means per table, before training)."""
    for pk in pruned_kernels(prepared):
        if pk.quantizer.clusters is not None:
            centroids = initial_centroids(pk.masked_kernel(shared=False), pk.quantizer.clusters,
                                          pk.quantizer.cluster_axis, pk.quantizer.final_sparsity or 0.0)
            pk.quantizer_weights[CENTROIDS].assign(centroids)
