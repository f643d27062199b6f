"""`cosface config FILE [--set k=v ...]`: print the resolved, validated config as TOML."""


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="print a resolved config (preset + overrides)",
                       description="Load a TOML preset, apply --set overrides, validate, and print the result.")
    p.add_argument("file", nargs="?", help="TOML preset (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set optim.lr=0.05 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cosface.config import load_config, preset_header

    cfg = load_config(args.file, args.overrides)
    print(preset_header(args.file) if args.file else "", end="")
    print(cfg.to_toml(), end="")
    return 0
