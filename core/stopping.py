"""Stopping on SIGINT (Ctrl+C) and SIGTERM (a batch system, ``kill``): the one place that installs
the handlers, notes a signal, and ends Lightning's training loop.

Two ways to answer a signal, and every part of genlab uses one of them:

- :func:`raise_stopped`: stop at once by raising :class:`Stopped`, where nothing is half-done
  (loading, the final measurements, a study worker waiting for its next trial);
- :class:`NoteSignals`: only take note, for code that must reach a safe point first (a training step
  must not stop between its discriminator and generator updates; a study worker must see its run
  write ``last.ckpt``). Repeated signals print one line saying what is still under way, and never
  cut that work short; Ctrl+\\ (SIGQUIT) still quits at once.

The training loop itself stops through :func:`stop_training_loop`, raised by genlab's loader where
the next step would begin (``datamodules.loaders.ResumableBatches``), after the callback
``callbacks.run_guards.SaveOnInterrupt`` has seen the note at a batch end.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, Any], Any] | int | None


class Stopped(BaseException):
    """SIGINT or SIGTERM where no safe point is left to wait for: raised by :func:`raise_stopped`, at
    once. A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it."""

    def __init__(self, received: signal.Signals) -> None:
        super().__init__(received.name)
        self.signal = received


def raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum))


class NoteSignals:
    """A signal handler that records the first signal (``received``) and answers each later one with
    the line ``again`` (``{signal}`` is replaced by its name) on stderr, written with ``os.write``,
    which is safe inside a handler."""

    def __init__(self, again: str) -> None:
        self.again = again
        self.received: signal.Signals | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            os.write(2, (self.again.format(signal=signal.Signals(signum).name) + "\n").encode())
        self.received = self.received or signal.Signals(signum)


def handle_signals(handler: Handler) -> dict[int, Handler]:
    """Make ``handler`` answer SIGINT and SIGTERM; returns the handlers it replaced, for :func:`restore_signals`."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, handler)
    return previous


def restore_signals(previous: dict[int, Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def exit_with(line: str) -> Handler:
    """A handler that writes ``line`` (``{signal}`` replaced by the signal's name) and ends the process
    at once with 128 + the signal: for the seconds before anything is written (``train.py`` while its
    libraries load). ``os._exit``, not ``SystemExit``: an exception raised in the middle of an import
    can fail again in the interpreter's clean-up (a ``RecursionError`` was seen), and there is nothing
    to clean up yet."""

    def handler(signum: int, frame: Any) -> NoReturn:
        os.write(2, (line.format(signal=signal.Signals(signum).name) + "\n").encode())
        os._exit(128 + signum)

    return handler


def stop_training_loop() -> NoReturn:
    """End Lightning's training loop the way its own SIGTERM handling does: ``SIGTERMException``, which
    the loop answers by calling ``on_exception`` on every callback and returning ``trainer.interrupted``."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException  # here: core loads before Lightning (train.py)

    raise SIGTERMException
