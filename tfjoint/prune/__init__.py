"""Pruning: the schedule object, which layers are pruned, per-layer sparsity allocation, budgets and channel groups.

Nothing here touches a Keras layer's call: these modules decide *what* to
prune and *when* (`schedule`, `selection`, `allocation`, `budget`,
`channels`); `tfjoint.quantize` builds the quantizers that do it in the graph.
"""
