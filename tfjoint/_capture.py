"""Output that C++ code writes straight to file descriptors 1 and 2, captured instead of printed.

The TFLite converter's calibration prints `fully_quantize: 0, inference_type: 6, ...` and MLIR notes from C++;
TensorFlow Lite Micro prints its allocation complaints to stderr. Python's `sys.stdout` redirection does not
reach them; pointing the descriptors at a temporary file does, and the text is kept for error messages.
"""

import contextlib
import os
import sys
import tempfile

__all__ = ["captured_output"]


@contextlib.contextmanager
def captured_output(descriptors=(1, 2)):
    """Points `descriptors` at a temporary file for the block; yields a callable that returns what was written."""
    with tempfile.TemporaryFile() as captured:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError):
                pass
        saved = {fd: os.dup(fd) for fd in descriptors}
        try:
            for fd in descriptors:
                os.dup2(captured.fileno(), fd)

            def read() -> str:
                captured.seek(0)
                return captured.read().decode(errors="replace")

            yield read
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
