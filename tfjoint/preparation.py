"""`tfjoint.prepare`: turn a float tf_keras model into one that prunes and QATs in one fit.

The returned model is TF-MOT's `quantize_apply` output (QuantizeWrapperV2
layers, TF-MOT's layout transforms) built with `JointQuantizeScheme`, so its
prunable kernels carry a pruning mask updated in the graph on TF-MOT's
PolynomialDecay schedule. No callback is needed for the schedule to run.
"""

from typing import Callable, Iterable, Union

import tensorflow_model_optimization as tfmot

from tfjoint import errors
from tfjoint._keras import check_float_model, keras
from tfjoint.config import JointConfig
from tfjoint.scheme import JointQuantizeScheme

__all__ = ["prepare", "prunable_weight", "LayerSelector"]

LayerSelector = Union[Iterable[str], Callable[[keras.layers.Layer], bool], None]

# The weight tfjoint prunes in each layer type (exact types: Conv2DTranspose,
# a Conv2D subclass, is quantized only). DepthwiseConv2D is pruned only when
# asked: TF-MOT's pruning registry leaves it dense.
_PRUNED_WEIGHT = {
    keras.layers.Dense: "kernel",
    keras.layers.Conv1D: "kernel",
    keras.layers.Conv2D: "kernel",
}
_DEPTHWISE_WEIGHT = "depthwise_kernel"


def prunable_weight(layer, prune_depthwise: bool = False) -> str | None:
    """Name of the weight tfjoint would prune in `layer`, or None."""
    if prune_depthwise and type(layer) is keras.layers.DepthwiseConv2D:
        return _DEPTHWISE_WEIGHT
    return _PRUNED_WEIGHT.get(type(layer))


def _selected_names(model, selector: LayerSelector, argument: str) -> set[str] | None:
    """Resolves a list of names or a predicate to layer names; None means 'all'."""
    if selector is None:
        return None
    if callable(selector):
        return {layer.name for layer in model.layers if selector(layer)}
    if isinstance(selector, str):
        raise errors.ConfigError(f"`{argument}` must be a list of layer names or a predicate; received the string {selector!r}. Write [{selector!r}].")
    names = set(selector)
    known = {layer.name for layer in model.layers}
    unknown = sorted(names - known)
    if unknown:
        raise errors.ConfigError(
            f"`{argument}` names layers that model '{model.name}' does not have: {unknown}. "
            f"Its layers are: {sorted(known)}."
        )
    return names


def _pruned_weights(model, config: JointConfig, prune_only: LayerSelector, exclude: LayerSelector) -> dict[str, tuple[str, ...]]:
    only = _selected_names(model, prune_only, "prune_only")
    excluded = _selected_names(model, exclude, "exclude") or set()
    pruned = {}
    for layer in model.layers:
        weight = prunable_weight(layer, config.prune_depthwise)
        if only is not None and layer.name in only and weight is None:
            if type(layer) is keras.layers.DepthwiseConv2D:
                hint = "pass prune_depthwise=True to prune DepthwiseConv2D kernels"
            else:
                hint = "tfjoint prunes Dense, Conv1D and Conv2D kernels (DepthwiseConv2D with prune_depthwise=True); remove it from `prune_only`"
            raise errors.UnsupportedLayerError(
                f"layer '{layer.name}' ({type(layer).__name__}) was asked to be pruned (`prune_only`) but cannot be: {hint}."
            )
        if weight is None or layer.name in excluded or (only is not None and layer.name not in only):
            continue
        pruned[layer.name] = (weight,)
    return pruned


