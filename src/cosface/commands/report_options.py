"""What `cosface eval` and `cosface infer` share: the options of a verification run and its output."""
from __future__ import annotations

import argparse
import json
import sys

from cosface.commands import device


def add_report_options(p: argparse.ArgumentParser, *, device_help: str) -> None:
    p.add_argument("--features-out", metavar="FILE.mat", help="with --lfw: save the pair features (reference layout)")
    p.add_argument("--plot", metavar="FILE.png", help="write the ROC curve(s) to a PNG")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, metavar="N", help="image decoding threads (default: up to 8)")
    p.add_argument("--device", default="auto", type=device, help=device_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def check_extras(args: argparse.Namespace) -> None:
    """Before any embedding starts: --plot needs matplotlib (the `plot` extra) and a name it can write."""
    if args.plot:
        from cosface.optional import check
        from cosface.plotting import figure_format

        check("matplotlib", purpose="--plot")
        figure_format(args.plot)


def print_reports(args: argparse.Namespace, reports: dict) -> None:
    """Reports keyed by what was evaluated: notes on stderr, the tables (or one JSON object) on stdout."""
    if args.features_out:
        print(f"pair features written to {args.features_out}", file=sys.stderr)
    if args.plot:
        from cosface.evaluation import plot_roc

        plot_roc({f"{name} ({r.protocol})": r.roc() for name, r in reports.items()}, args.plot)
        print(f"ROC curve written to {args.plot}", file=sys.stderr)
    if args.json:
        dicts = {name: r.to_json_dict() for name, r in reports.items()}
        print(json.dumps(dicts if len(dicts) > 1 else next(iter(dicts.values())), indent=2))
    else:
        print("\n\n".join(r.format() for r in reports.values()))
