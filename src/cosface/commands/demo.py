"""`cosface demo`: synthetic faces -> train -> verify held-out identities -> ONNX -> summary."""


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on built-in synthetic faces (minutes on a CPU)",
                       description="Generate synthetic identities, train MobileFaceNet + CosFace with the demo "
                                   "preset, verify on held-out identities with the reference LFW protocol, "
                                   "export to ONNX, re-verify with ONNX Runtime, and print a summary.")
    p.add_argument("--out", default="demo_out", help="where the data, run and model go (default: demo_out)")
    p.add_argument("--identities", type=int, default=260, help="training identities (default 260)")
    p.add_argument("--images-per-identity", type=int, default=20, help="training images per identity (default 20)")
    p.add_argument("--lfw-identities", type=int, default=200, help="held-out identities (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="demo", help="training preset (default: the shipped demo preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from cosface.demo import run_demo, summary

    result = run_demo(args.out, identities=args.identities, images_per_identity=args.images_per_identity,
                      lfw_identities=args.lfw_identities, seed=args.seed, config=args.config,
                      overrides=tuple(args.overrides), progress=not args.no_progress)
    print(summary(result))
    return 0
