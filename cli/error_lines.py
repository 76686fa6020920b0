"""The one line a user reads when a run fails for a reason they can fix.

genlab's own errors (:class:`core.errors.GenlabError`) already say it; errors of the libraries
(a Trainer argument Lightning refuses, a file the OS refuses, a config that is not text, W&B without
an account) are translated here. jsonargparse and Lightning wrap errors raised in ``__init__`` and
hooks, so the chain of causes is searched.
"""

from __future__ import annotations

import errno
import re

from lightning.pytorch.utilities.exceptions import MisconfigurationException

from core.errors import GenlabError

#: OS errors a user fixes by pointing genlab elsewhere or fixing the file system, named by their file.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}

#: Lines of jsonargparse's explanations that say nothing the user can act on.
PARSER_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:"
    r"|Expected a <class 'NoneType'>|Given value type:|Given value:)"
)

WANDB_ACCOUNT_ERRORS = ("UsageError", "AuthenticationError", "CommError")


def user_message(error: BaseException | None) -> str | None:
    """One line saying what the user can fix, if ``error`` or one of its causes is of a kind the user can fix."""
    while error is not None:
        if isinstance(error, GenlabError):
            return str(error)
        if isinstance(error, MisconfigurationException):  # Lightning: a Trainer argument that cannot work
            return f"{one_line(str(error))} (the Trainer's options: python train.py fit --help)"
        if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS and error.filename:
            return (
                f"{error.filename}: {error.strerror}. Fix its permissions or free space, or point the run elsewhere "
                "(--trainer.default_root_dir, the logger's save_dir, data.data_dir)."
            )
        if isinstance(error, UnicodeDecodeError):
            return (
                f"{undecodable_file(error)} is not a text file in UTF-8 ({error.reason} at byte {error.start}): "
                "a config is YAML text; pass the right file, or re-save it as UTF-8."
            )
        if type(error).__module__.startswith("wandb") and type(error).__name__ in WANDB_ACCOUNT_ERRORS:
            return (
                f"W&B: {one_line(str(error)).rstrip('.')}. Log in with `wandb login` (or set WANDB_API_KEY), "
                "or log offline: --trainer.logger configs/logger/offline.yaml."
            )
        error = error.__cause__ or error.__context__
    return None


def undecodable_file(error: UnicodeDecodeError) -> str:
    """The file whose bytes ``error`` could not decode: the path that the innermost ``read_text``
    (jsonargparse's or pathlib's) was reading, found in the traceback's frames."""
    path, traceback = "a config file", error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "read_text" and "self" in frame.f_locals:
            path = str(frame.f_locals["self"])
        traceback = traceback.tb_next
    return path


def one_line(message: str) -> str:
    """jsonargparse's indented, multi-line explanation of a bad value, as one line of what matters."""
    lines = (line.strip().removeprefix("- ") for line in message.splitlines())
    return " ".join(line for line in lines if line and not PARSER_NOISE.match(line))
