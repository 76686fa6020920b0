"""The commands README.md and docs/*.md print work as printed, from the project root inside the activated
environment (README.md#install).

Every command line of their code blocks, and every inline one in backticks, that calls ``python`` or ``make``
is checked without running it: ``python train.py SUB ...`` parses (in-process, with ``--print_config``), a
script or ``python -m`` module of the project parses its arguments (its ``argparse`` stopped right after
parsing), ``python study.py SUB NAME`` names a study of configs/studies/, ``make X`` names a Makefile target
and the variables it reads, and every repository path a command names exists (outputs under ``runs/`` and
absolute paths excepted). A command with a placeholder (``FILE``, ``<run>``, ``...``) is a template: it is
checked all but the parse; a script or module named without arguments is a mention of the tool: it must exist.
The links of README.md, requirements.txt and docs/*.md must lead to files and headings that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import runpy
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import ROOT
from train import SUBCOMMANDS
from train import main as train_main

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILE = (ROOT / "Makefile").read_text()
RULES = re.findall(r"^([\w.-]+(?: [\w.-]+)*):(?!=)", MAKEFILE, re.MULTILINE)
TARGETS = {name for rule in RULES for name in rule.split()}
DEFAULT_CONFIG = re.search(r"^CONFIG\s*\?=\s*(\S+)", MAKEFILE, re.MULTILINE)[1]

#: The first word of a command: ``python`` (as inside the environment), ``make``, or a program of ``.venv/bin/``.
PROGRAM = re.compile(r"python3?|make|\S*\.venv/bin/\S+")
#: What may come before it: a shell prompt, a subshell, variable assignments, a batch system's launcher.
PREFIX = re.compile(r"\$|\(|\w+=\S*|srun|nohup|time")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
#: A word that stands for something the reader fills in.
PLACEHOLDER = re.compile(r"\.\.\.|<[^>]*>|\b[A-Z][A-Z_]{2,}\b")


def commands_of_line(line: str) -> list[tuple[str, ...]]:
    """The commands of one shell line (comments dropped, chains split), each as its words from the program on."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # not shell: printed output with an unbalanced quote
        return []
    commands, current = [], []
    for word in [*words, ";"]:
        if word not in SEPARATORS:
            current.append(word)
            continue
        while current and not PROGRAM.fullmatch(current[0]) and PREFIX.fullmatch(current[0]):
            current.pop(0)
        if len(current) > 1 and PROGRAM.fullmatch(current[0]):  # a program named alone is not a command
            commands.append(tuple(current))
        current = []
    return commands


def documented_commands(text: str) -> list[tuple[int, tuple[str, ...]]]:
    """``(line number, words)`` of every command in a Markdown text: the lines of its code blocks
    (``\\``-continued lines joined) and its inline code spans."""
    found, fenced, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if fenced:
            start = start if pending else number
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            found += [(start, command) for command in commands_of_line(pending)]
            pending = ""
        else:
            for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", line):
                if PROGRAM.match(span.removeprefix("$ ")):
                    found += [(number, command) for command in commands_of_line(span)]
    return found


def is_template(words: tuple[str, ...]) -> bool:
    return any(PLACEHOLDER.search(word.partition("=")[2] if re.match(r"\w+=", word) else word) for word in words)


def path_problems(words: tuple[str, ...]) -> list[str]:
    """The repository paths among ``words`` (``--opt=PATH`` and ``VAR=PATH`` too) that do not exist."""
    problems = []
    for word in words:
        value = word.partition("=")[2] if re.match(r"(--)?[\w.-]+=", word) else word
        for candidate in shlex.split(value) if " " in value else [value]:
            if "/" not in candidate or "://" in candidate or PLACEHOLDER.search(candidate):
                continue
            if candidate.startswith(("-", "/", "$", "~", "..", "runs/")):  # options, absolute, outside, outputs
                continue
            if not (any(ROOT.glob(candidate)) if any(c in candidate for c in "*?[") else (ROOT / candidate).exists()):
                problems.append(f"{candidate}: no such file in the repository")
    return problems


