"""PNG plots of a run: per-layer sparsity, the schedule with the loss, weight histograms.

Pure functions of numbers (plus one reader of int8 weights from a .tflite);
matplotlib's Agg backend, so they work with no display.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfjoint import schedule  # noqa: E402
from tfjoint.flatbuffer import read_flatbuffer  # noqa: E402

__all__ = ["sparsity_per_layer", "schedule_and_loss", "weight_histograms", "int8_weights_of"]


def _save(figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def sparsity_per_layer(path: str, target: float, per_layer: dict) -> None:
    """Bars: achieved sparsity per layer, in Keras and in the int8 flatbuffer, against the target."""
    names = list(per_layer)
    keras_values = [per_layer[n]["keras"] for n in names]
    tflite_values = [per_layer[n]["tflite"] or 0.0 for n in names]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(max(5, 1.2 * len(names) + 2), 3.6))
    axis.bar(positions - 0.2, keras_values, 0.4, label="Keras kernel")
    axis.bar(positions + 0.2, tflite_values, 0.4, label="int8 .tflite")
    axis.axhline(target, color="black", linestyle="--", label=f"target {target:.0%}")
    axis.set_xticks(positions, names, rotation=30, ha="right")
    axis.set_ylim(0, 1.2)
    axis.set_ylabel("fraction of zero weights")
    axis.set_title("Sparsity per layer: target vs achieved")
    axis.legend(loc="upper center", ncol=3, fontsize=8)
    _save(figure, path)


def schedule_and_loss(path, *, total_steps, target_sparsity, plan, epoch_steps, epoch_sparsity, batch_losses) -> None:
    """The planned sparsity over steps, measured points, the QAT start, and the training loss."""
    steps = np.arange(0, total_steps + 1)
    planned = [
        schedule.scheduled_sparsity(int(s), initial_sparsity=0.0, target_sparsity=target_sparsity,
                                    begin_step=plan["begin_step"], end_step=plan["end_step"], power=3,
                                    frequency=plan["frequency"])
        for s in steps
    ]
    figure, axis = plt.subplots(figsize=(7, 3.8))
    axis.step(steps, planned, where="post", label="scheduled sparsity (PolynomialDecay)")
    if epoch_steps:
        axis.plot(epoch_steps, epoch_sparsity, "o", label="measured (epoch end)")
    axis.axvline(plan["quant_start_step"], color="tab:red", linestyle=":", label="fake quant on")
    axis.set_xlabel("training step")
    axis.set_ylabel("sparsity")
    axis.set_ylim(0, 1)
    loss_axis = axis.twinx()
    if batch_losses:
        loss_axis.plot(np.arange(1, len(batch_losses) + 1), batch_losses, color="tab:gray", alpha=0.5, label="loss")
    loss_axis.set_ylabel("training loss (running mean in epoch)")
    lines = axis.get_legend_handles_labels()
    more = loss_axis.get_legend_handles_labels()
    axis.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    axis.set_title("One fit: pruning schedule, QAT start and loss")
    _save(figure, path)


def int8_weights_of(tflite_path: str, tensor_names) -> np.ndarray:
    """The int8 weights of the named tensors, read from the flatbuffer."""
    with open(tflite_path, "rb") as handle:
        summary = read_flatbuffer(handle.read())
    values = [w.values.ravel() for w in summary.weights if w.tensor_name in set(tensor_names)]
    return np.concatenate(values) if values else np.zeros(0, np.int8)


def weight_histograms(path: str, layer_name: str, before: np.ndarray, after_int8: np.ndarray) -> None:
    """Float weights before compression beside the int8 weights shipped in the .tflite."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.hist(np.ravel(before), bins=80, color="tab:blue")
    left.set_title(f"'{layer_name}' float32 before")
    left.set_xlabel("weight")
    right.hist(np.ravel(after_int8), bins=np.arange(-128, 129), color="tab:orange")
    zeros = float(np.mean(after_int8 == 0)) if after_int8.size else 0.0
    right.set_title(f"int8 in the .tflite ({zeros:.0%} zeros)")
    right.set_xlabel("int8 value")
    right.set_yscale("log")
    _save(figure, path)
