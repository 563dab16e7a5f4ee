"""Errors tfjoint raises. Each also inherits the built-in users already catch."""


class TfjointError(Exception):
    """Base class of every tfjoint error."""


class ConfigError(TfjointError, ValueError):
    """An argument of prepare/export is out of range or inconsistent."""


class ModelTypeError(TfjointError, TypeError):
    """The model is not a tf_keras Sequential/Functional model."""


class ModelStructureError(TfjointError, ValueError):
    """The model's structure cannot be prepared (nested, already wrapped, ...)."""


class UnsupportedLayerError(TfjointError, ValueError):
    """A layer cannot be pruned or quantized the way the user asked."""


class UnsafeFileError(TfjointError, ValueError):
    """A model file holds code (Python bytecode) that loading it would run, and `safe_mode` is on."""


class DataError(TfjointError, ValueError):
    """Representative or validation data has the wrong shape, dtype or values."""


class ExportError(TfjointError, RuntimeError):
    """The converter failed, or its output is not what tfjoint promises."""


class ValidationError(TfjointError):
    """The exported model failed validation. `report` holds every measurement."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report
