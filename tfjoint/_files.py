"""Writing files so that nothing is lost: checked paths and atomic replaces."""

import os
import tempfile

from tfjoint import errors

__all__ = ["atomic_write_bytes", "atomic_write_files", "atomic_write_text", "atomic_write_texts",
           "checked_output_path"]


def checked_output_path(path, argument: str) -> str:
    """`path` as a str, once it is known that a file can be written there.

    Raises:
      errors.ConfigError: not a path, a directory, a missing or unwritable
        directory; the message names `argument` and says what to do.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise errors.ConfigError(f"`{argument}` must be a file path; received {type(path).__name__} {path!r}.")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise errors.ConfigError(
            f"`{argument}` '{path}' is a directory; give a file path such as '{os.path.join(path, 'model.tflite')}'."
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise errors.ConfigError(
            f"`{argument}`: directory '{directory}' does not exist; create it first (os.makedirs).")
    if not os.access(directory, os.W_OK):
        raise errors.ConfigError(
            f"`{argument}`: directory '{directory}' is not writable; choose a directory you can write to."
        )
    return path


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_temporary(path: str, data: bytes) -> str:
    """`data` in a new temp file beside `path`, flushed to disk; returns its name.

    `mkstemp` creates files readable by their owner only; the file gets the
    permissions `open()` would have given it (0666 minus the umask).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_files(contents: dict[str, bytes]) -> None:
    """Writes every file in full to a temp file first, then renames them all into place.

    Readers see the old files or the whole new ones, never a partial write; if
    any write fails, no file is replaced.
    """
    written: dict[str, str] = {}
    try:
        for path, data in contents.items():
            written[path] = _write_temporary(path, data)
        for path, tmp in written.items():
            os.replace(tmp, path)
    finally:
        for tmp in written.values():
            if os.path.exists(tmp):
                os.unlink(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temp file in the same directory and a rename."""
    atomic_write_files({path: data})


def atomic_write_text(path: str, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_texts(texts: dict[str, str]) -> None:
    """`atomic_write_files` for UTF-8 texts."""
    atomic_write_files({path: text.encode("utf-8") for path, text in texts.items()})
