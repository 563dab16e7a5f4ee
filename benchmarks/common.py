"""What the benchmarks share: tasks (models and bundled or generated data), timers, paired rounds, file helpers.

Every task trains its float model here, once per seed, so that every system
compared starts from the same weights (each from its own copy).
"""

import gzip
import math
import os
import statistics
import sys
import time
from typing import NamedTuple

import numpy as np
import tf_keras as keras

import tfjoint  # noqa: F401  (selects tf_keras before TensorFlow loads)
from tfjoint.app import digits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import keyword_spotting_conv1d as kws  # noqa: E402

NO_TOLERANCE = dict(max_accuracy_drop=1.0, min_agreement=0.0, min_sqnr_db=-1e9, max_mse_increase=1e9)


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training batch, and of the whole fit."""

    def on_train_begin(self, logs=None):
        self.steps, self._fit_start = [], time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(time.perf_counter() - self._start)

    def on_train_end(self, logs=None):
        self.fit_seconds = time.perf_counter() - self._fit_start


def steady_step_ratios(models: dict, data, batch, rounds: int, steps: int) -> tuple[dict, float]:
    """Each already-trained model's step time as a ratio to the float model's, per round.

    Every model trains on the same batches, after its schedule has finished
    (no mask updates), in interleaved rounds. Each round gives every model's
    median step divided by the float model's median step of that same round,
    so that the machine's slow drifts cancel; the order within a round is
    shuffled so no model always runs right after another. Each entry is (model, callbacks):
    TF-MOT's pruning wrapper needs its own callback. Returns the per-round
    ratios of each model, and the float model's median step in seconds.
    """
    x, y = data["x_train"][: batch * steps], data["y_train"][: batch * steps]
    per_round = {name: [] for name in models}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        medians = {}
        for name in order.permutation(list(models)):
            model, callbacks = models[name]
            timer = StepTimer()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=list(callbacks) + [timer])
            medians[name] = float(np.median(timer.steps[1:] or timer.steps))
        for name, seconds in medians.items():
            per_round[name].append(seconds / medians["float"])
    return per_round, medians["float"]


def paired_latency_ratios(contents: dict[str, bytes], reference: str, rounds: int,
                          kernels: str = "default") -> dict[str, list[float]]:
    """Each model's median 1-thread int8 latency over the reference model's, per interleaved round.

    Rounds shuffle the order, and each round's ratio is taken within the
    round, so the shared machine's drift cancels (as for the step times).
    """
    runners = {}
    for name, content in contents.items():
        summary = tfjoint.inspect.read_flatbuffer(content)
        inputs = [t.signature_name for t in summary.inputs]
        outputs = [t.signature_name for t in summary.outputs]
        runners[name] = tfjoint.inspect.TFLiteModel(content, inputs, outputs, num_threads=1, kernels=kernels)
    ratios = {name: [] for name in contents}
    order = np.random.default_rng(1)
    for _ in range(rounds):
        medians = {name: runners[name].median_latency_s(runs=100, warmup=10)
                   for name in order.permutation(list(runners))}
        for name, seconds in medians.items():
            ratios[name].append(seconds / medians[reference])
    return ratios


class Task(NamedTuple):
    model: keras.Model  # the pre-trained float model (never trained further)
    data: dict
    batch: int
    loss: str
    dense: tuple[str, ...] = ()  # layers every system leaves unpruned
    tfmot_qat: bool = True  # False: TF-MOT's QAT refuses the model (Conv1D)


def digits_task(seed, tiny):
    data = digits.load_digits(seed=seed)
    model = digits.train_float_model(data, epochs=3 if tiny else 15, seed=seed)
    return Task(model, data, 32, "sparse_categorical_crossentropy")


def conv1d_task(seed, tiny, dense=()):
    keras.utils.set_random_seed(seed)
    x_train, y_train = kws.make_clips(400 if tiny else 2000, seed=seed + 1)
    x_val, y_val = kws.make_clips(200 if tiny else 500, seed=seed + 100)
    model = kws.build_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    # Trained to convergence (checked once: 10 more float epochs moved the mean over the 3 seeds
    # by 0.2 pt; from 8 epochs they gained 2.5 pt), so that fine-tuning cannot pass off extra
    # float training as recovery.
    model.fit(x_train, y_train, epochs=2 if tiny else 30, batch_size=64, verbose=0)
    data = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_calib": x_train[:200]}
    return Task(model, data, 64, "sparse_categorical_crossentropy", dense=tuple(dense), tfmot_qat=False)


def conv1d_bn_model() -> keras.Model:
    """The keyword model in its usual audio form: Conv1D -> BatchNorm -> ReLU blocks."""
    inputs = keras.Input((kws.FRAMES, kws.FEATURES), name="mfcc")
    x = inputs
    for i in (1, 2):
        x = keras.layers.Conv1D(32, 5, use_bias=False, name=f"conv1d_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(kws.KEYWORDS, activation="softmax", name="keyword")(x))


def conv1d_bn_task(seed, tiny):
    """Conv1D+BatchNorm, which TF-MOT's QAT refuses: its best path is prune -> strip -> post-training int8."""
    keras.utils.set_random_seed(seed)
    x_train, y_train = kws.make_clips(400 if tiny else 2000, seed=seed + 1)
    x_val, y_val = kws.make_clips(200 if tiny else 500, seed=seed + 100)
    model = conv1d_bn_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=2 if tiny else 30, batch_size=64, verbose=0)
    data = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_calib": x_train[:200]}
    return Task(model, data, 64, "sparse_categorical_crossentropy", tfmot_qat=False)


