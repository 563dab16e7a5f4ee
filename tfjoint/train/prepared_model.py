"""`PreparedModel`, the model `tfjoint.prepare` returns, and its channel masks updated in the graph.

A `PreparedModel` is a tf_keras Functional model that carries its
`JointSchedule` (saved in its config, so it survives `.keras`, `.h5` and
SavedModel round trips) and whose `train_step` updates the channel masks.

Channel masks are updated once per training step, for every channel group at once.
A channel group's mask cannot be chosen inside one layer's quantizer: its
score is the sum over all the group's producers (the L1 or L2 norms of their
filters), and every member (producers, BatchNorms, depthwise convolutions)
must apply the same mask. So `PreparedModel`, when `channel_sparsity > 0`,
updates all channel masks at the start of each
`train_step`, in the graph, on the schedule's PolynomialDecay: it keeps the
`max(round(C * (1 - s)), 1)` channels of highest score, ranking the masked
filters so a removed channel never returns. The weight masks inside the
kernels' quantizers then keep `target_sparsity` within the kept channels.

A custom training loop must call `update_channel_masks(model)` itself before
each step's forward pass.
"""

import contextlib

import numpy as np

from tfjoint import _tfmot
from tfjoint._keras import is_keras3_object, keras, serializable, tf
from tfjoint._names import output_name
from tfjoint.prune.schedule import JointSchedule
from tfjoint.quantize.config import JointQuantizeConfig
from tfjoint.quantize.quantizers import PrunedKernelQuantizer, mask_shape
from tfjoint.train.phases import PhaseSwitchedTraining
from tfjoint.train.readback import channel_members

__all__ = ["PreparedModel", "update_channel_masks", "group_masks", "finish_channel_pruning", "as_tf_keras"]


def as_tf_keras(obj, module):
    """A Keras 3 optimizer or loss object as tf_keras's of the same class and config; anything else unchanged."""
    if not is_keras3_object(obj):
        return obj
    config = {key: value for key, value in obj.get_config().items() if not isinstance(value, dict)}
    try:
        return module.deserialize({"class_name": type(obj).__name__, "config": config})
    except (ValueError, TypeError):  # a config tf_keras does not take: the class with its defaults
        return module.get(type(obj).__name__)


def _filter_scores(member, criterion: str):
    """Per-channel score of one producer's kernel, as the forward pass sees it (masks applied)."""
    kernel = member.weight
    if member.weight_mask is not None:
        kernel = kernel * member.weight_mask
    rank = kernel.shape.rank
    axis = member.axis % rank
    kernel = kernel * tf.reshape(member.channel_mask, mask_shape(rank, axis))
    reduce_axes = [a for a in range(rank) if a != axis]
    if criterion == "l2":
        return tf.sqrt(tf.reduce_sum(tf.square(kernel), axis=reduce_axes))
    return tf.reduce_sum(tf.abs(kernel), axis=reduce_axes)


def _new_group_masks(producers_by_group, sparsities):
    masks = {}
    for group, producers in producers_by_group.items():
        sparsity = sparsities[group]
        measured = next((p.scores for p in producers if p.scores is not None), None)
        # Measured importances (the planner's loss scan of attention heads) rank the group; else its filters' norms.
        score = (tf.constant(measured, tf.float32) if measured is not None
                 else tf.add_n([_filter_scores(p, p.criterion) for p in producers]))
        channels = int(score.shape[0])
        keep = tf.cast(tf.maximum(tf.math.round(tf.cast(channels, tf.float32) * (1.0 - sparsity)), 1.0), tf.int32)
        _, indices = tf.math.top_k(score, k=channels)
        ranks = tf.scatter_nd(indices[:, None], tf.range(channels), [channels])
        masks[group] = tf.cast(ranks < keep, tf.float32)
    return masks


def _member_mask(member, masks):
    parts = [masks[group] if group in masks else tf.ones([size]) for group, size in member.segments]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)


def _producers_by_group(members) -> dict[str, list]:
    """The channel members that make each group's channels (their filters are ranked together)."""
    found: dict[str, list] = {}
    for member in members:
        if member.producer and member.group is not None:
            found.setdefault(member.group, []).append(member)
    return found


