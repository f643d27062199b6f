"""`cosface compare RUN_OR_MODEL... --suite DIR`: two or more models side by side on the same sets."""
from __future__ import annotations

import argparse
import json
import os
import sys

from cosface.commands import device


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="evaluate two or more models on the same suite of sets; one table, one ROC picture",
        description="Run `cosface eval --suite DIR` for each model (a checkpoint, ONNX or TorchScript file, or a "
        "training run folder, whose newest checkpoint is used) and print the figures side by side: each set's "
        "k-fold accuracy, TAR at FAR 1e-5/1e-4/1e-3 over all pairs and IJB 1:N rank-1.",
    )
    p.add_argument("models", nargs="+", metavar="RUN_OR_MODEL", help="checkpoint, exported model or run folder")
    p.add_argument("--suite", required=True, metavar="DIR", help="folder of sets (LFW folders, *.bin, IJB folders)")
    p.add_argument("--names", metavar="A,B,...", help="column names, comma-separated (default: the paths)")
    p.add_argument("--protocol", choices=["insightface", "reference"], help="for .bin sets (default insightface)")
    p.add_argument("--plot", metavar="FILE.png", help="ROC curves of every model, one panel per set, in one PNG")
    p.add_argument("--json", action="store_true", help="print one JSON object {model: {set: report}}")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, metavar="N", help="image decoding threads (default: up to 8)")
    p.add_argument("--device", default="auto", type=device, help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    if len(args.models) < 2:
        args._parser.error("compare needs two or more models")
    names = args.names.split(",") if args.names else list(args.models)
    if len(names) != len(args.models) or len(set(names)) != len(names):
        args._parser.error(f"--names needs {len(args.models)} distinct names, got {args.names!r}")

    from cosface.commands.report_options import check_extras

    check_extras(args)     # --plot: before any embedding starts
    from cosface.evaluation.suite import (compare_table, evaluate_suite, model_embed_fn, plot_compare,
                                          resolve_model, suite_json)

    per_model = {}
    for name, model in zip(names, args.models):
        print(f"model {name}", file=sys.stderr)
        embed_fn, prep = model_embed_fn(resolve_model(model), args.device)
        per_model[name] = evaluate_suite(
            embed_fn, args.suite, bin_protocol=args.protocol or "insightface", size=prep.size,
            batch_size=args.batch_size, progress=not args.no_progress, workers=args.workers,
            log=lambda m: print(f"  {m}", file=sys.stderr),
        )
    if args.plot:
        plot_compare(per_model, args.plot)
        print(f"ROC curves written to {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps({name: suite_json(r) for name, r in per_model.items()}, indent=2))
    else:
        print(f"suite {os.path.normpath(args.suite)}:")
        print(compare_table(per_model))
    return 0
