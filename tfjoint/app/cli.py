"""The `tfjoint` command (also `python -m tfjoint`): absl flags -> RunConfig -> run().

Exit status: 0 passed validation, 1 failed validation (report still written),
2 bad arguments or unreadable inputs, each with one line naming the flag or file.
TensorFlow's C++ logging is silenced unless --verbosity is 1 or more.
"""

import importlib
import os
import sys

from absl import app, flags, logging

from tfjoint.app import flags as tfjoint_flags

EXIT_PASSED, EXIT_FAILED_VALIDATION, EXIT_BAD_INPUT = 0, 1, 2
# What the command needs beyond the library: `pip install "tfjoint[app]"`.
APP_REQUIREMENTS = {"matplotlib": "matplotlib", "sklearn": "scikit-learn"}


def _parse_flags(argv):
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
    quiet = flags.FLAGS.verbosity < 1
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _import_silenced("tensorflow")
        _import_silenced("ai_edge_litert.interpreter")
    from tfjoint import errors  # imports TensorFlow: after the log level is set
    from tfjoint.app.pipeline import run

    if quiet:  # TensorFlow's Python side logs through absl at INFO (SavedModel, converter chatter)
        logging.set_verbosity(logging.WARNING)

    try:
        config = tfjoint_flags.config_from_flags()
        result = run(config)
    except errors.ValidationError as error:
        out = flags.FLAGS.out
        print(error.report)
        print(f"tfjoint: validation failed, report in {os.path.join(out, 'report.json')}: {error.report.failures[0]}",
              file=sys.stderr)
        return EXIT_FAILED_VALIDATION
    except (errors.TfjointError, FileNotFoundError) as error:
        print(f"tfjoint: {str(error).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not result.is_chief:
        print("tfjoint: this worker trained its share; the chief writes the outputs.")
        return EXIT_PASSED
    print(result.report)
    print(f"tfjoint: wrote {', '.join(sorted(os.path.basename(p) for p in result.files.values()))} to {result.out_dir}")
    logging.info("done")
    return EXIT_PASSED


def run_main():
    """Console-script entry point."""
    tfjoint_flags.define_flags()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run_main()