def update_channel_masks(model):
    """Builds the in-graph update of every channel mask of `model` for the coming training step.

    Call it once per training step before the forward pass (`PreparedModel`
    does). Returns the update op, or None if the model prunes no channels.
    """
    members = channel_members(model)
    producers_by_group = _producers_by_group(members)
    if not producers_by_group:
        return None
    step_variable = next(m.step for m in members if m.producer and m.step is not None)
    # Every group ramps on the same timing; a per-group plan gives each group its own final sparsity.
    schedules = {group: _tfmot.JointPolynomialDecay(**producers[0].channel_schedule)
                 for group, producers in producers_by_group.items()}

    def update(distribution=None):
        step = step_variable.read_value() + 1  # the forward pass of this step counts it
        decisions = {group: schedule(step) for group, schedule in schedules.items()}
        should_update = next(iter(decisions.values()))[0]

        def assign():
            masks = _new_group_masks(producers_by_group, {group: d[1] for group, d in decisions.items()})
            assignments = []
            for member in members:
                value = _member_mask(member, masks)
                if distribution is None:
                    assignments.append(member.channel_mask.assign(value))
                else:
                    assignments.append(distribution.extended.update(member.channel_mask, lambda v, x: v.assign(x),
                                                                    args=(value,)))
            return tf.group(assignments)

        return tf.cond(should_update, assign, tf.no_op)

    context = tf.distribute.get_replica_context()
    if context is not None:  # as TF-MOT's mask update: assign in cross-replica context
        return context.merge_call(update)
    return update()


def finish_channel_pruning(model) -> bool:
    """Sets every channel mask of a prepared model to where its schedule ends, now, without training.

    Each group keeps its strongest filters (the same criterion and rounding
    as the in-graph update at `end_step`). The planner uses it to build and
    measure the file a channel plan will give before anything is trained.
    Returns False if the model prunes no channels.
    """
    members = channel_members(model)
    producers_by_group = _producers_by_group(members)
    if not producers_by_group:
        return False
    finals = {group: float(producers[0].channel_schedule["final_sparsity"])
              for group, producers in producers_by_group.items()}
    masks = _new_group_masks(producers_by_group, finals)
    for member in members:
        member.channel_mask.assign(_member_mask(member, masks))
    return True


_SCHEDULE_KEY = "tfjoint_schedule"


