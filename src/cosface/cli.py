"""`cosface` command line: one subcommand per module in cosface.commands.

Each command module defines `add_parser(subparsers)` (which sets `func`) and keeps its heavy
imports inside the handler, so `cosface --help` stays fast. User mistakes (CosfaceError) become one
line on stderr and exit status 2; Ctrl-C is exit status 130. Progress bars (stderr) are drawn only
when stderr is a terminal.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from cosface import __version__
from cosface.errors import CosfaceError
from cosface.fsio import os_reason

# Order is the order shown in --help.
COMMANDS = [
    "config",
    "train",
    "eval",
    "compare",
    "plot",
    "export",
    "infer",
    "embed",
    "verify",
    "detect",
    "align",
    "import_insightface",
    "gallery",
    "serve",
    "pack",
    "unpack",
    "synth",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosface",
        description="Train, evaluate, export and serve CosFace face-recognition models.",
    )
    parser.add_argument("--version", action="version", version=f"cosface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"cosface.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not _is_terminal(sys.stderr):
        # A bar drawn into a log file or a CI console is a stream of carriage returns: bars only on a terminal.
        for no_bar in ("no_progress", "quiet"):     # every command's "no progress bar" flag
            if hasattr(args, no_bar):
                setattr(args, no_bar, True)
    try:
        rc = args.func(args)
    except CosfaceError as e:
        print(f"cosface {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # The environment failing under a command (disk full, permissions, a vanished file) where no
        # CosfaceError names it: still one line, with the path the OS gave and its reason.
        where = f"{e.filename}: " if e.filename else ""
        print(f"cosface {args.command}: error: {where}{os_reason(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cosface {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # replaced or closed streams
        return False
