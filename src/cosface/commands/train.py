"""`cosface train`: one process, or one rank under torchrun."""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a backbone + margin head",
                       description="Train on an image folder (root/<class>/<image>) or a packed RecordIO "
                                   "directory. Under torchrun every rank runs this same command.")
    p.add_argument("--config", help="TOML file, or the name of a preset shipped in the package (casia_mobilefacenet_cosface, "
                                      "demo, and the field's recipes; a wrong name lists them all)")
    p.add_argument("--data", help="training data directory (overrides data.path)")
    p.add_argument("--out", help="run directory for checkpoints, config, classes and metrics (default: runs/<config name>)")
    p.add_argument("--lfw", help="LFW-style folder verified at each save (overrides eval.lfw)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--resume", metavar="auto|PATH", help="continue from the newest checkpoint in --out, or from PATH")
    p.add_argument("--init-from", metavar="CKPT",
                   help="start a new run from CKPT's backbone (fine-tuning; new head when the classes differ); "
                        "see finetune.freeze_backbone_epochs and finetune.backbone_lr_scale")
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/tb/ (log.tensorboard = true)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds an earlier run (moved aside to OUT.old-<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from cosface.config import load_config
    from cosface.trainer import train

    cfg = load_config(args.config, args.overrides)
    paths = {"data.path": args.data, "eval.lfw": args.lfw, "finetune.init_from": args.init_from,
             "log.tensorboard": args.tensorboard or None}
    cfg = cfg.replace(**{k: v for k, v in paths.items() if v})
    out = Path(args.out) if args.out else Path("runs") / (Path(args.config).stem if args.config else "default")
    result = train(cfg, out, resume=args.resume, progress=not args.no_progress,
                   overwrite=args.overwrite)
    if result.last_checkpoint is not None:
        print(f"done: {result.global_step} steps; last checkpoint {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        print(f"best checkpoint (validation): {result.best_checkpoint}")
    return 0

