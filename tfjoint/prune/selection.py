"""`LayerSelection`: which layers of a model are pruned, in one value.

`prepare` and `allocate_sparsity` take one; the keywords `prune_only`,
`exclude` and `prune_depthwise` they also accept build it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from tfjoint import errors
from tfjoint._keras import LayerSelector, selected_layer_names

__all__ = ["LayerSelection"]


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
        """`layers`, or one built from the keywords given (not None); both is an error."""
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
