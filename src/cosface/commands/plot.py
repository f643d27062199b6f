"""`cosface plot`: curves of one or more runs from their metrics.jsonl, as one PNG."""


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="plot loss, learning rate, throughput and evaluations of runs",
                       description="Read RUN_DIR/metrics.jsonl of each run and draw loss (log scale), learning rate "
                                   "and throughput over steps and every evaluation over epochs, runs overlaid "
                                   "(needs the `plot` extra).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of `cosface train`")
    p.add_argument("-o", "--out", default="curves.png", help="PNG to write (default curves.png)")
    p.add_argument("--title", help="figure title (default: the run names)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cosface.plotting import plot_runs

    path = plot_runs(args.runs, args.out, title=args.title)
    print(f"wrote {path}")
    return 0