def _check_quantizable(model, scheme: JointQuantizeScheme) -> None:
    registry = scheme.get_quantize_registry()
    unsupported = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and type(layer) is not keras.layers.BatchNormalization  # handled by the Conv/Dense+BN transforms
        and not registry.supports(layer)
    ]
    if unsupported:
        listed = ", ".join(f"'{layer.name}' ({type(layer).__name__})" for layer in unsupported)
        raise errors.UnsupportedLayerError(
            f"model '{model.name}' has layers TF-MOT's 8-bit quantization cannot handle: {listed}. "
            "Replace them with supported layers (Dense, Conv1D/2D, DepthwiseConv2D, pooling, "
            "BatchNormalization after a Conv2D/Dense, Add, Concatenate, ReLU, Reshape, ...)."
        )


def prepare(
    model: keras.Model,
    target_sparsity: float,
    end_step: int,
    *,
    begin_step: int = 0,
    initial_sparsity: float = 0.0,
    power: float = 3.0,
    frequency: int = 100,
    quant_start_step: int = 0,
    prune_depthwise: bool = False,
    prune_only: LayerSelector = None,
    exclude: LayerSelector = None,
) -> keras.Model:
    """Wraps a float tf_keras model for joint magnitude pruning and QAT in one fit.

    Sparsity follows `tfmot.sparsity.keras.PolynomialDecay` exactly, counted in
    the prepared model's own training steps; fake quantization (TF-MOT's default
    8-bit scheme: per-channel symmetric conv weights, per-tensor activations,
    Conv+BN and activation handling by its layout transforms) switches on at
    `quant_start_step`. Once a weight is pruned it stays exactly zero, in the
    float kernel and in the fake-quantized (and so the int8) weights.

    Example:
      >>> from tfjoint import keras
      >>> import tfjoint
      >>> inputs = keras.Input((8,))
      >>> model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
      >>> joint = tfjoint.prepare(model, target_sparsity=0.5, end_step=100)
      >>> [type(layer).__name__ for layer in joint.layers]
      ['InputLayer', 'QuantizeLayer', 'QuantizeWrapperV2']

    Args:
      model: a built tf_keras Sequential or Functional float model, usually
        pre-trained. It is not modified; its weights are copied.
      target_sparsity: fraction of zeros in every pruned kernel at the end.
      end_step: step of the last mask update (see `JointConfig`).
      begin_step: step of the first mask update.
      initial_sparsity: sparsity at `begin_step`.
      power: PolynomialDecay exponent.
      frequency: mask update period in steps.
      quant_start_step: training steps run in float before fake quantization
        switches on. The default 0 trains under fake quant throughout: the
        network adapts to int8 rounding while it recovers from pruning, instead
        of meeting it only at the end (see `tfjoint_qat_late` in the README's
        benchmark).
      prune_depthwise: also prune DepthwiseConv2D kernels.
      prune_only: layer names (or a predicate on layers) to prune; default all
        prunable layers.
      exclude: layer names (or a predicate) never to prune.

    Returns:
      A new tf_keras model to compile and fit.

    Raises:
      errors.ConfigError: an argument is out of range (checked first).
      errors.ModelTypeError: not a tf_keras model, or a subclassed one.
      errors.ModelStructureError: unbuilt, nested, or already pruned/quantized.
      errors.UnsupportedLayerError: a layer cannot be quantized, or cannot be
        pruned although `prune_only` asks for it.
    """
    config = JointConfig(
        target_sparsity=target_sparsity,
        end_step=end_step,
        begin_step=begin_step,
        initial_sparsity=initial_sparsity,
        power=power,
        frequency=frequency,
        quant_start_step=quant_start_step,
        prune_depthwise=prune_depthwise,
    )
    return prepare_with_config(model, config, prune_only=prune_only, exclude=exclude)


def prepare_with_config(
    model: keras.Model, config: JointConfig, *, prune_only: LayerSelector = None, exclude: LayerSelector = None
) -> keras.Model:
    """`prepare`, taking a ready `JointConfig`."""
    check_float_model(model)
    pruned = _pruned_weights(model, config, prune_only, exclude)
    scheme = JointQuantizeScheme(config, pruned)
    _check_quantizable(model, scheme)
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated, scheme)
