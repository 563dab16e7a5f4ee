"""Quantization: the scheme handed to TF-MOT's `quantize_apply`, and the Keras quantizer objects.

`quantizers` and `config` hold the Keras-serializable objects that prune and
gate (registered under the package name "tfjoint", so `load_model` needs no
custom-object scope); `scheme` plugs them, and the registry's layout rewrites
(`tfjoint.registry.rewrites`), into TF-MOT; `wrappers` fixes how TF-MOT's
layers list their variables so `.keras` files load.
"""
