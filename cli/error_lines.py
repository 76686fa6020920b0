"""The one line a user reads when a run fails for a reason they can fix.

genlab's own errors (:class:`core.errors.GenlabError`) already say it; errors of the libraries
(a Trainer argument Lightning refuses, a file the OS refuses, a config that is not text, W&B without
an account) are translated here. jsonargparse and Lightning wrap errors raised in ``__init__`` and
hooks, so the chain of causes is searched. A key the parser refuses gets the closest keys it accepts
(:func:`did_you_mean`), and every key the line names is spelt as the user typed it (:func:`as_typed`).
"""

from __future__ import annotations

import difflib
import errno
import re
from collections.abc import Iterator

from jsonargparse import ArgumentParser
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

#: jsonargparse's words for a key it does not know: of a class's arguments, of a subcommand's or group's
#: options, or left over on the command line.
NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted|(?:Group '([^']+)' )?does not accept option '([^']+)'")
UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
#: The keys of the classes a refused argument was given to, outermost first (``model``, then ``loss``).
PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
#: A dotted key in a message (``data.batch_size``, ``--model.init_args.n_critic``), not in a path or a name.
DOTTED_KEY = re.compile(r"(?<![\w./])[A-Za-z_]\w*(?:\.\w+)+")
#: Suggested besides the closest key: those as close as it, within this similarity (difflib's ratio).
AS_CLOSE = 0.05


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


def did_you_mean(error: BaseException, args: list[str]) -> str:
    """``; did you mean --model.init_args.n_critic?``: for each key that ``error`` (jsonargparse's) says
    is not accepted, the closest keys that the parser refusing it accepts, spelt as the user typed the
    key (an option, or a config file's key); empty where none is close."""
    parser = refusing_parser(error)
    if parser is None:
        return ""
    message = str(error)
    unknown = [key for match in NOT_ACCEPTED.finditer(message) for key in refused_keys(match)]
    if (unrecognized := UNRECOGNIZED.search(message)) is not None:
        unknown += [word[2:].split("=", 1)[0] for word in unrecognized.group(1).split() if word.startswith("--")]
    typed = typed_keys(args)
    context = "".join(f"{key}.init_args." for key in PARSER_KEY.findall(message))  # where a config file put it
    accepted = accepted_keys(parser)
    phrases = []
    for key in dict.fromkeys(unknown):
        spelt = next((name for name in typed if name == key or name.endswith(f".{key}")), None)
        prefix = f"--{spelt[: len(spelt) - len(key)]}" if spelt is not None else context
        matches = [f"{prefix}{match}" for match in closest(key, accepted)]
        if matches:
            phrases.append((" or ".join(matches), f"--{spelt}" if spelt is not None else f"{context}{key}"))
    if len(phrases) == 1:
        return f"; did you mean {phrases[0][0]}?"
    return f"; did you mean {', '.join(f'{matches} (for {key})' for matches, key in phrases)}?" if phrases else ""


def refused_keys(match: re.Match) -> list[str]:
    """The key a :data:`NOT_ACCEPTED` match names, relative to the parser that refused it."""
    option, group, group_option = match.groups()
    return [option or (f"{group}.{group_option}" if group else group_option)]


def refusing_parser(error: BaseException) -> ArgumentParser | None:
    """The jsonargparse parser that refused a key: the subcommand's that a refusal names, or else the
    innermost parser at work where the innermost error of the chain was raised."""
    parser = None
    for link in causes(error):
        if isinstance(getattr(link, "subcommand_parser", None), ArgumentParser):
            return link.subcommand_parser
        traceback = link.__traceback__
        while traceback is not None:
            if isinstance(frame_self := traceback.tb_frame.f_locals.get("self"), ArgumentParser):
                parser = frame_self
            traceback = traceback.tb_next
    return parser


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and its chain of causes (or contexts), each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def accepted_keys(parser: ArgumentParser) -> list[str]:
    """The keys ``parser`` takes as options (``trainer.max_epochs``; a class's ``n_critic``), without the
    help of each class (``model.help``)."""
    options = (option for action in parser._actions for option in action.option_strings if option.startswith("--"))
    return list(dict.fromkeys(key for option in options if not (key := option[2:].removesuffix("+")).endswith(".help")))


def closest(key: str, accepted: list[str]) -> list[str]:
    """The accepted keys closest to ``key``: among those of its group (``trainer.``) where there are any,
    compared by their last part; else among all."""
    group, _, name = key.rpartition(".")
    siblings = [candidate for candidate in accepted if candidate.rpartition(".")[0] == group]
    if group and siblings:
        return [f"{group}.{match}" for match in closest_words(name, [sibling.rpartition(".")[2] for sibling in siblings])]
    return closest_words(key, accepted)


def closest_words(word: str, candidates: list[str]) -> list[str]:
    """difflib's close matches of ``word``, the closest and any others as close as it (:data:`AS_CLOSE`)."""
    matches = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    ratio = [difflib.SequenceMatcher(None, word, match).ratio() for match in matches]
    return [match for match, r in zip(matches, ratio) if r >= ratio[0] - AS_CLOSE]


def as_typed(message: str, args: list[str]) -> str:
    """``message`` with each key the user typed in ``args`` spelt as typed. The CLI takes a class's
    argument with or without ``init_args`` (``--data.batch_size 0``, ``--data.init_args.batch_size 0``),
    and the code that refuses a value (a datamodule's ``__init__``, the checkpoint contract) names it one way."""
    typed = {short_key(key): key for key in typed_keys(args) if "." in key}
    if not typed:
        return message
    return DOTTED_KEY.sub(lambda match: typed.get(short_key(match.group(0)), match.group(0)), message)


def typed_keys(args: list[str]) -> list[str]:
    """The keys of the options in ``args`` (``--data.init_args.batch_size 0``, ``--run_name=x``), as typed."""
    return [arg[2:].split("=", 1)[0] for arg in args if arg.startswith("--") and len(arg) > 2]


def short_key(key: str) -> str:
    """``key`` without its ``init_args`` parts: ``model.init_args.n_critic`` -> ``model.n_critic``."""
    return re.sub(r"\.init_args(?=\.)", "", key)
