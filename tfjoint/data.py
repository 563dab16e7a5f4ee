"""Turn the many shapes users give data in into one numpy array per model input.

Accepted: a numpy array (single-input models), a list/tuple of arrays or a
dict keyed by input name (multi-input), a `tf.data.Dataset`, or a generator /
callable yielding any of those (batched or single samples). Dataset and
generator elements of the form `(x, y)` are split into inputs and labels.
Every problem is reported against the argument and model input it concerns.
"""

import itertools
from typing import Any

import numpy as np

from tfjoint import errors
from tfjoint._keras import tf

__all__ = ["model_inputs", "collect_inputs", "split_validation", "outputs_as_list", "sample_inputs_of"]


class _Spec(tuple):
    """(name, shape without batch) of a model input, and its dtype (`.dtype`: float32, or an integer type)."""

    dtype: np.dtype


def _input_name(tensor) -> str:
    """The name a dict of inputs is keyed by: the input layer's (a Keras 3 tensor has its own name besides, say
    'keras_tensor_3' beside the layer's 'input_layer_3'; Keras 3 keys dicts by the layer's, as tf_keras does)."""
    operation = getattr(getattr(tensor, "_keras_history", None), "operation", None)
    return operation.name if operation is not None else tensor.name.split(":")[0]


def _spec(tensor) -> _Spec:
    spec = _Spec((_input_name(tensor), tuple(tensor.shape[1:])))
    try:
        spec.dtype = np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype)
    except TypeError:
        spec.dtype = np.dtype(np.float32)
    return spec


def model_inputs(model) -> list[tuple[str, tuple]]:
    """(name, shape without batch) of each model input, in model order (each also carries its `.dtype`)."""
    return [_spec(t) for t in model.inputs]


def outputs_as_list(outputs) -> list[np.ndarray]:
    """What `model.predict` returned, one array per output in `model.outputs` order.

    A dict (named outputs) comes back in sorted key order, which is how Keras
    flattens it into `model.outputs`.
    """
    if isinstance(outputs, dict):
        return [np.asarray(outputs[key]) for key in sorted(outputs)]
    return [np.asarray(o) for o in outputs] if isinstance(outputs, (list, tuple)) else [np.asarray(outputs)]


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, tf.Tensor):
        return value.numpy()
    return np.asarray(value)


def _as_input_list(element, specs, argument) -> list:
    names = [name for name, _ in specs]
    if isinstance(element, dict):
        missing = [n for n in names if n not in element]
        if missing:
            raise errors.DataError(
                f"`{argument}`: dict is missing model inputs {missing}; it has keys {sorted(element)}.")
        return [element[n] for n in names]
    if len(specs) == 1:
        return [element]
    if not isinstance(element, (list, tuple)) or len(element) != len(specs):
        raise errors.DataError(
            f"`{argument}`: the model has {len(specs)} inputs {names}; give a list of {len(specs)} arrays "
            f"(or a dict keyed by input name), received {type(element).__name__}."
        )
    return list(element)


def _iterate(data, argument):
    if isinstance(data, tf.data.Dataset):
        return iter(data)
    if callable(data):
        data = data()
    try:
        return iter(data)
    except TypeError:
        raise errors.DataError(f"`{argument}`: cannot iterate over a {type(data).__name__}.") from None


def _is_streamed(data) -> bool:
    return isinstance(data, tf.data.Dataset) or callable(data) or (
        hasattr(data, "__next__") and not isinstance(data, (np.ndarray, list, tuple, dict))
    )


def _check_arrays(arrays, specs, argument) -> list[np.ndarray]:
    checked = []
    for array, spec in zip(arrays, specs):
        name, shape = spec
        array = _to_numpy(array)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise errors.DataError(
                f"`{argument}`: input '{name}' has dtype {array.dtype}; give numeric arrays (float32).")
        if array.ndim == len(shape) and all(e is None or e == a for e, a in zip(shape, array.shape)):
            array = array[None]  # a single sample
        expected = (None,) + shape
        if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, array.shape)):
            raise errors.DataError(
                f"`{argument}`: input '{name}' has shape {array.shape}, but the model expects {expected} "
                "(batch first). Give arrays of that shape (resize or reshape the data as the model was trained)."
            )
        if array.shape[0] == 0:
            raise errors.DataError(f"`{argument}`: input '{name}' is empty; give at least one sample.")
        # float32, or an integer input's own type (token ids, masks): a float token id would index nothing.
        target = getattr(spec, "dtype", np.dtype(np.float32))
        array = array.astype(target if np.issubdtype(target, np.integer) or target == np.dtype(bool) else np.float32)
        if not np.all(np.isfinite(array.astype(np.float64))):
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise errors.DataError(
                f"`{argument}`: input '{name}' holds {bad} NaN/inf values; clean or drop those samples.")
        checked.append(array)
    counts = {a.shape[0] for a in checked}
    if len(counts) > 1:
        raise errors.DataError(f"`{argument}`: inputs have different numbers of samples {sorted(counts)}.")
    return checked


