"""One module per `cosface` subcommand; see cosface.cli."""
from __future__ import annotations

import argparse
import re


def device(text: str) -> str:
    """The argparse type of every --device: auto, cpu, cuda or cuda:N (train.device's values).

    Checked here so a typo is a usage error, not a torch traceback or a silent fall back to the CPU.
    """
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
