"""`JointQuantizeConfig`: TF-MOT's QuantizeConfig for a layer, handing out tfjoint's quantizers."""

from typing import Any, Mapping

import tensorflow_model_optimization as tfmot

from tfjoint import _tfmot, errors
from tfjoint._keras import serializable, weight_short_name
from tfjoint.quantize.clusters import shares_one_table
from tfjoint.quantize.quantizers import (
    OUTPUT,
    ChannelMaskedOutputQuantizer,
    ChannelMaskQuantizer,
    EqualByConfig,
    GatedQuantizer,
    PrunedKernelQuantizer,
    deserialize,
    serialize,
)
from tfjoint.registry.table import channel_axis

__all__ = ["JointQuantizeConfig", "unwrap_config"]


def _base_weight_names(config) -> tuple[str, ...]:
    """Names of the weights TF-MOT's config quantizes (TF-MOT's configs list them as `weight_attrs`)."""
    return tuple(getattr(config, "weight_attrs", ()) or ())


@serializable
class JointQuantizeConfig(EqualByConfig, tfmot.quantization.keras.QuantizeConfig):
    """Wraps the QuantizeConfig TF-MOT chose for a layer with tfjoint's quantizers.

    Args:
      config: the TF-MOT `QuantizeConfig` (object or serialized dict).
      quant_start_step: when fake quant switches on during training.
      pruned_weights: names of the layer's weights to prune (e.g. ["kernel"]).
      schedule: PolynomialDecay arguments of this layer's kernel, required
        when `pruned_weights` is set.
      clusters: weight sharing of the pruned weights: distinct values per
        table (None: none). A weight TF-MOT quantizes per channel gets one
        table per channel (along its kind's channel axis), else one.
      shared_tables: for a weight quantized per channel, whether its channels
        share one table (`clusters.snap_shared`): None decides per weight
        (`clusters.shares_one_table`: where per-channel tables do not pay).
      channels: for a layer whose channels belong to channel groups:
        `{"segments": [[group or None, size], ...], "axes": {weight name:
        channel axis}, "producer": bool, "schedule": decay arguments of the
        channel sparsity, "criterion": "l1" or "l2", optionally "scores": one
        measured importance per channel of a producer's group, which ranks
        them instead of the criterion}`. The listed weights are
        multiplied by the channel mask (the groups' masks side by side, ones
        for None), or with the axis name "__output__" the layer's output is;
        a producer's kernel is scored to choose its group's channels.
    """

    def __init__(self, config, quant_start_step: int, pruned_weights=(), schedule=None, channels=None,
                 clusters=None, shared_tables: bool | None = None):
        if isinstance(config, dict):
            config = deserialize(config)
        self.config = config
        self.quant_start_step = int(quant_start_step)
        self.pruned_weights = tuple(pruned_weights)
        self.schedule = dict(schedule) if schedule else None
        self.channels = _normalized_channels(channels)
        self.clusters = None if clusters is None else int(clusters)
        self.shared_tables = None if shared_tables is None else bool(shared_tables)
        if self.pruned_weights and not self.schedule:
            raise errors.ConfigError("JointQuantizeConfig: `schedule` is required when `pruned_weights` is set.")

    @property
    def channel_axes(self) -> dict[str, int]:
        return dict(self.channels["axes"]) if self.channels else {}

    def _extra_weight_names(self) -> list[str]:
        """Channel-masked weights TF-MOT's config does not quantize (bias, gamma, beta)."""
        quantized = _base_weight_names(self.config)
        return [name for name in self.channel_axes if name not in quantized and name != OUTPUT]

    def _cluster_axis(self, layer, name: str, quantizer) -> int | None:
        """The channel axis of a clustered weight's tables: where its quantizer has one range per channel."""
        if self.clusters is None or not getattr(quantizer, "per_axis", False):
            return None
        return channel_axis(layer, name)

    def _weight_quantizer(self, layer, weight, quantizer):
        name = weight_short_name(weight)
        axis = self.channel_axes.get(name)
        if name in self.pruned_weights:
            cluster_axis = self._cluster_axis(layer, name, quantizer)
            shared = self.clusters is not None and shares_one_table(
                tuple(weight.shape), cluster_axis, self.clusters, self.shared_tables)
            return PrunedKernelQuantizer(quantizer, self.quant_start_step, self.schedule, channel_axis=axis,
                                         clusters=self.clusters, cluster_axis=cluster_axis, shared_table=shared)
        return GatedQuantizer(quantizer, self.quant_start_step, channel_axis=axis)

    def get_weights_and_quantizers(self, layer):
        pairs = [(w, self._weight_quantizer(layer, w, q)) for w, q in self.config.get_weights_and_quantizers(layer)]
        for name in self._extra_weight_names():
            weight = getattr(layer, name, None)
            if weight is not None:
                pairs.append((weight, ChannelMaskQuantizer(self.channel_axes[name])))
        return pairs

    def get_activations_and_quantizers(self, layer):
        return [
            (a, GatedQuantizer(q, self.quant_start_step)) for a, q in self.config.get_activations_and_quantizers(layer)
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        base = len(self.config.get_weights_and_quantizers(layer))
        self.config.set_quantize_weights(layer, quantize_weights[:base])
        extras = [name for name in self._extra_weight_names() if getattr(layer, name, None) is not None]
        for name, value in zip(extras, quantize_weights[base:]):
            setattr(layer, name, value)

    def set_quantize_activations(self, layer, quantize_activations):
        self.config.set_quantize_activations(layer, quantize_activations)

    def get_output_quantizers(self, layer):
        quantizers = [GatedQuantizer(q, self.quant_start_step) for q in self.config.get_output_quantizers(layer)]
        if OUTPUT in self.channel_axes:
            return [ChannelMaskedOutputQuantizer(quantizers[0] if quantizers else None)]
        return quantizers

    def get_config(self) -> dict[str, Any]:
        return {
            "config": serialize(self.config),
            "quant_start_step": self.quant_start_step,
            "pruned_weights": list(self.pruned_weights),
            "schedule": self.schedule,
            "channels": self.channels,
            "clusters": self.clusters,
            "shared_tables": self.shared_tables,
        }

    @classmethod
    def from_config(cls, config):
        # Files of tfjoint 0.4 and earlier have no `shared_tables`: their kernels have a table per channel.
        return cls(**{"shared_tables": False, **config})



def _normalized_channels(channels: Mapping | None) -> dict | None:
    if not channels:
        return None
    normalized = {
        "segments": [[None if group is None else str(group), int(size)] for group, size in channels["segments"]],
        "axes": {str(k): int(v) for k, v in dict(channels["axes"]).items()},
        "producer": bool(channels.get("producer", False)),
        "schedule": dict(channels["schedule"]),
        "criterion": str(channels.get("criterion", "l1")),
    }
    if channels.get("scores") is not None:
        normalized["scores"] = [float(score) for score in channels["scores"]]
    return normalized


def unwrap_config(config):
    """The TF-MOT QuantizeConfig beneath tfjoint's wrapper (also inside OutputOnlyConfig)."""
    if isinstance(config, JointQuantizeConfig):
        return config.config
    if isinstance(config, _tfmot.OutputOnlyConfig):
        return _tfmot.OutputOnlyConfig(unwrap_config(config.quantize_config))
    return config
