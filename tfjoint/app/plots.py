"""PNG plots of a run: per-layer sparsity, the schedule with the loss, weight histograms.

Pure functions of numbers and of the `JointSchedule` (the int8 weights come
from the report's flatbuffer summary, not from reading the file again).
Figures are built with matplotlib's object API and saved directly: no
display is needed, and pyplot's backend (a notebook's inline one, say) is
left alone.
"""

import numpy as np
from matplotlib.figure import Figure

__all__ = ["sparsity_per_layer", "schedule_and_loss", "scheduled_curve", "weight_histograms", "sensitivity",
           "per_layer_error",
           "channels_for_budget"]


def _figure(rows: int = 1, columns: int = 1, **kwargs):
    figure = Figure(figsize=kwargs.pop("figsize"))
    return figure, figure.subplots(rows, columns, **kwargs)


def _save(figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def sparsity_per_layer(path: str, schedule, per_layer: dict, per_layer_channels: dict | None = None) -> None:
    """Bars: weight sparsity planned, in Keras and in the int8 flatbuffer, per layer; and channels kept.

    With channel pruning, a second panel shows the fraction of each layer's
    output channels kept in the int8 file.
    """
    channels = {name: entry for name, entry in (per_layer_channels or {}).items()
                if entry.get("original") and entry.get("tflite") is not None}
    pruned_channels = any(entry["tflite"] < entry["original"] for entry in channels.values())
    names = list(per_layer)
    planned = [per_layer[n].get("planned") or 0.0 for n in names]
    keras_values = [per_layer[n]["keras"] for n in names]
    tflite_values = [per_layer[n]["tflite"] or 0.0 for n in names]
    positions = np.arange(len(names))
    width = max(5, 1.2 * len(names) + 2)
    if pruned_channels:
        figure, (axis, channel_axis) = _figure(2, 1, figsize=(width, 6.4), sharex=True)
        kept = [channels[n]["tflite"] / channels[n]["original"] if n in channels else 1.0 for n in names]
        channel_axis.bar(positions, kept, 0.5, color="tab:green", label="output channels kept (int8 file)")
        if not schedule.per_group_channels:
            channel_axis.axhline(1 - schedule.channel_sparsity, color="black", linestyle="--",
                                 label=f"target {1 - schedule.channel_sparsity:.0%} kept")
        for position, name in zip(positions, names):
            if name in channels:
                channel_axis.text(position, kept[position] + 0.03, f"{channels[name]['tflite']}/"
                                  f"{channels[name]['original']}", ha="center", fontsize=7)
        channel_axis.set_ylim(0, 1.25)
        channel_axis.set_ylabel("fraction of channels kept")
        channel_axis.legend(loc="upper center", ncol=2, fontsize=8)
        channel_axis.set_xticks(positions, names, rotation=30, ha="right")
    else:
        figure, axis = _figure(figsize=(width, 3.6))
    axis.bar(positions - 0.27, planned, 0.27, label="planned", color="lightgray", edgecolor="black")
    axis.bar(positions, keras_values, 0.27, label="Keras kernel")
    axis.bar(positions + 0.27, tflite_values, 0.27, label="int8 .tflite")
    if not schedule.per_layer:
        axis.axhline(schedule.target_sparsity, color="black", linestyle="--",
                     label=f"target {schedule.target_sparsity:.0%}")
    axis.set_xticks(positions, names, rotation=30, ha="right")
    axis.set_ylim(0, 1.2)
    axis.set_ylabel("fraction of zero weights")
    axis.set_title("Sparsity per layer: target vs achieved")
    axis.legend(loc="upper center", ncol=4, fontsize=8)
    _save(figure, path)


def scheduled_curve(schedule, total_steps: int, sizes=None) -> list[float]:
    """The share of all pruned weights the schedule holds at zero after each step (0 .. total_steps).

    For a per-layer plan, each layer's target weighted by its kernel's size
    (`sizes`), as the measured sparsity counts them.
    """
    target = schedule.mean_target(sizes)
    return [schedule.scheduled_sparsity(int(step), target) for step in range(total_steps + 1)]


def schedule_and_loss(path, *, schedule, total_steps, epoch_steps, epoch_sparsity, batch_losses, sizes=None) -> None:
    """The scheduled sparsity over steps, measured points, the QAT start, and the training loss.

    For a per-layer plan the curve is the mean of the layers' targets weighted
    by their kernels' sizes (`sizes`): the share of all pruned weights that are
    zero, which is what the measured points show.
    """
    steps = np.arange(0, total_steps + 1)
    planned = scheduled_curve(schedule, total_steps, sizes)
    figure, axis = _figure(figsize=(7, 3.8))
    label = "scheduled sparsity, all pruned weights" + (
        " (size-weighted mean of the plan)" if schedule.per_layer else "")
    axis.step(steps, planned, where="post", label=label)
    if schedule.prunes_channels and not schedule.per_group_channels:
        channels = [schedule.scheduled_sparsity(int(s), float(schedule.channel_sparsity)) for s in steps]
        axis.step(steps, channels, where="post", label="scheduled channel sparsity")
    if epoch_steps:
        axis.plot(epoch_steps, epoch_sparsity, "o", label="measured (epoch end)")
    axis.axvline(schedule.quant_start_step, color="tab:red", linestyle=":", label="fake quant on")
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


def weight_histograms(path: str, layer_name: str, before: np.ndarray, after_int8: np.ndarray) -> None:
    """Float weights before compression beside the int8 weights shipped in the .tflite."""
    figure, (left, right) = _figure(1, 2, figsize=(9, 3.4))
    left.hist(np.ravel(before), bins=80, color="tab:blue")
    left.set_title(f"'{layer_name}' float32 before")
    left.set_xlabel("weight")
    right.hist(np.ravel(after_int8), bins=np.arange(-128, 129), color="tab:orange")
    zeros = float(np.mean(after_int8 == 0)) if after_int8.size else 0.0
    right.set_title(f"int8 in the .tflite ({zeros:.0%} zeros)")
    right.set_xlabel("int8 value")
    right.set_yscale("log")
    _save(figure, path)


def sensitivity(path: str, plan) -> None:
    """The scan: validation loss with each layer alone pruned to each level, and the sparsity the plan chose."""
    figure, (loss_axis, accuracy_axis) = _figure(1, 2, figsize=(10, 3.8))
    for index, (name, points) in enumerate(plan.curves.items()):
        color = f"C{index % 10}"
        levels = [p["sparsity"] for p in points]
        loss_axis.plot(levels, [p["loss"] for p in points], "o-", color=color, label=f"{name} -> {plan[name]:.0%}")
        loss_axis.axvline(plan[name], color=color, linestyle=":", alpha=0.6)
        if points[0]["accuracy"] is not None:
            accuracy_axis.plot(levels, [p["accuracy"] for p in points], "o-", color=color, label=name)
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("sparsity of this layer alone (no training)")
    loss_axis.set_ylabel("validation loss")
    loss_axis.set_title(f"Sensitivity scan; dotted: the plan ({plan.mean_sparsity:.0%} overall)")
    loss_axis.legend(fontsize=7)
    accuracy_axis.set_xlabel("sparsity of this layer alone (no training)")
    accuracy_axis.set_ylabel("validation accuracy")
    accuracy_axis.set_title("Accuracy with one layer pruned")
    _save(figure, path)


def per_layer_error(path: str, entries: list[dict], graph_order: list[str]) -> None:
    """Each int8 layer's own SQNR against the float model (and the QAT model), and the SQNR so far, in graph order.

    The own error is the layer's alone: both sides get the same input. Against
    the float model it shows what compression changed in that layer (for a
    QAT model that includes pruning and fine-tuning); against the QAT Keras
    model, what the int8 conversion alone changed.
    """
    order = {name: i for i, name in enumerate(graph_order)}
    entries = sorted(entries, key=lambda e: order.get(e["layer"], len(order)))
    names = [e["layer"] for e in entries]

    def finite(value):
        return 60.0 if value is None or value == float("inf") else max(float(value), -20.0)

    own = [finite(e["sqnr_db"]) if e["sqnr_db"] is not None else np.nan for e in entries]
    qat = [finite(e["qat_sqnr_db"]) if e.get("qat_sqnr_db") is not None else np.nan for e in entries]
    so_far = [finite(e.get("cumulative_sqnr_db")) for e in entries]
    worst = int(np.nanargmin(own)) if not np.all(np.isnan(own)) else -1
    positions = np.arange(len(names))
    figure, axis = _figure(figsize=(max(6, 0.7 * len(names) + 2), 4))
    colors = ["tab:red" if i == worst else "tab:blue" for i in positions]
    axis.bar(positions - 0.2, own, 0.4, color=colors, label="own SQNR vs float model (same input)")
    if not np.all(np.isnan(qat)):
        axis.bar(positions + 0.2, qat, 0.4, color="tab:gray", label="own SQNR vs QAT Keras model")
    axis.plot(positions, so_far, "o-", color="black", label="SQNR so far vs float model")
    axis.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("SQNR (dB), higher is better")
    axis.set_title("Error each int8 layer adds" + (f": worst is '{names[worst]}'" if worst >= 0 else ""))
    axis.legend(fontsize=8)
    _save(figure, path)


def channels_for_budget(path: str, per_layer_channels: dict, budget: dict, plan) -> None:
    """Channels kept per layer in the int8 file, and each budget against the figure measured on the file."""
    layers = {name: e for name, e in per_layer_channels.items() if e.get("original") and e.get("tflite") is not None}
    names = list(layers)
    kept = [layers[n]["tflite"] / layers[n]["original"] for n in names]
    figure, (axis, budget_axis) = _figure(1, 2, figsize=(max(7, 0.6 * len(names) + 5), 3.8),
                                          gridspec_kw={"width_ratios": [3, 1]})
    positions = np.arange(len(names))
    axis.bar(positions, kept, 0.6, color="tab:green")
    for position, name in zip(positions, names):
        axis.text(position, kept[position] + 0.02, f"{layers[name]['tflite']}/{layers[name]['original']}",
                  ha="center", fontsize=7)
    axis.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    axis.set_ylim(0, 1.15)
    axis.set_ylabel("fraction of output channels kept")
    axis.set_title("Channels kept per layer (int8 file)")
    entries = list(budget.items())
    budget_positions = np.arange(len(entries))
    used = [entry["measured"] / entry["limit"] for _, entry in entries]
    budget_axis.bar(budget_positions, used, 0.5, color=["tab:blue" if u <= 1 else "tab:red" for u in used])
    budget_axis.axhline(1.0, color="black", linestyle="--", label="budget")
    budget_axis.set_xticks(budget_positions, [name.replace("_bytes", "") for name, _ in entries])
    budget_axis.set_ylim(0, max(used + [1.0]) * 1.15)
    budget_axis.set_ylabel("measured / budget")
    budget_axis.set_title("Budgets (measured)")
    budget_axis.legend(fontsize=8)
    _save(figure, path)