def residual_digits_model(width: int = 32) -> keras.Model:
    """A small residual CNN for the digits: Conv+BN stem, two residual blocks (Add), a dense head."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for block in (1, 2):
        y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv1")(x)
        y = keras.layers.BatchNormalization(name=f"block{block}_bn1")(y)
        y = keras.layers.ReLU(name=f"block{block}_relu1")(y)
        y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv2")(y)
        y = keras.layers.BatchNormalization(name=f"block{block}_bn2")(y)
        x = keras.layers.Add(name=f"block{block}_add")([x, y])
        x = keras.layers.ReLU(name=f"block{block}_relu2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="classes")(x), name="residual")


def residual_task(seed, tiny):
    data = digits.load_digits(seed=seed)
    keras.utils.set_random_seed(seed)
    model = residual_digits_model(16 if tiny else 32)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data["x_train"], data["y_train"], epochs=3 if tiny else 15, batch_size=32, verbose=0)
    return Task(model, data, 32, "sparse_categorical_crossentropy")


def conv1d_dense_head_task(seed, tiny):
    """The Conv1D model with its 128-weight classifier left dense by every system."""
    return conv1d_task(seed, tiny, dense=("keyword",))


def mobilenet_task(seed, tiny):
    keras.utils.set_random_seed(seed)
    size, n = (32, 64) if tiny else (96, 640)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, weights=None, classes=10)
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)
    data = {"x_train": x, "y_train": y, "x_val": x[:64], "y_val": y[:64], "x_calib": x[:32]}  # timing and size only
    return Task(model, data, 32, "sparse_categorical_crossentropy")


TASKS = {"digits": digits_task, "conv1d": conv1d_task, "conv1d_dense_head": conv1d_dense_head_task,
         "conv1d_bn": conv1d_bn_task, "residual": residual_task, "mobilenet": mobilenet_task}


def fine_tune_and_export(task, student, trained, epochs: int, path: str):
    """Fits `trained` (the prepared `student`, or a Distiller around it) and exports `student` to `path`.

    Returns the export report and the fit's wall time in seconds.
    """
    data = task.data
    trained.compile(keras.optimizers.Adam(1e-3), task.loss, metrics=["accuracy"])
    started = time.perf_counter()
    trained.fit(data["x_train"], data["y_train"], batch_size=task.batch, epochs=epochs, verbose=0)
    fit_seconds = time.perf_counter() - started
    report = tfjoint.export_tflite(student, path, float_model=task.model, explain_layers=False,
                                   validation_data=(data["x_val"], data["y_val"]), **NO_TOLERANCE)
    return report, fit_seconds


def float_clone(model, loss):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.compile(keras.optimizers.Adam(1e-3), loss)
    return clone


def pruned_layer_names(task: Task) -> list[str]:
    """The layers every system prunes: tfjoint's prunable layers, minus the task's dense ones."""
    return [name for name in tfjoint.inspect.prunable_layers(task.model) if name not in task.dense]


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def entropy_bound_bytes(total: int, nonzero: int, bits_per_value: int = 8) -> float:
    """Size floor for sparse weights: mask entropy plus `bits_per_value` per non-zero."""
    if total == 0:
        return 0.0
    p = nonzero / total
    entropy = 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return (total * entropy + nonzero * bits_per_value) / 8.0


def write_text(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


def mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_text(values, fmt: str = ".2f", scale: float = 1.0) -> str:
    """"mean ± stdev" of the values that are not None, times `scale` (the spread only over two or more; "n/a" if
    there are none), for a results table."""
    mean, spread = mean_spread([None if v is None else v * scale for v in values])
    if mean is None:
        return "n/a"
    count = sum(v is not None for v in values)
    return f"{mean:{fmt}}" + (f" ± {spread:{fmt}}" if count > 1 else "")


def check_task_names(names) -> None:
    """Refuses unknown --models with the known ones (absl usage error)."""
    from absl import app

    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; choose from {sorted(TASKS)}")


def median_and_quartiles(values) -> tuple[float, float, float]:
    low, median, high = np.percentile(values, [25, 50, 75])
    return float(median), float(low), float(high)
