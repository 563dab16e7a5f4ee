"""Training functions traced per phase: float steps before `quant_start_step`, quantized steps from it.

Why this module exists: a gated quantizer that decides in the graph whether
this step is quantized needs a `tf.cond` per quantizer, and cond_v2's
gradient keeps every branch intermediate alive (`OptionalFromValue` /
`OptionalGetValue` pairs): on the Conv1D+BatchNorm benchmark model the float
steps cost more than the quantized ones. `fit` knows which phase each step
is in, so `PhaseSwitchedTraining.make_train_function` traces tf_keras's own
train function once per phase, with every gate decided at trace time
(`tfjoint.quantize.quantizers.training_phase`), and calls the one each step
needs: float steps cost what pruning alone costs, quantized steps what
pruning plus TF-MOT's fake quant costs. The switch costs one more trace.

The in-graph step counters still count every step (the pruning schedule
and the range warm start read them); the Python-side count is re-read from
them at the start of every `fit`. Training that is not `fit` one step per
call (a custom loop calling the model, `steps_per_execution` > 1, a
ParameterServerStrategy coordinator) keeps the in-graph gates.
"""

from typing import Any

from tfjoint import errors
from tfjoint._keras import keras
from tfjoint.quantize.quantizers import training_phase
from tfjoint.train.first_trace import build_before_tracing
from tfjoint.train.readback import training_step

__all__ = ["PhaseSwitchedTraining"]


class _ScheduleEndFromFit(keras.callbacks.Callback):
    """Sets a schedule's missing `end_step` from the fit's length, before the first step is traced."""

    def __init__(self, prepared, initial_epoch: int):
        super().__init__()
        self._prepared, self._initial_epoch = prepared, int(initial_epoch or 0)

    def on_train_begin(self, logs=None):
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps:
            raise errors.ConfigError(
                f"model '{self._prepared.name}''s schedule has no end_step, so fit sets it to half of its steps, but "
                "Keras cannot tell how many steps this fit runs (a dataset without an end): pass steps_per_epoch=, "
                "or prepare with tfjoint.JointSchedule(..., end_step=...).")
        self._prepared.resolve_schedule(int(steps) * max(1, int(epochs) - self._initial_epoch))


class _PhaseDispatch:
    """The model's `train_function`: calls the float or the quantized traced function, per step."""

    def __init__(self, model, prepared, quant_start_step: int):
        self._model = model
        self._prepared = prepared
        self._quant_start_step = quant_start_step
        self._functions: dict[bool, object] = {}
        self.resync()

    def resync(self) -> None:
        """Re-reads the steps taken from the model's step counters."""
        self._steps_taken = training_step(self._prepared) or 0

    def _function(self, quantizing: bool):
        if quantizing not in self._functions:
            # tf_keras's own train function (distribution, XLA, metrics); it replaces
            # model.train_function, which must stay this dispatcher.
            base: Any = super(PhaseSwitchedTraining, self._model)  # type: ignore[misc]  # the Keras Model after the mixin
            self._functions[quantizing] = base.make_train_function(force=True)
            self._model.train_function = self
        return self._functions[quantizing]

    def __call__(self, iterator):
        quantizing = self._steps_taken >= self._quant_start_step
        with training_phase(quantizing):  # in effect while the function traces, on its first call
            outputs = self._function(quantizing)(iterator)
        self._steps_taken += 1
        return outputs


class PhaseSwitchedTraining:
    """Mixin for the tf_keras models that `fit` a prepared model: one traced train function per phase.

    Subclasses name the prepared model whose schedule and step counters
    decide the phase (`_phase_model`).
    """

    def _phase_model(self):
        return self

    def _trained(self):
        """The model whose variables the train step optimizes and whose outputs it scores: this one."""
        return self

    def fit(self, *args, **kwargs):
        """tf_keras's `fit`; a schedule without an `end_step` gets one from this fit's length first, and the
        optimizer and compiled metrics are built before the first step is traced (`tfjoint.train.first_trace`)."""
        trained = self._trained()
        if trained.built:
            build_before_tracing(self, kwargs.get("x", args[0] if args else None),
                                 kwargs.get("y", args[1] if len(args) > 1 else None), trained.trainable_variables,
                                 getattr(trained, "_nested_outputs", None))
        schedule = getattr(self._phase_model(), "schedule", None)
        if schedule is not None and not schedule.is_resolved:
            # fit(x, y, batch_size, epochs, verbose, callbacks, ..., initial_epoch at position 11, ...)
            initial_epoch = kwargs.get("initial_epoch", args[11] if len(args) > 11 else 0)
            resolver = _ScheduleEndFromFit(self._phase_model(), initial_epoch)
            if len(args) > 5:
                args = args[:5] + ([resolver] + list(args[5] or []),) + args[6:]
            else:
                kwargs["callbacks"] = [resolver] + list(kwargs.get("callbacks") or [])
        return super().fit(*args, **kwargs)  # type: ignore[misc]

    def _steps_one_per_call(self) -> bool:
        steps_per_execution = getattr(self, "_steps_per_execution", None)
        one = steps_per_execution is None or int(steps_per_execution.numpy()) == 1
        return one and getattr(self, "_cluster_coordinator", None) is None

    def make_train_function(self, force=False):
        prepared = self._phase_model()
        schedule = getattr(prepared, "schedule", None)
        start = schedule.quant_start_step if schedule is not None else 0
        if start == 0 or not self._steps_one_per_call():
            return super().make_train_function(force)  # type: ignore[misc]
        dispatch = getattr(self, "_tfjoint_phase_dispatch", None)
        if dispatch is not None and self.train_function is dispatch and not force:
            dispatch.resync()
            return dispatch
        dispatch = _PhaseDispatch(self, prepared, start)
        self._tfjoint_phase_dispatch = dispatch
        self.train_function = dispatch
        return dispatch
