"""`cosface train`: one process, or one rank under torchrun."""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a backbone + margin head",
                       description="Train on an image folder (root/<class>/<image>) or a packed RecordIO "
                                   "directory. Under torchrun every rank runs this same command.")
    p.add_argument("--config", help="TOML file, or the name of a shipped preset (casia_mobilefacenet_cosface, demo)")
    p.add_argument("--data", help="training data directory (overrides data.path)")
    p.add_argument("--out", help="run directory for checkpoints, config, classes and metrics (default: runs/<config name>)")
    p.add_argument("--lfw", help="LFW-style folder verified at each save (overrides eval.lfw)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--resume", metavar="auto|PATH", help="continue from the newest checkpoint in --out, or from PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from cosface.config import load_config
    from cosface.train import train

    cfg = load_config(args.config, args.overrides)
    paths = {"data.path": args.data, "eval.lfw": args.lfw}
    cfg = cfg.replace(**{k: v for k, v in paths.items() if v})
    out = Path(args.out) if args.out else Path("runs") / (Path(args.config).stem if args.config else "default")
    result = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if result.last_checkpoint is not None:
        print(f"done: {result.global_step} steps; last checkpoint {result.last_checkpoint}")
    return 0

