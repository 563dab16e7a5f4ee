"""The command's `--data`: an .npz of arrays, or a folder of images with one sub-folder per class.

Both come back as the same dict of numpy arrays (`x_train`, `y_train`,
`x_val`, `y_val`, `x_calib`), checked against the model's input with each
problem named by the flag and the key (or folder) a command user can change.
"""

import os

import numpy as np

from tfjoint import errors
from tfjoint.data import collect_inputs

__all__ = ["load_data", "check_exists", "check_against_model", "color_mode_for", "REQUIRED_KEYS", "COLOR_MODES"]

REQUIRED_KEYS = ("x_train", "y_train", "x_val", "y_val")
# Image channels -> how `image_dataset_from_directory` reads a folder for them.
COLOR_MODES = {1: "grayscale", 3: "rgb", 4: "rgba"}
_CALIBRATION_SAMPLES = 200


def _load_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except Exception as error:
        raise errors.DataError(f"--data: cannot read '{path}' as .npz: {error}") from error
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise errors.DataError(f"--data: '{path}' lacks {missing}; it has {sorted(data)}.")
    return data


def color_mode_for(model, color_mode: str = "auto") -> str:
    """--color_mode, or for "auto" the mode that gives the model's input its channel count (rgb if unknown)."""
    if color_mode != "auto":
        return color_mode
    channels = model.inputs[0].shape[-1] if len(model.inputs) == 1 and model.inputs[0].shape.rank == 4 else None
    return COLOR_MODES.get(int(channels), "rgb") if channels is not None else "rgb"


def _load_image_folder(path: str, image_shape: tuple[int, int] | None, validation_split: float,
                       seed: int, color_mode: str = "rgb") -> dict[str, np.ndarray]:
    """Images as float32 (0-255, as `image_dataset_from_directory` gives them), split seeded into train/val."""
    from tfjoint._keras import keras

    if image_shape is None:
        raise errors.ConfigError(f"--data '{path}' is a folder of images: give --image_size (e.g. --image_size=96x96), "
                                 "the size your model takes.")
    classes = sorted(entry for entry in os.listdir(path) if os.path.isdir(os.path.join(path, entry)))
    if len(classes) < 2:
        raise errors.DataError(f"--data: folder '{path}' has {len(classes)} class sub-folder(s) {classes}; give one "
                               "sub-folder of images per class (at least two).")
    try:
        dataset = keras.utils.image_dataset_from_directory(path, image_size=image_shape, batch_size=None, seed=seed,
                                                           color_mode=color_mode,
                                                           shuffle=True, label_mode="int")
    except Exception as error:
        raise errors.DataError(f"--data: cannot read the images in '{path}': {error}") from error
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if len(images) < 4:
        raise errors.DataError(f"--data: folder '{path}' holds {len(images)} images; give at least a few per class.")
    x, y = np.stack(images).astype(np.float32), np.asarray(labels, np.int64)
    n_val = max(1, int(round(len(x) * validation_split)))
    return {"x_train": x[n_val:], "y_train": y[n_val:], "x_val": x[:n_val], "y_val": y[:n_val],
            "x_calib": x[n_val:n_val + _CALIBRATION_SAMPLES], "class_names": np.asarray(dataset.class_names)}


def check_exists(path: str) -> None:
    """A `--data` path that is neither a file nor a folder, named."""
    if not os.path.exists(path):
        raise errors.DataError(f"--data: no file or folder at '{path}' (expected an .npz with "
                               f"{', '.join(REQUIRED_KEYS)}, or a folder with one sub-folder of images per class).")


def load_data(path: str, image_shape: tuple[int, int] | None = None, validation_split: float = 0.2,
              seed: int = 0, color_mode: str = "rgb") -> dict[str, np.ndarray]:
    """`--data` as arrays: an .npz file's, or a class-per-folder image directory's (split with `validation_split`,
    read in `color_mode`)."""
    if os.path.isdir(path):
        data = _load_image_folder(path, image_shape, validation_split, seed, color_mode)
        data["_folder"] = np.asarray(True)
        return data
    if not os.path.isfile(path):
        raise errors.DataError(f"--data: no file or folder at '{path}' (expected an .npz with "
                               f"{', '.join(REQUIRED_KEYS)}, or a folder with one sub-folder of images per class).")
    return _load_npz(path)


def check_against_model(data: dict[str, np.ndarray], model, source: str) -> None:
    """Each input array against the model's input shape, a problem named by `--data` and the key (for an image
    folder, by the flags that size and colour its images)."""
    if "_folder" in data:
        expected, found = tuple(model.inputs[0].shape[1:]), tuple(data["x_train"].shape[1:])
        if expected != found and not all(e is None or e == f for e, f in zip(expected, found)):
            raise errors.DataError(
                f"--data: the images in '{source}' load as {found} (height, width, channels), the model takes "
                f"{expected}: set --image_size={expected[0]}x{expected[1]} and --color_mode="
                f"{COLOR_MODES.get(expected[-1], 'rgb')} (or leave --color_mode=auto).")
        data.pop("_folder")
    for key in ("x_train", "x_val", "x_calib"):
        if key in data:
            collect_inputs(data[key], model, f"--data {source} '{key}'", max_samples=2)
    for x_key, y_key in (("x_train", "y_train"), ("x_val", "y_val")):
        if len(data[y_key]) != len(data[x_key]):
            raise errors.DataError(f"--data {source}: '{y_key}' has {len(data[y_key])} labels for "
                                   f"{len(data[x_key])} samples in '{x_key}'; give one label per sample.")
