"""How a kind of layer streams: what it needs from earlier frames, and why some cannot stream.

A streaming file (`tfjoint.tflite.streaming`) runs a sequence model one call
per hop of frames. Each layer is one of:

* per frame (a Dense on a sequence, a BatchNormalization, an activation):
  nothing to keep;
* a window over time (a convolution or pooling layer along the time axis):
  it keeps the last frames of its input (`time_window`);
* recurrent (tfjoint's LSTM and GRU): it keeps its state;
* over the whole sequence (a global pooling, a Flatten, a Bidirectional or
  backwards recurrent layer, `padding="same"`): it cannot stream, and says
  why (the phrases below, used in the refusals).
"""

from __future__ import annotations

import dataclasses

from tfjoint.registry.table import unwrapped

__all__ = ["TimeWindow", "time_window", "STREAMING_ADVICE", "BIDIRECTIONAL_REASON", "BACKWARDS_REASON",
           "SAME_PADDING_REASON", "WHOLE_SEQUENCE_REASON", "is_bidirectional"]

STREAMING_ADVICE = ("Export the whole sequence (ExportOptions(streaming=False)), or use layers that stream: Conv1D "
                    "with padding='causal' (exact) or 'valid', pooling, LSTM, GRU, and per-frame layers")
BIDIRECTIONAL_REASON = "a Bidirectional layer's backward direction needs the whole sequence"
BACKWARDS_REASON = "it runs backwards over the sequence, which needs the whole of it"
SAME_PADDING_REASON = ("its padding is 'same': each output frame needs frames after it; use padding='causal' "
                       "(exact) or 'valid'")
WHOLE_SEQUENCE_REASON = "it combines the frames of the whole sequence (a global pooling, a Flatten over time)"


@dataclasses.dataclass(frozen=True)
class TimeWindow:
    """What a convolution or pooling layer sees along the time axis (axis 1)."""

    kernel: int
    dilation: int
    stride: int
    padding: str

    @property
    def span(self) -> int:
        """Input frames one output frame depends on."""
        return (self.kernel - 1) * self.dilation + 1

    @property
    def history(self) -> int:
        """Input frames a call must keep for the next: what a causal layer pads, or a valid one's overlap."""
        return (self.kernel - 1) * self.dilation if self.padding == "causal" else self.span - self.stride


def _first(value, default: int = 1) -> int:
    if value is None:
        return default
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)


def time_window(layer) -> TimeWindow | None:
    """The window of a convolution or pooling layer along time, or None (a per-frame layer: 1 frame, stride 1)."""
    config = unwrapped(layer).get_config()
    size = config.get("kernel_size", config.get("pool_size"))
    if size is None:
        return None
    kernel = _first(size)
    stride = _first(config.get("strides"), kernel if "pool_size" in config else 1)
    padding = str(config.get("padding", "valid")).lower()
    window = TimeWindow(kernel, _first(config.get("dilation_rate")), stride, padding)
    return None if window.kernel == 1 and window.stride == 1 else window


def is_bidirectional(layer) -> bool:
    """Whether a recurrent layer runs both ways over the sequence."""
    return hasattr(unwrapped(layer), "merge_mode")
