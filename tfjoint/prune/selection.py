"""`LayerSelection`: which layers of a model are pruned, in one value, and the weights that selects.

`prepare` and `allocate_sparsity` take one (`layers=`); `pruned_weights`
says, for a model and a schedule, which weights of which layers `prepare`
prunes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping

from tfjoint import errors
from tfjoint._keras import LayerSelector, selected_layer_names
from tfjoint.prune.schedule import JointSchedule
from tfjoint.registry import kind_of, prunable_kinds_sentence, prunable_layers, pruned_weight_name, pruned_weight_names

__all__ = ["LayerSelection", "pruned_weights"]


def _names_or_predicate(name: str, value):
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        raise errors.ConfigError(f"`{name}` must be a list of layer names or a predicate; received the string "
                                 f"{value!r}. Write [{value!r}].")
    try:
        return tuple(value)
    except TypeError:
        raise errors.ConfigError(f"`{name}` must be a list of layer names or a predicate; received "
                                 f"{type(value).__name__}.") from None


@dataclasses.dataclass(frozen=True)
class LayerSelection:
    """Which layers are pruned.

    Attributes:
      prune_only: layer names (or a predicate on layers) to prune; None: every
        prunable layer.
      exclude: layer names (or a predicate) never to prune.
      prune_depthwise: also prune DepthwiseConv2D kernels (TF-MOT leaves them
        dense).
    """

    prune_only: Iterable[str] | Callable | None = None
    exclude: Iterable[str] | Callable | None = None
    prune_depthwise: bool = False

    def __post_init__(self):
        object.__setattr__(self, "prune_only", _names_or_predicate("prune_only", self.prune_only))
        object.__setattr__(self, "exclude", _names_or_predicate("exclude", self.exclude))
        if not isinstance(self.prune_depthwise, bool):
            raise errors.ConfigError(f"`prune_depthwise` must be True or False; received {self.prune_depthwise!r}.")

    def only_names(self, model) -> set[str] | None:
        """The names `prune_only` selects in `model` (None: all), checked against its layers."""
        selector: LayerSelector = self.prune_only  # type: ignore[assignment]
        return selected_layer_names(model, selector, "prune_only")

    def excluded_names(self, model) -> set[str]:
        """The names `exclude` selects in `model`, checked against its layers."""
        selector: LayerSelector = self.exclude  # type: ignore[assignment]
        return selected_layer_names(model, selector, "exclude") or set()

    @classmethod
    def of(cls, layers: LayerSelection | None, **keywords) -> LayerSelection:
        """`layers`, or one built from the (deprecated) keywords given (not None); both is an error."""
        given = {name: value for name, value in keywords.items() if value is not None}
        if layers is not None:
            if not isinstance(layers, LayerSelection):
                raise errors.ConfigError(f"`layers` must be a tfjoint.LayerSelection; received "
                                         f"{type(layers).__name__}.")
            if given:
                raise errors.ConfigError(f"pass either `layers` or {', '.join(f'`{n}`' for n in sorted(given))}, "
                                         f"not both: the LayerSelection already says which layers are pruned.")
            return layers
        return cls(**given)


def _unprunable_hint(layer) -> str:
    kind = kind_of(layer)
    if kind is not None and kind.prune.on_request:
        return f"pass layers=tfjoint.LayerSelection(prune_depthwise=True) to prune its '{kind.prune.weight}'"
    return (f"its kind has no pruned weight in tfjoint's registry ({prunable_kinds_sentence()}; register your own "
            "layer with tfjoint.register_layer)")


def _check_per_layer_targets(model, targets: Mapping[str, float], prune_depthwise: bool) -> None:
    layers = {layer.name: layer for layer in model.layers}
    unknown = sorted(set(targets) - set(layers))
    if unknown:
        raise errors.ConfigError(
            f"`target_sparsity` names layers that model '{model.name}' does not have: {unknown}. "
            f"Its prunable layers are: {sorted(prunable_layers(model, prune_depthwise))}.")
    for name in targets:
        if pruned_weight_name(layers[name], prune_depthwise) is None:
            raise errors.ConfigError(
                f"`target_sparsity` gives layer '{name}' ({type(layers[name]).__name__}) a sparsity, but it "
                f"cannot be pruned: {_unprunable_hint(layers[name])}. Remove it from the dict.")


def _check_clustered_layers(model, schedule: JointSchedule, pruned: Mapping[str, tuple[str, ...]]) -> None:
    """A `clusters` dict may only name layers whose kernels `prepare` prunes (those are the ones clustered)."""
    if not isinstance(schedule.clusters, Mapping):
        return
    unknown = sorted(set(schedule.clusters) - set(pruned))
    if unknown:
        raise errors.ConfigError(
            f"`clusters` names layers whose kernels model '{model.name}' does not prune: {unknown}. Clusters apply to "
            f"the pruned kernels ({sorted(pruned)}); a layer left dense by the selection or a per-layer plan is not "
            "clustered. Remove those names, or prune those layers.")


def pruned_weights(model, schedule: JointSchedule, selection: LayerSelection) -> dict[str, tuple[str, ...]]:
    """The weights `prepare` prunes, by layer name (the ranked weight first).

    Raises:
      errors.ConfigError: a per-layer target or cluster count for a layer the
        model does not have or cannot prune.
      errors.UnsupportedLayerError: `prune_only` names a layer that cannot be
        pruned.
    """
    prune_depthwise = selection.prune_depthwise
    only = selection.only_names(model)
    excluded = selection.excluded_names(model)
    if isinstance(schedule.target_sparsity, Mapping):
        _check_per_layer_targets(model, schedule.target_sparsity, prune_depthwise)
    pruned = {}
    for layer in model.layers:
        weights = pruned_weight_names(layer, prune_depthwise)
        weight = weights[0] if weights else None
        if only is not None and layer.name in only and weight is None:
            raise errors.UnsupportedLayerError(
                f"layer '{layer.name}' ({type(layer).__name__}) was asked to be pruned (`prune_only`) but cannot "
                f"be: {_unprunable_hint(layer)}; remove it from `prune_only`.")
        if weight is None or layer.name in excluded or (only is not None and layer.name not in only):
            continue
        if schedule.target_for(layer.name) is None:  # a per-layer plan that leaves it dense
            continue
        pruned[layer.name] = weights
    _check_clustered_layers(model, schedule, pruned)
    return pruned
