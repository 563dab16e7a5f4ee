"""The `tfjoint` command (also `python -m tfjoint`): absl flags -> RunConfig -> run().

Exit status: 0 passed validation; 1 the file failed validation or could not be
made or run where it must (after training: report.json, and error.log with the
traceback, are written); 2 bad flags or inputs refused before any work starts,
each with one line naming the flag or file; 3 an unexpected error (a bug, or a
model tfjoint does not handle yet): one line on stderr, the traceback in
`<out>/error.log` and, after training, report.json with what is known.
`--help` lists the command's own flags by group. TensorFlow's own log lines
(C++ and Python) are silenced unless --verbosity is 1 or more; tfjoint's
progress (what runs, for how long) is shown either way.
"""

import importlib
import os
import re
import sys
import threading

from absl import app, flags, logging

from tfjoint.app import flags as tfjoint_flags

EXIT_PASSED, EXIT_FAILED_VALIDATION, EXIT_BAD_INPUT, EXIT_UNEXPECTED = 0, 1, 2, 3
# What the command needs beyond the library: `pip install "tfjoint[app]"`.
APP_REQUIREMENTS = {"matplotlib": "matplotlib", "sklearn": "scikit-learn"}


_HELP = ("--help", "-h", "-?", "--helpshort")


def _parse_flags(argv):
    if any(arg in _HELP for arg in argv[1:]):  # absl would list only the main module's flags: none
        try:
            print(tfjoint_flags.help_text("tfjoint"))
        except BrokenPipeError:  # `tfjoint --help | head`
            pass
        sys.exit(EXIT_PASSED)
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"tfjoint: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _import_silenced(module_name: str):
    """Imports a module with file descriptor 2 pointed at /dev/null.

    TensorFlow 2.21 logs from C++ at import time, before its logging is set
    up, so TF_CPP_MIN_LOG_LEVEL does not reach those lines.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        return importlib.import_module(module_name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# What TensorFlow, the converter and LiteRT print from C++ straight to stderr, whatever TF_CPP_MIN_LOG_LEVEL says.
_CHATTER = re.compile(r"^(fully_quantize: |INFO: Created TensorFlow Lite|WARNING: All log messages before absl|"
                      r"[IWE]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\]|To enable the following instructions)")


class _QuietStderr:
    """Forwards what is written to file descriptor 2, C++ included, except TensorFlow's chatter (`_CHATTER`)."""

    def __enter__(self):
        sys.stderr.flush()
        self._real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._reader = os.fdopen(read_end, "rb")
        self._thread = threading.Thread(target=self._forward, daemon=True)
        self._thread.start()
        return self

    def _forward(self):
        for line in self._reader:
            if not _CHATTER.match(line.decode(errors="replace")):
                os.write(self._real, line)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._real, 2)  # closes the pipe's last write end: the reader sees the end
        self._thread.join(timeout=5)
        os.close(self._real)
        return False


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _OwnMessagesOnly(logging.logging.Filter):
    """absl's handler passes tfjoint's progress (records logged from tfjoint's own files) and anything at WARNING or
    above, not TensorFlow's INFO lines."""

    def filter(self, record):
        return record.levelno >= logging.logging.WARNING or os.path.abspath(record.pathname).startswith(_PACKAGE)


class _ProgressFormatter(logging.PythonFormatter):
    """Progress lines as `tfjoint: <message>` with the time, not absl's `I1128 05:00:00.000 ...` prefix."""

    def format(self, record):
        import time

        return f"[{time.strftime('%H:%M:%S', time.localtime(record.created))}] {record.getMessage()}"


def missing_app_requirements() -> list[str]:
    """The packages the command needs that cannot be imported (pip names)."""
    missing = []
    for module, package in APP_REQUIREMENTS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def main(argv):
    if len(argv) > 1:
        print(f"tfjoint: unexpected arguments {argv[1:]}; all options are --flags (see --help).", file=sys.stderr)
        return EXIT_BAD_INPUT
    missing = missing_app_requirements()
    if missing:
        print(f"tfjoint: the tfjoint command needs {' and '.join(missing)}, which the library alone does not: "
              'install them with: pip install "tfjoint[app]"', file=sys.stderr)
        return EXIT_BAD_INPUT
    from tfjoint import errors  # no TensorFlow in it, nor in the flags' checks: bad flags are said at once

    try:
        config = tfjoint_flags.config_from_flags()
    except errors.TfjointError as error:
        print(f"tfjoint: {str(error).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    quiet = flags.FLAGS.verbosity < 1
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _import_silenced("tensorflow")
        _import_silenced("ai_edge_litert.interpreter")
    from tfjoint.app.pipeline import RunFailed, run  # imports TensorFlow: after the log level is set

    # tfjoint's progress goes through absl at INFO; TensorFlow's Python side logs (SavedModel, converter
    # chatter) through its own "tensorflow" logger, quieted here unless asked for.
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().setFormatter(_ProgressFormatter())
    if quiet:
        logging.get_absl_handler().addFilter(_OwnMessagesOnly())
        import logging as python_logging

        import tensorflow as tf

        tf.get_logger().setLevel(python_logging.ERROR)
        tf.autograph.set_verbosity(0)

    try:
        result = run(config)
    except errors.ValidationError as error:
        out = flags.FLAGS.out
        print(error.report)
        print(f"tfjoint: validation failed, report in {os.path.join(out, 'report.json')}: {error.report.failures[0]}",
              file=sys.stderr)
        return EXIT_FAILED_VALIDATION
    except RunFailed as failed:
        print(f"tfjoint: {failed}", file=sys.stderr)
        if isinstance(failed.cause, errors.TfjointError):
            return EXIT_FAILED_VALIDATION
        print("tfjoint: this is unexpected; please report it with the model's layer list.", file=sys.stderr)
        return EXIT_UNEXPECTED
    except (errors.TfjointError, FileNotFoundError) as error:
        print(f"tfjoint: {str(error).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # anything else is tfjoint's problem, not the user's input: say so, keep the trace
        return _unexpected(error, flags.FLAGS.out)
    if not result.is_chief:
        print("tfjoint: this worker trained its share; the chief writes the outputs.")
        return EXIT_PASSED
    print(result.report)
    print(f"tfjoint: wrote {', '.join(sorted(os.path.basename(p) for p in result.files.values()))} to {result.out_dir}")
    logging.info("tfjoint: done")
    return EXIT_PASSED


def _unexpected(error: Exception, out: str) -> int:
    """One line naming the error and where its traceback went (`<out>/error.log`); exit status 3."""
    import traceback

    text = "".join(traceback.format_exception(error))
    where = os.path.join(out, "error.log")
    try:
        os.makedirs(out, exist_ok=True)
        with open(where, "w") as handle:
            handle.write(text)
    except OSError:
        where = "stderr (the output directory is not writable)"
        print(text, file=sys.stderr)
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    print(f"tfjoint: unexpected error {type(error).__name__}{': ' + first[:300] if first else ''}. The traceback is "
          f"in {where}; please report it with the model's layer list.", file=sys.stderr)
    return EXIT_UNEXPECTED


def _main_quietly(argv):
    if flags.FLAGS.verbosity >= 1:
        return main(argv)
    with _QuietStderr():
        return main(argv)


def run_main():
    """Console-script entry point."""
    tfjoint_flags.define_flags()
    app.run(_main_quietly, flags_parser=_parse_flags)


if __name__ == "__main__":
    run_main()
