"""Every error a user can fix, in one hierarchy; entry points print it as one line and exit.

A :class:`GenlabError`'s message names what is wrong and the fix, in one line; ``train.py``,
``study.py`` and ``python -m cli.export`` print it as ``<program>: error: <message>`` (:func:`fail`)
and exit with :data:`USER_ERROR_EXIT` (2), without a traceback. Each subclass also keeps the builtin
base its callers may already catch (``ValueError`` for a bad value, ``FileNotFoundError`` for missing
files, ``OSError`` for a failed write).
"""

from __future__ import annotations

import sys
from typing import NoReturn

USER_ERROR_EXIT = 2  # a usage error, as argparse exits; 128 + N is "stopped by signal N", 1 "some trials failed"


class GenlabError(Exception):
    """An error the user fixes; ``str(error)`` is one line that names the fix."""


class ConfigError(GenlabError, ValueError):
    """A config value is invalid (``model.*``, ``trainer.*``, a callback's); the message names the key and the valid choices."""


class DataError(GenlabError, RuntimeError):
    """Base class of every data error that names its own fix."""


class DataConfigError(DataError, ValueError):
    """A ``data.*`` config value is invalid."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """Files are missing and could not be downloaded."""


class CorruptDatasetError(DataError):
    """Files are present but truncated or not in the expected format."""


class NonFiniteLossError(GenlabError, FloatingPointError):
    """A loss became NaN or infinite; the message says where and what to change."""


class StudyError(GenlabError):
    """A study file, its database or its folder cannot be used as asked; the message says how to fix it."""


def fail(program: str, message: str, code: int = USER_ERROR_EXIT) -> NoReturn:
    """Print ``<program>: error: <message>`` as the last line of stderr and exit with ``code``."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(code)
