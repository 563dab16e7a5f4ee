"""Quantization: the scheme handed to TF-MOT's `quantize_apply`, and the Keras quantizer objects.

`quantizers` and `config` hold the only Keras-serializable objects tfjoint adds
to a model (registered under the package name "tfjoint", so `load_model` needs
no custom-object scope); `scheme` and `transforms` plug them into TF-MOT.
"""
