"""`tfjoint.Distiller`: fine-tune a prepared model against its own float model, in the same fit.

Pruning and int8 rounding cost most where the network has least to spare;
distillation (Hinton et al., 2015) gives the student, the prepared model, a
richer target than the labels: the float model's softened outputs. Each
training step runs the teacher once (inference mode) and trains the student
on

    loss = alpha * task_loss(y, student) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

for classifier outputs (`t`, `s` logits; outputs that end in softmax or
sigmoid are turned back into logits with `log`, which softmax(. / T) does not
see the difference of), and the mean squared difference to the teacher for
real-valued outputs. As in the keras.io Distiller, the wrapper only trains:
`strip`, `export_tflite` and saving take `distiller.student` (they also
accept the Distiller itself and use its student), and resuming means
wrapping the reloaded student in a new Distiller.
"""

from tfjoint import errors
from tfjoint._keras import check_float_model, is_keras3_model, keras, serializable, tf
from tfjoint.losses import outputs_probabilities
from tfjoint.train.phases import PhaseSwitchedTraining
from tfjoint.train.prepared_model import update_channel_masks
from tfjoint.train.readback import is_prepared

__all__ = ["Distiller"]


def _logits(outputs, probabilities: bool):
    if not probabilities:
        return outputs
    return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))


@serializable
class Distiller(PhaseSwitchedTraining, keras.Model):
    """Trains a prepared `student` to match the labels and its float `teacher`.

    Example:
      joint = tfjoint.prepare(float_model, target_sparsity=0.9, end_step=2000)
      distiller = tfjoint.Distiller(joint, teacher=float_model, temperature=4.0, alpha=0.3)
      distiller.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
      distiller.fit(x, y, epochs=10, callbacks=tfjoint.callbacks())
      report = tfjoint.export_tflite(distiller.student, "model.tflite", ...)

    Args:
      student: the model `tfjoint.prepare` returned.
      teacher: the float model it was prepared from (tf_keras or Keras 3);
        never trained here.
      temperature: softens both distributions (T > 1 shows the teacher's
        ranking of the wrong classes).
      alpha: weight of the task loss; 1 - alpha goes to distillation.
    """

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(student, keras.Model) or not is_prepared(student):
            raise errors.ModelStructureError(
                f"`student`: expected the model tfjoint.prepare returned; received "
                f"{getattr(student, 'name', type(student).__name__)!r}, which holds no tfjoint quantizer."
            )
        if is_keras3_model(teacher):
            from tfjoint.bridge.keras3 import from_keras3

            teacher = from_keras3(teacher)
        check_float_model(teacher, argument="teacher")
        if len(teacher.outputs) != len(student.outputs):
            raise errors.ModelStructureError(
                f"`teacher` has {len(teacher.outputs)} outputs and `student` {len(student.outputs)}: distill a "
                "student from the float model it was prepared from."
            )
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise errors.ConfigError(f"`temperature` must be > 0; received {temperature!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise errors.ConfigError(f"`alpha` must be in [0, 1]; received {alpha!r}.")
        self.student = student
        self.teacher = teacher  # only ever called in inference mode; its weights get no gradient
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.updates_channel_masks = True  # train_step below does (see tfjoint.callbacks)
        self._probabilities = [outputs_probabilities(student, i) for i in range(len(student.outputs))]

    def _phase_model(self):
        return self.student  # its schedule and step counters decide float or quantized steps

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _distillation_loss(self, teacher_outputs, student_outputs):
        losses = []
        temperature = self.temperature
        for teacher_out, student_out, probabilities in zip(teacher_outputs, student_outputs, self._probabilities):
            if teacher_out.shape[-1] is not None and teacher_out.shape[-1] >= 2:
                soft_teacher = tf.nn.softmax(_logits(teacher_out, probabilities) / temperature)
                log_student = tf.nn.log_softmax(_logits(student_out, probabilities) / temperature)
                kl = tf.reduce_sum(soft_teacher * (tf.math.log(tf.clip_by_value(soft_teacher, 1e-7, 1.0))
                                                   - log_student), axis=-1)
                losses.append(tf.reduce_mean(kl) * temperature**2)
            else:
                losses.append(tf.reduce_mean(tf.square(teacher_out - student_out)))
        return tf.add_n(losses)

    def _trained(self):
        return self.student

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_outputs = tf.nest.flatten(self.teacher(x, training=False))
        update_channel_masks(self.student)
        with tf.GradientTape() as tape:
            student_outputs = self.student(x, training=True)
            task = self.compiled_loss(y, student_outputs, sample_weight, regularization_losses=self.student.losses)
            distillation = self._distillation_loss(teacher_outputs, tf.nest.flatten(student_outputs))
            loss = self.alpha * task + (1.0 - self.alpha) * distillation
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.compiled_metrics.update_state(y, student_outputs, sample_weight)
        results = {m.name: m.result() for m in self.metrics}
        results.update(loss=loss, task_loss=task, distillation_loss=distillation)
        return results

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self.student(x, training=False)
        loss = self.compiled_loss(y, outputs, sample_weight, regularization_losses=self.student.losses)
        self.compiled_metrics.update_state(y, outputs, sample_weight)
        return dict({m.name: m.result() for m in self.metrics}, loss=loss)

    def get_config(self):
        return {"temperature": self.temperature, "alpha": self.alpha}
