"""Data errors a user fixes by changing the data directory or a ``data.*`` config value.

``train.py`` prints these as one line, without a traceback.
"""


class DataError(RuntimeError):
    """Base class of every data error that names its own fix."""


class DataConfigError(DataError, ValueError):
    """A ``data.*`` config value is invalid."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """Files are missing and could not be downloaded."""


class CorruptDatasetError(DataError):
    """Files are present but truncated or not in the expected format."""
