"""Pruning: the schedule object, its TF-MOT decay, per-layer sparsity allocation and channel groups.

Nothing here touches a Keras layer's call: these modules decide *what* to
prune and *when*; `tfjoint.quantize` builds the quantizers that do it in the
graph.
"""
