"""Keras callbacks for a prepared model: metrics in `logs`, TensorBoard scalars.

The schedule itself runs in the graph (see `tfjoint.quantize.quantizers`), so `fit`
without these callbacks still prunes and quantizes on schedule. What they add:
`tfjoint/weight_sparsity` (the zeros the weight masks set within the kept
channels: what `target_sparsity` asks), `tfjoint/channels_removed` (the
fraction of channels channel pruning removed, when it does), `tfjoint/step`
and `tfjoint/qat_active` in `logs` at the end of every epoch, so History,
CSVLogger and TensorBoard pick them up; with `log_dir`, one TensorBoard scalar
per pruned layer too (its zeros, removed channels included). They also fail fast, with a clear
message, if the model being fit was never prepared.
"""

from tfjoint import errors
from tfjoint._keras import keras, tf
from tfjoint.train.prepared_model import PreparedModel
from tfjoint.train.readback import (
    channel_members,
    channels_removed,
    is_prepared,
    layer_sparsity,
    prepared_model,
    schedule_of,
    training_step,
    weight_sparsity,
)

__all__ = ["callbacks", "JointMonitor", "SPARSITY_KEY", "CHANNELS_KEY", "STEP_KEY", "QAT_ACTIVE_KEY"]

SPARSITY_KEY = "tfjoint/weight_sparsity"
CHANNELS_KEY = "tfjoint/channels_removed"
STEP_KEY = "tfjoint/step"
QAT_ACTIVE_KEY = "tfjoint/qat_active"


class JointMonitor(keras.callbacks.Callback):
    """Publishes tfjoint's state to `logs` each epoch (and TensorBoard with `log_dir`)."""

    def __init__(self, log_dir: str | None = None):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    @property
    def _prepared(self):
        """The prepared model being trained: the model itself, or a Distiller's student."""
        return prepared_model(self.model)

    def on_train_begin(self, logs=None):
        if not is_prepared(self._prepared):
            raise errors.ModelStructureError(
                f"tfjoint.callbacks() was given to fit() on model '{self.model.name}', which was not "
                "prepared with tfjoint.prepare. Fit the model tfjoint.prepare returns."
            )
        if channel_members(self._prepared) and not isinstance(self.model, PreparedModel) and not getattr(
                self.model, "updates_channel_masks", False):
            raise errors.ModelStructureError(
                f"model '{self.model.name}' prunes channels, but it is a {type(self.model).__name__}, whose train_step "
                "does not update channel masks. Fit the model tfjoint.prepare returned (a tfjoint PreparedModel), or "
                "call tfjoint.inspect.update_channel_masks(model) before each step of your own training loop."
            )
        self._schedule = schedule_of(self._prepared)
        self._writer = tf.summary.create_file_writer(self.log_dir) if self.log_dir else None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        per_layer = layer_sparsity(self._prepared)
        step = training_step(self._prepared)
        if step is None:  # nothing in the model counts steps: the optimizer's count is the same here
            step = int(self.model.optimizer.iterations.numpy())
        qat_active = float(self._schedule.qat_active(step))
        logs[SPARSITY_KEY] = weight_sparsity(self._prepared)
        removed = channels_removed(self._prepared)
        if removed is not None:
            logs[CHANNELS_KEY] = removed
        logs[STEP_KEY] = float(step)
        logs[QAT_ACTIVE_KEY] = qat_active
        if self._writer is not None:
            with self._writer.as_default(step=step):
                for name, value in per_layer.items():
                    tf.summary.scalar(f"tfjoint/zeros/{name}", value)
                tf.summary.scalar(SPARSITY_KEY, logs[SPARSITY_KEY])
                tf.summary.scalar(QAT_ACTIVE_KEY, qat_active)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def callbacks(log_dir: str | None = None) -> list[keras.callbacks.Callback]:
    """The callbacks to pass to `fit` on a prepared model.

    Returns a new list each call, so it can be concatenated with the user's own
    (`callbacks=tfjoint.callbacks() + [my_callback]`).

    Args:
      log_dir: if set, also write TensorBoard scalars there: sparsity per
        pruned layer, mean sparsity, and whether fake quant is on.
    """
    return [JointMonitor(log_dir)]