def collect_inputs(data, model, argument: str, max_samples: int | None = None) -> list[np.ndarray]:
    """One float32 array per model input, checked against the model's input shapes."""
    specs = model_inputs(model)
    if data is None:
        raise errors.DataError(f"`{argument}` is required here.")
    if not _is_streamed(data):
        arrays = _as_input_list(data, specs, argument)
        arrays = _check_arrays(arrays, specs, argument)
        return [a[:max_samples] for a in arrays] if max_samples else arrays
    inputs, _ = _collect_stream(data, specs, argument, max_samples)
    return inputs


def _collect_stream(data, specs, argument, max_samples) -> tuple[list[np.ndarray], Any]:
    chunks, labels, count = [], [], 0
    for element in itertools.islice(_iterate(data, argument), 100000):
        y = None
        two_inputs = len(specs) == 2 and _looks_like_inputs(element, specs)
        if isinstance(element, tuple) and len(element) == 2 and not two_inputs:
            element, y = element
        arrays = _check_arrays(_as_input_list(element, specs, argument), specs, argument)
        chunks.append(arrays)
        labels.append(None if y is None else _to_numpy(y))
        count += arrays[0].shape[0]
        if max_samples and count >= max_samples:
            break
    if not chunks:
        raise errors.DataError(f"`{argument}` yielded no samples; give at least one.")
    inputs = [np.concatenate([c[i] for c in chunks])[:max_samples] for i in range(len(specs))]
    y = None
    given = [label for label in labels if label is not None]
    if len(given) == len(labels):
        y = np.concatenate([np.atleast_1d(label) for label in given])[: inputs[0].shape[0]]
    return inputs, y


def _looks_like_inputs(element, specs) -> bool:
    """For 2-input models: is this 2-tuple the two inputs (rather than (x, y))?"""
    try:
        return all(_to_numpy(a).shape[-len(s):] == s for a, (_, s) in zip(element, specs) if len(s))
    except Exception:
        return False


def split_validation(validation_data, model, argument: str = "validation_data"):
    """Returns (inputs, labels) where labels is None, an array, or a list per output."""
    specs = model_inputs(model)
    if _is_streamed(validation_data):
        return _collect_stream(validation_data, specs, argument, None)
    x, y = validation_data, None
    if isinstance(validation_data, tuple) and len(validation_data) == 2 and not (
        len(specs) == 2 and _looks_like_inputs(validation_data, specs)
    ):
        x, y = validation_data
    inputs = _check_arrays(_as_input_list(x, specs, argument), specs, argument)
    if y is not None:
        labels: Any
        if isinstance(y, dict):
            labels = {k: None if v is None else _to_numpy(v) for k, v in y.items()}
            given = [v for v in labels.values() if v is not None]
        elif isinstance(y, (list, tuple)):
            labels = [None if v is None else _to_numpy(v) for v in y]
            given = [v for v in labels if v is not None]
        else:
            labels = _to_numpy(y)
            given = [labels]
        for label in given:
            if label.ndim == 0 or label.shape[0] != inputs[0].shape[0]:
                raise errors.DataError(
                    f"`{argument}`: {label.shape[0] if label.ndim else 'scalar'} labels for {inputs[0].shape[0]} "
                    "samples; give one label per sample."
                )
            if np.issubdtype(label.dtype, np.floating) and not np.all(np.isfinite(label)):
                raise errors.DataError(f"`{argument}`: labels hold NaN/inf values; clean or drop those samples.")
        y = labels
    return inputs, y


def sample_inputs_of(model, count: int = 4) -> list[np.ndarray]:
    """Seeded inputs of the model's shapes (uniform [0, 1); ones for integer inputs: a token id every vocabulary
    has, a padding mask that masks nothing): the file's structure does not depend on their values."""
    rng = np.random.default_rng(0)
    samples = []
    for tensor in model.inputs:
        shape = (count,) + tuple(d or 1 for d in tensor.shape[1:])
        dtype = tensor.dtype.as_numpy_dtype
        samples.append(rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.ones(shape, dtype))
    return samples
