"""What the CLI does about its terminal and pipes: a reader that left (exit 141, quietly), and
usage lines written as Click and man pages write them."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

__all__ = ["BROKEN_PIPE", "console_broken_pipe", "plain_argument_metavars", "quiet_stdout"]

BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer the pipe's reader left (git does the same)


def quiet_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a closed pipe is dropped at exit,
    not reported as ``BrokenPipeError`` by the interpreter."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # no real stdout (tests capture it)


def console_broken_pipe() -> None:
    quiet_stdout()
    raise typer.Exit(BROKEN_PIPE)


def plain_argument_metavars() -> None:
    """Typer 0.28 shows a required argument as ``{JOB}`` in the usage line; Click and every
    man page write ``JOB`` (optional ones stay ``[JOB]``)."""
    from typer.core import TyperArgument

    original = TyperArgument.make_metavar
    if getattr(original, "_plain", False):
        return

    def make_metavar(self: Any, ctx: Any, *, usage: bool = False) -> str:
        var = original(self, ctx, usage=usage)
        return var[1:-1] if var.startswith("{") and var.endswith("}") else var

    make_metavar._plain = True  # type: ignore[attr-defined]
    TyperArgument.make_metavar = make_metavar  # type: ignore[method-assign]