@serializable
class PreparedModel(PhaseSwitchedTraining, keras.Model):
    """The model `tfjoint.prepare` returns: a Functional model that carries its `JointSchedule`.

    `train_step` first updates the channel masks (when channels are pruned),
    then is tf_keras's own. With `quant_start_step > 0`, `fit` traces it once
    for the float steps and once for the quantized ones
    (`tfjoint.train.phases`). Everything else is a plain tf_keras Functional
    model, saved and loaded as one (registered as "tfjoint>PreparedModel"),
    with the schedule in its config.

    Args:
      inputs, outputs, name, trainable: those of `keras.Model(inputs, outputs)`
        (the same signature, so tf_keras saves it as a Functional model).
      schedule: (keyword) the `JointSchedule` the model's quantizers were
        built from.
    """

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        schedule = kwargs.pop("schedule", None)
        super().__init__(inputs, outputs, name=name, trainable=trainable, **kwargs)
        self._tfjoint_schedule = schedule

    @property
    def schedule(self) -> JointSchedule | None:
        """The `JointSchedule` this model trains on."""
        return self._tfjoint_schedule

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """tf_keras's `compile`, which also takes Keras 3 optimizers and losses (a Keras 3 user's own objects), and
        dicts keyed by the user's output layer names (`{"classes": ...}`, where this model's output is
        'quant_classes')."""
        loss = self._by_output_name(loss)
        loss = ({key: as_tf_keras(value, keras.losses) for key, value in loss.items()} if isinstance(loss, dict)
                else as_tf_keras(loss, keras.losses))
        for name in ("loss_weights", "weighted_metrics"):
            if name in kwargs:
                kwargs[name] = self._by_output_name(kwargs[name])
        return super().compile(optimizer=as_tf_keras(optimizer, keras.optimizers), loss=loss,
                               metrics=self._by_output_name(metrics), **kwargs)

    def _by_output_name(self, value):
        """`value` with the keys of a dict that name the user's output layers renamed to this model's outputs (a
        model whose outputs are a dict keeps the user's keys: tf_keras matches by them)."""
        if not isinstance(value, dict) or not self.output_names or isinstance(self._nested_outputs, dict):
            return value
        names = {output_name(name): name for name in self.output_names}
        return {key if key in self.output_names else names.get(key, key): item for key, item in value.items()}

    def _labels_by_output_name(self, args, kwargs):
        """`fit`'s or `evaluate`'s arguments with a dict of labels (or of validation labels) keyed as the outputs,
        in arrays or in a `tf.data.Dataset` of `(x, y[, sample_weight])`."""
        args = list(args)
        if args:
            args[0] = self._dataset_by_output_name(args[0])
        elif "x" in kwargs:
            kwargs["x"] = self._dataset_by_output_name(kwargs["x"])
        if len(args) > 1:
            args[1] = self._by_output_name(args[1])
        elif "y" in kwargs:
            kwargs["y"] = self._by_output_name(kwargs["y"])
        validation = kwargs.get("validation_data")
        if isinstance(validation, tuple) and len(validation) > 1:
            kwargs["validation_data"] = (validation[0], self._by_output_name(validation[1]), *validation[2:])
        elif validation is not None:
            kwargs["validation_data"] = self._dataset_by_output_name(validation)
        return args, kwargs

    def _dataset_by_output_name(self, data):
        if not isinstance(data, tf.data.Dataset):
            return data
        spec = data.element_spec
        if not (isinstance(spec, tuple) and len(spec) > 1 and isinstance(spec[1], dict)):
            return data
        if list(self._by_output_name(dict.fromkeys(spec[1]))) == list(spec[1]):
            return data
        return data.map(lambda *element: (element[0], self._by_output_name(element[1]), *element[2:]))

    def fit(self, *args, **kwargs):
        """`fit`, whose labels may be a dict keyed by the user's output layer names."""
        args, kwargs = self._labels_by_output_name(args, kwargs)
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        """tf_keras's `evaluate`, whose labels may be a dict keyed by the user's output layer names."""
        args, kwargs = self._labels_by_output_name(args, kwargs)
        return super().evaluate(*args, **kwargs)

    def compile_from_config(self, config):
        """tf_keras's, which skips a model whose `compile` is its own: this one's takes the same arguments, so a
        .keras file restores the model compiled, with its optimizer's state, as a plain Functional model would."""
        from tf_keras.src.optimizers import optimizer as optimizer_module
        from tf_keras.src.saving import saving_lib

        self.compile(**saving_lib.deserialize_keras_object(config))
        if isinstance(getattr(self, "optimizer", None), optimizer_module.Optimizer) and self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        update_channel_masks(self)
        return super().train_step(data)

    def get_config(self):
        config = super().get_config()
        if self._tfjoint_schedule is not None:
            config[_SCHEDULE_KEY] = self._tfjoint_schedule.to_dict()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        schedule = config.pop(_SCHEDULE_KEY, None)
        model = super().from_config(config, custom_objects)
        model.set_schedule(JointSchedule.from_dict(schedule) if schedule is not None else None)
        return model

    def set_schedule(self, schedule: JointSchedule | None) -> None:
        """Records the schedule (loading does; its quantizers were built from it)."""
        self._tfjoint_schedule = schedule

    @contextlib.contextmanager
    def schedule_set_for(self, total_steps: int):
        """Within the block, a schedule without `end_step` is set as for a fit of `total_steps` steps; after it,
        unset again (so that a training-mode call before `fit`, such as the conversion check's, can run)."""
        schedule = self._tfjoint_schedule
        if schedule is None or schedule.is_resolved:
            yield
            return
        saved = self._schedule_dicts()
        before = [dict(d) for d in saved]
        self.resolve_schedule(total_steps)
        try:
            yield
        finally:
            for decay, values in zip(saved, before):
                decay.clear()
                decay.update(values)
            self._tfjoint_schedule = schedule

    def _schedule_dicts(self) -> list[dict]:
        """Every PolynomialDecay argument dict built from the schedule (configs, channel specs, quantizers)."""
        found = []
        for layer in self.layers:
            config = getattr(layer, "quantize_config", None)
            if not isinstance(config, JointQuantizeConfig):
                continue
            found += [decay for decay in ([config.schedule] if config.schedule else [])
                      + ([config.channels["schedule"]] if config.channels else []) if "class_name" not in decay]
            found += [quantizer.schedule for _, quantizer, _ in _tfmot.weight_vars(layer)
                      if isinstance(quantizer, PrunedKernelQuantizer) and "class_name" not in quantizer.schedule]
        return found

    def resolve_schedule(self, total_steps: int) -> JointSchedule | None:
        """Sets a schedule without `end_step` for a fit of `total_steps` steps, in the schedule and in every
        quantizer and channel spec built from it (`fit` does, before its first step is traced; a custom training
        loop calls it once itself). A schedule with an `end_step` is left as it is."""
        schedule = self._tfjoint_schedule
        if schedule is None or schedule.is_resolved:
            return schedule
        resolved = schedule.resolved(total_steps)
        for decay in self._schedule_dicts():  # a user's own PruningSchedule keeps its own steps
            decay.update(end_step=resolved.end_step, frequency=resolved.frequency)
        self._tfjoint_schedule = resolved
        return resolved


def group_masks(model) -> dict[str, np.ndarray]:
    """Each channel group's current mask (1 = kept), read from its first producer."""
    found: dict[str, np.ndarray] = {}
    for member in channel_members(model):
        if member.producer and member.group is not None and member.group not in found:
            found[member.group] = member.channel_mask.numpy()
    return found
