"""Progress of long phases: what is running, how long it has run, and how long it took.

`Phases.run("conversion")` logs the phase's start at absl INFO level, a
heartbeat every `HEARTBEAT_SECONDS` while it runs (conversion of a large model
is one opaque call that takes minutes), and its duration at the end; the
durations are kept (`seconds`) for the report. The `tfjoint` command shows
these lines; from Python they appear with `absl.logging.set_verbosity(INFO)`.
"""

import contextlib
import threading
import time

from absl import logging

__all__ = ["Phases", "HEARTBEAT_SECONDS"]

HEARTBEAT_SECONDS = 15.0


class Phases:
    """Times named phases and logs their progress (one object per `export_tflite` or command run)."""

    def __init__(self, prefix: str = "tfjoint"):
        self.prefix = prefix
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def run(self, name: str, detail: str = ""):
        """Logs and times the phase `name` (a heartbeat every 15 s while it runs)."""
        started = time.perf_counter()
        logging.info("%s: %s%s ...", self.prefix, name, f" ({detail})" if detail else "")
        done = threading.Event()

        def heartbeat():
            while not done.wait(HEARTBEAT_SECONDS):
                logging.info("%s: %s still running (%.0f s)", self.prefix, name, time.perf_counter() - started)

        thread = threading.Thread(target=heartbeat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            elapsed = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            logging.info("%s: %s done in %.1f s", self.prefix, name, elapsed)