class ArgumentsParsed(Exception):
    """Raised in place of returning from ``argparse``: the command line parsed, the script stops there."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def parsed_arguments(run, argv: list[str]) -> tuple[argparse.Namespace | None, list[str]]:
    """Run a script (``run()``) with ``sys.argv = argv`` until its ``argparse`` has parsed them:
    ``(the namespace or None after --help, [])``, or ``(None, [argparse's complaint])``."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise ArgumentsParsed(parse_args(self, args, namespace))

    stderr = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
        mock.patch.object(sys, "argv", argv),
        mock.patch.object(sys, "path", list(sys.path)),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(stderr),
        contextlib.chdir(ROOT),
    ):
        try:
            run()
        except ArgumentsParsed as parsed:
            return parsed.namespace, []
        except SystemExit as exit_:
            if exit_.code in (0, None):
                return None, []
            return None, [f"{' '.join(argv)}: {(stderr.getvalue().strip().splitlines() or ['exit ' + str(exit_.code)])[-1]}"]
    return None, [f"{argv[0]} returned without parsing its arguments"]


def train_problems(args: list[str]) -> list[str]:
    """``python train.py ARGS``: a subcommand that parses, with the config files it names."""
    if not args or args[0] not in (*SUBCOMMANDS, "--help", "-h"):
        return [f"train.py: the subcommand is one of {', '.join(SUBCOMMANDS)}, not {args[:1]}"]
    kept = []
    for word in args:  # the checkpoint is a run's output, not the docs': parse without it
        if kept and kept[-1] == "--ckpt_path":
            kept.pop()
        elif not word.startswith("--ckpt_path="):
            kept.append(word)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(ROOT):
        try:
            train_main([*kept, "--print_config"])
        except SystemExit as exit_:
            if exit_.code in (0, None):
                return []
    return [f"train.py {' '.join(args)}: {(err.getvalue().strip().splitlines() or ['did not parse'])[-1]}"]


def study_problems(namespace: argparse.Namespace | None) -> list[str]:
    if namespace is None or namespace.study.suffix or PLACEHOLDER.search(str(namespace.study)):
        return []  # --help, a file path (checked as a path), or a template
    study_file = ROOT / "configs" / "studies" / f"{namespace.study}.yaml"
    return [] if study_file.is_file() else [f"study {namespace.study}: no {study_file.relative_to(ROOT)}"]


def python_problems(args: list[str], template: bool) -> list[str]:
    if any(PLACEHOLDER.search(word) for word in args[:2]):
        return []  # `python -m ...`, `python benchmarks/...`: the kind of command, not one
    if args[:1] == ["-m"] and len(args) > 1:
        module, rest = args[1], args[2:]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return [f"python -m {module}: no such module"]
        top = module.split(".")[0]
        if template or not rest or not ((ROOT / top).is_dir() or (ROOT / f"{top}.py").is_file()):
            return []  # a template, the tool named without arguments, or a library's module (pytest): its own business
        return parsed_arguments(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), [module, *rest])[1]
    if not args or not args[0].endswith(".py"):
        return [f"python {' '.join(args)}: neither a script nor -m MODULE"]
    script, rest = ROOT / args[0], args[1:]
    if not script.is_file():
        return [f"{args[0]}: no such script"]
    if args[0] == "train.py":
        return [] if template else train_problems(rest)
    if template or not rest or "parse_args(" not in script.read_text():  # never run a script for real here
        return []
    namespace, problems = parsed_arguments(lambda: runpy.run_path(str(script), run_name="__main__"), [str(script), *rest])
    return problems or (study_problems(namespace) if args[0] == "study.py" else [])


def make_problems(args: list[str], template: bool) -> list[str]:
    """``make [TARGET ...] [VAR=value ...]``: Makefile targets, variables it reads, the configs and studies they name."""
    variables = dict(word.split("=", 1) for word in args if re.match(r"\w+=", word))
    problems = [
        f"make {word}: no such target in the Makefile"
        for word in args
        if "=" not in word and word not in TARGETS and not PLACEHOLDER.search(word)
    ]
    problems += [f"make {name}=...: the Makefile never reads $({name})" for name in variables if f"$({name})" not in MAKEFILE]
    study = variables.get("STUDY")
    if study and not PLACEHOLDER.search(study) and not (ROOT / "configs" / "studies" / f"{study}.yaml").is_file():
        problems.append(f"make STUDY={study}: no configs/studies/{study}.yaml")
    if "train" in args and not template and not problems:  # the recipe: train.py fit --config $(CONFIG) $(ARGS)
        config = variables.get("CONFIG", DEFAULT_CONFIG)
        problems += train_problems(["fit", "--config", config, *shlex.split(variables.get("ARGS", ""))])
    return problems


def problems_of(words: tuple[str, ...]) -> list[str]:
    """What is wrong with a documented command; ``[]`` when it works as printed."""
    program, *args = words
    if ".venv/bin/" in program:
        return [f"{program}: written as run inside the activated environment, it is `{Path(program).name}` (README.md#install)"]
    template = is_template(words)
    found = path_problems(tuple(args))
    return found + (make_problems(args, template) if program == "make" else python_problems(args, template))


#: Every documented command, once, with the places that print it (``docs/x.md:12``).
COMMANDS: dict[tuple[str, ...], list[str]] = {}
for doc in DOCS:
    for line, words in documented_commands(doc.read_text()):
        COMMANDS.setdefault(words, []).append(f"{doc.relative_to(ROOT)}:{line}")


def test_the_docs_print_commands_of_every_kind():
    """The extraction finds what the docs hold, so that the checks below are not vacuous."""
    first_words = {words[1] if words[0].startswith("python") else words[0] for words in COMMANDS}
    assert {"train.py", "study.py", "-m", "make"} <= first_words
    assert any(word.startswith("benchmarks/") for word in first_words)
    assert len(COMMANDS) > 60
    assert ("make", "train") in COMMANDS and ("python", "train.py", "fit", "--help") in COMMANDS


