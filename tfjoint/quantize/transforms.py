"""Conv1D + BatchNormalization (+ ReLU) folds for QAT, which TF-MOT does only for Conv2D.

TF-MOT's Conv2D+BN transforms keep fake quantization out from between the
convolution and its BatchNormalization (the converter folds BN into the
convolution's weights and bias), and quantize after the BN or the ReLU that
follows. Their patterns name `Conv2D|DepthwiseConv2D` only, so a Conv1D+BN
block, the standard block of audio and sensor models, gets no transform and
TF-MOT fails on the lone BatchNormalization. These subclasses reuse TF-MOT's
replacement logic unchanged with a Conv1D pattern.
"""

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot

__all__ = [
    "Conv1DBatchNormQuantize",
    "Conv1DBatchNormReLUQuantize",
    "Conv1DBatchNormActivationQuantize",
    "CONV1D_BATCHNORM_TRANSFORMS",
]

LayerPattern = tfmot.quantization.keras.graph_transformations.transforms.LayerPattern

_BATCH_NORM = "BatchNormalization|SyncBatchNormalization"


def _conv1d_batchnorm_pattern():
    return LayerPattern(_BATCH_NORM, inputs=[LayerPattern("Conv1D", config={"activation": "linear"})])


class Conv1DBatchNormQuantize(_tfmot.default_8bit_transforms.Conv2DBatchNormQuantize):
    """Conv1D -> BN: no fake quant between them; BN's output is quantized."""

    def pattern(self):
        return _conv1d_batchnorm_pattern()


class Conv1DBatchNormReLUQuantize(_tfmot.default_8bit_transforms.Conv2DBatchNormReLUQuantize):
    """Conv1D -> BN -> ReLU: quantized only after the ReLU."""

    def pattern(self):
        return LayerPattern("ReLU", inputs=[_conv1d_batchnorm_pattern()])


class Conv1DBatchNormActivationQuantize(Conv1DBatchNormReLUQuantize):
    """Conv1D -> BN -> Activation('relu'): quantized only after the activation."""

    def pattern(self):
        return LayerPattern("Activation", config={"activation": "relu"}, inputs=[_conv1d_batchnorm_pattern()])


# Longest patterns first, as in TF-MOT's own list.
CONV1D_BATCHNORM_TRANSFORMS = (Conv1DBatchNormReLUQuantize, Conv1DBatchNormActivationQuantize, Conv1DBatchNormQuantize)
