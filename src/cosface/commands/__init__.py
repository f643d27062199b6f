"""One module per `cosface` subcommand; see cosface.cli."""
from __future__ import annotations

import argparse

from cosface.config import DEVICE_NAMES, is_device_name


def device(text: str) -> str:
    """The argparse type of every --device: auto, cpu, cuda or cuda:N (train.device's values).

    Checked here so a typo is a usage error, not a torch traceback or a silent fall back to the CPU.
    """
    if is_device_name(text):
        return text
    raise argparse.ArgumentTypeError(f"expected {DEVICE_NAMES}, got {text!r}")
