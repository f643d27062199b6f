"""Margins and backbones, checked on our synthetic faces: one data set, one seed, one budget.

1. Margins: the same backbone trained with CosFace, ArcFace, the combined margin and the plain
   normalised softmax (m = 0), same data, seed, scale and epochs.
2. Backbones (--backbones): MobileFaceNet against iresnet18 (or others) at one wall-clock budget: a
   few timed training steps measure each backbone's images/s, which sets its epochs to fill
   --budget-s (whole epochs, so the budgets match to within one epoch; the table shows real times).

    python benchmarks/margin_ablation.py --out /tmp/ablation                  # a few minutes on 2 cores
    python benchmarks/margin_ablation.py --out /tmp/ablation --heads cosface:0.4 softmax --backbones
    python benchmarks/margin_ablation.py --out /tmp/big --identities 300 --images-per-identity 20 \\
        --input-size 112 --epochs 3 --budget-s 900                          # the README's older, larger run

Heads are TYPE[:MARGIN]: cosface:0.4, arcface:0.5, softmax, combined:M1,M2,M3. Prints, per run, the
held-out (open-set) accuracy under the reference LFW protocol and the raw-pixel baseline on the same pairs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cosface.checkpoint import load_backbone
from cosface.config import load_config
from cosface.data.synthetic import generate, raw_pixel_baseline
from cosface.evaluation import evaluate_lfw, torch_embed_fn
from cosface.train import train


def head_overrides(spec: str) -> dict:
    kind, _, value = spec.partition(":")
    if kind == "combined":
        m1, m2, m3 = (float(v) for v in value.split(","))
        return {"head.type": "combined", "head.m1": m1, "head.m2": m2, "head.m3": m3}
    if kind == "softmax":
        return {"head.type": "softmax"}
    return {"head.type": kind, "head.m": float(value)}


def run(cfg, out: Path, lfw: Path):
    t = time.perf_counter()
    result = train(cfg, out, progress=False)
    seconds = time.perf_counter() - t
    model, prep, _ = load_backbone(result.last_checkpoint)
    report = evaluate_lfw(torch_embed_fn(model, "cpu", prep), lfw, progress=False, size=prep.size)
    return report, result.final_loss, seconds


def images_per_s(cfg, steps: int = 4) -> float:
    """Training images/s of cfg's backbone + head at its batch and input size (after one warm-up step)."""
    from cosface.backbones import build_backbone_for
    from cosface.heads import build_head

    torch.manual_seed(0)
    model, head = build_backbone_for(cfg.model), build_head(cfg.head, 100, cfg.model.embedding_size)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01)
    b, s = cfg.train.batch_size, cfg.model.input_size
    x, y = torch.randn(b, 3, s, s), torch.randint(0, 100, (b,))
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        head(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return steps * b / (time.perf_counter() - t)


def table(title: str, rows, baseline: float) -> None:
    print(title)
    print(f"{'run':>26} {'LFW-protocol mean %':>20} {'std %':>6} {'AUC':>7} {'TAR@FAR=1e-2':>13} "
          f"{'final loss':>11} {'epochs':>6} {'time s':>7}")
    for name, r, loss, epochs, sec in rows:
        print(f"{name:>26} {100 * r.mean:>20.2f} {100 * r.std:>6.2f} {r.auc:>7.4f} {r.tar_at_far[1e-2]:>13.4f} "
              f"{loss:>11.4f} {epochs:>6} {sec:>7.0f}")
    print(f"{'raw pixels':>26} {100 * baseline:>20.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--heads", nargs="*", default=["cosface:0.4", "arcface:0.5", "combined:1,0.3,0.2", "softmax"])
    ap.add_argument("--backbone", default="mobilefacenet", help="backbone of the margin runs")
    ap.add_argument("--backbones", nargs="*", default=["mobilefacenet", "iresnet18"],
                    help="backbones compared at one wall-clock budget, each with the first --heads entry")
    ap.add_argument("--budget-s", type=float, default=100.0, help="training seconds per backbone (0: skip)")
    ap.add_argument("--scale", type=float, default=32.0)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the margin runs")
    ap.add_argument("--input-size", type=int, default=64, help="model input (the 112-px faces are resized)")
    ap.add_argument("--identities", type=int, default=100)
    ap.add_argument("--images-per-identity", type=int, default=10)
    ap.add_argument("--lfw-identities", type=int, default=100)
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
    base = load_config(args.config, args.overrides).replace(**{
        "head.s": args.scale, "data.path": str(data / "train"), "eval.lfw": "", "data.num_classes": 0,
        "model.input_size": args.input_size, "train.seed": args.seed, "checkpoint.save_start_epoch": 1})
    images = args.identities * args.images_per_identity
    print(f"# synthetic faces: {args.identities} identities × {args.images_per_identity} images for training, "
          f"{args.lfw_identities} held-out identities; input {args.input_size}x{args.input_size}, s={args.scale}, "
          f"batch {base.train.batch_size}, {base.schedule.name} lr {base.optim.lr}, seed {args.seed}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    if args.heads:
        rows = []
        for spec in args.heads:
            cfg = base.replace(**{"model.backbone": args.backbone, "train.epochs": args.epochs, **head_overrides(spec)})
            report, loss, sec = run(cfg, out / f"{args.backbone}-{spec.replace(':', '_')}", data / "lfw")
            rows.append((spec, report, loss, args.epochs, sec))
        table(f"\n## margins: {args.backbone}, {args.epochs} epochs each", rows, baseline)

    if args.budget_s > 0 and args.backbones:
        head = args.heads[0] if args.heads else "cosface:0.4"
        rows = []
        for name in args.backbones:
            cfg = base.replace(**{"model.backbone": name, **head_overrides(head)})
            ips = images_per_s(cfg)
            epochs = max(1, round(args.budget_s * ips / images))
            report, loss, sec = run(cfg.replace(**{"train.epochs": epochs}), out / f"budget-{name}", data / "lfw")
            rows.append((f"{name} ({ips:.0f} img/s)", report, loss, epochs, sec))
        table(f"\n## backbones at a {args.budget_s:g} s training budget, head {head}", rows, baseline)


if __name__ == "__main__":
    main()