def test_commands_are_extracted_from_code_blocks_and_inline_code():
    text = """Run `python train.py fit --help` or `make data`; `--not a command`, `python` alone.
```bash
$ python study.py run gan_mnist_100 --workers 2 && python study.py table gan_mnist_100   # both
(cd /tmp/old && PYTHONPATH=. python benchmarks/gan_throughput.py \\
  --repeats 3)
make study STUDY=vae  # a comment with `python x.py`
  (a) genlab's loop    31.61 it/s
```"""
    assert documented_commands(text) == [
        (1, ("python", "train.py", "fit", "--help")),
        (1, ("make", "data")),
        (3, ("python", "study.py", "run", "gan_mnist_100", "--workers", "2")),
        (3, ("python", "study.py", "table", "gan_mnist_100")),
        (4, ("python", "benchmarks/gan_throughput.py", "--repeats", "3")),
        (6, ("make", "study", "STUDY=vae")),
    ]


@pytest.mark.parametrize("words", list(COMMANDS), ids=[places[0] for places in COMMANDS.values()])
def test_every_documented_command_works_as_printed(words):
    assert problems_of(words) == [], f"{shlex.join(words)} (in {', '.join(COMMANDS[words])})"


@pytest.mark.parametrize(
    "command, complaint",
    [
        ("python train.py fit --config configs/no_such.yaml", "configs/no_such.yaml"),
        ("python train.py fit --config configs/gan_mnist.yaml --model.init_args.no_such 1", "no_such"),
        ("python train.py fit --config configs/gan_mnist.yaml --trainer.max_epochs many", "max_epochs"),
        ("python train.py fitt --config configs/gan_mnist.yaml", "subcommand"),
        ("make no-such-target", "no such target"),
        ("make train CONFIG=configs/no_such.yaml", "configs/no_such.yaml"),
        ("make train ARGS='--trainer.no_such 1'", "no_such"),
        ("make study STUDY=no_such", "configs/studies/no_such.yaml"),
        ("make train EPOCHS=3", "never reads $(EPOCHS)"),
        ("python study.py run no_such_study --workers 2", "configs/studies/no_such_study.yaml"),
        ("python study.py frobnicate wgan_ring8", "frobnicate"),
        ("python study.py run wgan_ring8 --workers 0", "--workers"),
        ("python -m cli.no_such_module", "no such module"),
        ("python -m cli.export demote runs/x/lenet_mnist.pt", "demote"),
        ("python benchmarks/no_such.py", "no such script"),
        ("python benchmarks/gan_throughput.py --no-such-flag 1", "--no-such-flag"),
        ("python -m pytest tests/test_no_such_*.py", "tests/test_no_such_*.py"),
        (".venv/bin/python train.py fit --config configs/gan_mnist.yaml", "activated environment"),
    ],
)
def test_a_broken_command_is_caught(command, complaint):
    found = problems_of(tuple(shlex.split(command)))
    assert found and complaint in "\n".join(found), found


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (outside code blocks): lower case, punctuation
    dropped, spaces as hyphens, a repeated heading numbered."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        fenced ^= line.lstrip().startswith("```")
        if not fenced and (heading := re.match(r"#{1,6} +(.+?) *#* *$", line)):
            slug = anchor = re.sub(r"[^\w\- ]", "", heading[1].lower()).replace(" ", "-")
            repeats = 0
            while anchor in anchors:
                repeats += 1
                anchor = f"{slug}-{repeats}"
            anchors.add(anchor)
    return anchors


def links(text: str) -> list[str]:
    """The targets of a text's Markdown links and of its plain ``FILE.md#anchor`` references, web addresses left out."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"(?<![\w/])(?<!\]\()([\w./-]+\.md#[\w-]+)", text)
    return [target for target in targets if not re.match(r"\w+://|mailto:", target)]


def link_problems(source: Path, text: str) -> list[str]:
    """The links of ``text``, in ``source``, whose file or heading is missing."""
    problems = []
    for target in links(text):
        file, _, anchor = target.partition("#")
        path = (source.parent / file) if file else source
        if not path.exists():
            problems.append(f"{source.relative_to(ROOT)}: {target}: no file {file}")
        elif anchor and anchor not in heading_anchors(path.read_text()):
            problems.append(f"{source.relative_to(ROOT)}: {target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("source", ["README.md", "requirements.txt", *(f"docs/{doc.name}" for doc in DOCS[1:])])
def test_every_link_leads_to_a_file_and_heading_that_exist(source):
    assert link_problems(ROOT / source, (ROOT / source).read_text()) == []


def test_requirements_and_readme_point_to_each_other():
    """requirements.txt says where installing is explained, and that section says what installs it."""
    assert "README.md#install" in links((ROOT / "requirements.txt").read_text())
    assert "install" in heading_anchors((ROOT / "README.md").read_text())
    assert "make setup" in (ROOT / "README.md").read_text().partition("## Install")[2].partition("\n## ")[0]


def test_a_broken_link_is_caught():
    text = "[ok](docs/design.md#randomness-resume-and-ddp), [gone](docs/no_such.md) (see README.md#no-such-section)"
    assert link_problems(ROOT / "README.md", text) == [
        "README.md: docs/no_such.md: no file docs/no_such.md",
        "README.md: README.md#no-such-section: no heading #no-such-section in README.md",
    ]
