"""CosFace's central claim on our synthetic faces: the additive cosine margin (m = 0.40) against the
same normalised-softmax head without it (m = 0), same data, same seed, same budget.

    python benchmarks/margin_ablation.py --out /tmp/margin            # demo-sized (about 10 min on 2 cores)
    python benchmarks/margin_ablation.py --out /tmp/margin --margins 0 0.2 0.35 0.4 --set train.epochs=3

Prints the held-out (open-set) accuracy under the reference LFW protocol for each margin, and the
raw-pixel baseline on the same pairs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from cosface.checkpoint import load_backbone
from cosface.config import load_config
from cosface.data.synthetic import generate, raw_pixel_baseline
from cosface.evaluation import evaluate_lfw, torch_embed_fn
from cosface.trainer import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--margins", type=float, nargs="+", default=[0.4, 0.0])
    ap.add_argument("--scale", type=float, default=32.0)
    ap.add_argument("--identities", type=int, default=300)
    ap.add_argument("--images-per-identity", type=int, default=20)
    ap.add_argument("--lfw-identities", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="demo")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "synthetic"
    if not (data / "manifest.json").exists():
        generate(data, identities=args.identities, images_per_identity=args.images_per_identity,
                 lfw_identities=args.lfw_identities, seed=args.seed, overwrite=True)
    baseline = raw_pixel_baseline(data / "lfw")
    rows = []
    for m in args.margins:
        cfg = load_config(args.config, args.overrides).replace(
            **{"head.m": m, "head.s": args.scale, "data.path": str(data / "train"), "eval.lfw": ""})
        t = time.perf_counter()
        result = train(cfg, out / f"m{m:g}", progress=False)
        model, prep, _ = load_backbone(result.last_checkpoint)
        report = evaluate_lfw(torch_embed_fn(model, "cpu", prep), data / "lfw", progress=False)
        rows.append((m, report, result.final_loss, time.perf_counter() - t, cfg))
    cfg = rows[0][4]
    print(f"# synthetic faces: {args.identities} identities × {args.images_per_identity} images for training, "
          f"{args.lfw_identities} held-out identities; {cfg.model.backbone}, s={args.scale}, "
          f"{cfg.train.epochs} epochs of batch {cfg.train.batch_size}, seed {cfg.train.seed}")
    print(f"{'margin m':>9} {'LFW-protocol mean %':>20} {'std %':>7} {'AUC':>7} {'TAR@FAR=1e-2':>13} {'final loss':>11} {'time s':>7}")
    for m, r, loss, sec, _ in rows:
        print(f"{m:>9.2f} {100 * r.mean:>20.2f} {100 * r.std:>7.2f} {r.auc:>7.4f} {r.tar_at_far[1e-2]:>13.4f} "
              f"{loss:>11.4f} {sec:>7.0f}")
    print(f"{'raw px':>9} {100 * baseline:>20.2f}")


if __name__ == "__main__":
    main()
