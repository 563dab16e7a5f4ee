"""The `tfjoint` command's flags: declared here once, with bounds, read by nothing else.

`config_from_flags` turns the parsed flags into a `RunConfig`; the rest of the
command works on that object only.
"""

from absl import flags

__all__ = ["define_flags", "config_from_flags"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Declares the command's flags in `flag_values` (idempotent)."""
    if "target_sparsity" in flag_values:
        return
    fv = dict(flag_values=flag_values)
    flags.DEFINE_string("model", None, "Saved tf_keras float model: .h5, .keras or a SavedModel directory. "
                        "Omit (with --data) to run the embedded digits default.", **fv)
    flags.DEFINE_string("data", None, ".npz file with x_train, y_train, x_val, y_val (and optionally x_calib).", **fv)
    flags.DEFINE_string("out", "tfjoint_out", "Output directory (created if missing).", **fv)
    flags.DEFINE_float("target_sparsity", 0.8, "Fraction of zeros in every pruned kernel.", lower_bound=0.0, upper_bound=0.99, **fv)
    flags.DEFINE_integer("epochs", 10, "Fine-tuning epochs (joint pruning + QAT, one fit).", lower_bound=1, **fv)
    flags.DEFINE_integer("batch_size", 32, "Fine-tuning batch size.", lower_bound=1, **fv)
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate for fine-tuning.", lower_bound=0.0, **fv)
    flags.DEFINE_float("quant_start", 0.0, "When fake quantization starts, as a fraction of the fine-tuning steps "
                       "(0 = from the first step).", lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("prune_end", 0.5, "When target sparsity is reached, as a fraction of the fine-tuning steps.",
                       lower_bound=0.01, upper_bound=1.0, **fv)
    flags.DEFINE_float("max_accuracy_drop", 0.02, "Fail if int8 accuracy is more than this below float (fraction).",
                       lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("min_agreement", 0.95, "Fail if top-1 agreement of int8 with its Keras model is below this.",
                       lower_bound=0.0, upper_bound=1.0, **fv)
    flags.DEFINE_float("min_sqnr_db", 15.0, "Fail if any int8 output's SQNR against Keras is below this (dB).", **fv)
    flags.DEFINE_enum("loss", "auto", ["auto", "sparse_categorical_crossentropy", "categorical_crossentropy",
                                       "binary_crossentropy", "mse"],
                      "Fine-tuning loss; auto: sparse categorical for integer labels, categorical for one-hot, else mse.", **fv)
    flags.DEFINE_integer("float_epochs", 15, "Embedded default only: epochs to train the float digits CNN.", lower_bound=1, **fv)
    flags.DEFINE_integer("seed", 0, "Random seed.", **fv)


def config_from_flags(values=None):
    """A `RunConfig` from the parsed flags (every RunConfig field is a flag of the same name)."""
    import dataclasses

    from tfjoint.pipeline import RunConfig  # heavy (TensorFlow): import only after parsing

    values = values or flags.FLAGS
    return RunConfig(**{field.name: getattr(values, field.name) for field in dataclasses.fields(RunConfig)})
