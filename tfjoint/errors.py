"""Errors tfjoint raises. Each also inherits the built-in users already catch.

Errors that later code decides on carry what it decides with as attributes
(never as text to parse): `UnsafeFileError.references`,
`TargetUnreachableError.target`, `ValidationError.report`.
"""


class TfjointError(Exception):
    """Base class of every tfjoint error."""


class ConfigError(TfjointError, ValueError):
    """An argument of prepare/export is out of range or inconsistent."""


class TargetUnreachableError(ConfigError):
    """A sparsity target no allocation can reach under the per-layer cap (`max_sparsity`)."""

    def __init__(self, message: str, target: float, max_sparsity: float):
        super().__init__(message)
        self.target = target
        self.max_sparsity = max_sparsity


class ModelTypeError(TfjointError, TypeError):
    """The model is not a tf_keras Sequential/Functional model."""


class ModelStructureError(TfjointError, ValueError):
    """The model's structure cannot be prepared (nested, already wrapped, ...)."""


class UnsupportedLayerError(TfjointError, ValueError):
    """A layer cannot be pruned or quantized the way the user asked."""


class UnsafeFileError(TfjointError, ValueError):
    """A model file names code that loading it would run (outside the allowlist), and `safe_mode` is on.

    Attributes:
      file: the file refused.
      references: each class or function refused, dotted (`pydoc.pipepager`).
    """

    def __init__(self, message: str, file: str | None = None, references: tuple[str, ...] = ()):
        super().__init__(message)
        self.file = file
        self.references = tuple(references)


class DataError(TfjointError, ValueError):
    """Representative or validation data has the wrong shape, dtype or values."""


class ExportError(TfjointError, RuntimeError):
    """The converter failed, or its output is not what tfjoint promises."""


class DeviceError(ExportError):
    """The device's runtime (TensorFlow Lite Micro) cannot run the file: `operator` and `tensor` say where."""

    def __init__(self, message: str, operator: str | None = None, tensor: str | None = None):
        super().__init__(message)
        self.operator = operator
        self.tensor = tensor


class ValidationError(TfjointError):
    """The exported model failed validation. `report` holds every measurement."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report
