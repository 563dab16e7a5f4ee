"""Models in: Keras 3 models rebuilt, and checked, in tf_keras before anything trains on them.

`translate` rebuilds the graph and copies the weights; `equivalence` compares
the two models and names the first layer that diverges; `keras3` is the entry
point (`tfjoint.from_keras3`) that `prepare`, `load_model` and the command use.
"""
