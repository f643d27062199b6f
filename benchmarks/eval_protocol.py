"""How fast is LFW evaluation? Prints figures; asserts nothing.

1. The reference 10-fold protocol (and insightface's) on 6,000 random pair features of 256 values,
   next to one fold of the literal 20,001-threshold scan it replaces.
2. End to end on a generated LFW-size folder (13,233 JPEGs, 10 folds of 300 + 300 pairs): `cosface eval`
   with a checkpoint of a randomly initialised backbone (or evaluate_lfw with a tiny conv net), against
   the time to run the model on each distinct image and its mirror once, from images already decoded.

    python benchmarks/eval_protocol.py                         # full size, MobileFaceNet, CPU
    python benchmarks/eval_protocol.py --device cuda
    python benchmarks/eval_protocol.py --images 600 --pairs-per-fold 30 --model tiny   # a quick check
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def bench_protocol(repeat: int) -> None:
    from cosface.evaluation import protocol

    rng = np.random.default_rng(0)
    n = 6000
    fold = np.arange(n) // 600
    flag = np.where(np.arange(n) % 600 < 300, 1, -1)
    fl = rng.standard_normal((n, 256)).astype(np.float32)
    fr = rng.standard_normal((n, 256)).astype(np.float32)
    fr[flag == 1] += 0.8 * fl[flag == 1]

    for workers in (1, None):
        best, med = best_of(lambda: protocol.reference_kfold(fl, fr, fold, flag, workers=workers), repeat)
        label = "1 thread" if workers == 1 else f"{min(10, os.cpu_count() or 1)} threads"
        print(f"reference 10-fold protocol, 6000 pairs x 256, {label}: "
              f"best {best * 1e3:.1f} ms, median {med * 1e3:.1f} ms")
    emb = protocol.insightface_embeddings(fl[:, :128], fl[:, 128:])
    e2 = protocol.insightface_embeddings(fr[:, :128], fr[:, 128:])
    best, med = best_of(lambda: protocol.insightface_kfold(emb, e2, flag == 1), repeat)
    print(f"insightface 10-fold protocol, 6000 pairs: best {best * 1e3:.1f} ms, median {med * 1e3:.1f} ms")

    val = fold != 0
    scores = protocol.reference_scores(fl, fr, val)[val]
    same = flag[val] == 1
    t = time.perf_counter()
    for th in protocol.THRESHOLDS.astype(scores.dtype):
        np.sum(scores[same] > th) + np.sum(scores[~same] < th)
    print(f"literal scan of the 20001 thresholds, one fold: {time.perf_counter() - t:.2f} s "
          f"(x10 folds for the whole protocol)")


def write_lfw(root: Path, n_images: int, folds: int, per: int, seed: int = 0) -> int:
    """People with 2 or 3 images each (13,233 images is LFW's count); pairs.txt in LFW's layout."""
    import simplejpeg

    rng = np.random.default_rng(seed)
    counts = []
    while sum(counts) < n_images:
        counts.append(int(min(rng.integers(2, 4), n_images - sum(counts))))
    if counts[-1] == 1:
        counts[-2] += 1
        counts.pop()
    people = [f"Person_{i:05d}" for i in range(len(counts))]
    images = root / "lfw_align_112"
    for name, c in zip(people, counts):
        (images / name).mkdir(parents=True)
        base = rng.integers(0, 256, (8, 8, 3))
        for k in range(1, c + 1):
            img = np.kron(base, np.ones((14, 14, 1))) + rng.normal(0, 8, (112, 112, 3))
            jpeg = simplejpeg.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=90, colorspace="RGB")
            (images / name / f"{name}_{k:04d}.jpg").write_bytes(jpeg)
    lines = [f"{folds}\t{per}"]
    for _ in range(folds):
        for _ in range(per):
            i = int(rng.integers(len(people)))
            a, b = rng.choice(np.arange(1, counts[i] + 1), 2, replace=False)
            lines.append(f"{people[i]}\t{a}\t{b}")
        for _ in range(per):
            i, j = rng.choice(len(people), 2, replace=False)
            lines.append(f"{people[i]}\t{rng.integers(1, counts[i] + 1)}\t{people[j]}\t{rng.integers(1, counts[j] + 1)}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return sum(counts)


class TinyNet:
    """A few strided convs to 128 values: a stand-in when the point is the pipeline, not the model."""

    @staticmethod
    def build():
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 128),
        )


def write_checkpoint(path: Path, model_name: str) -> None:
    import torch

    from cosface.backbones import build_backbone
    from cosface.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, versions
    from cosface.config import Config, config_from_dict
    from cosface.preprocess import Preprocessing

    d = Config().to_dict()
    d["model"]["backbone"] = model_name
    cfg = config_from_dict(d, "benchmark")
    model = build_backbone(model_name, embedding_size=cfg.model.embedding_size, input_size=cfg.model.input_size)
    atomic_save({
        "format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), "config": cfg.to_dict(),
        "num_classes": 1, "class_names": ["x"], "preprocessing": Preprocessing().to_dict(),
        "backbone": model.state_dict(), "head": {"weight": torch.zeros(1, cfg.model.embedding_size)},
    }, path)


def bench_end_to_end(args) -> None:
    import torch

    from cosface.cli import main as cli_main
    from cosface.evaluation import evaluate_lfw, read_lfw, torch_embed_fn
    from cosface.preprocess import decode_image

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lfw"
        t = time.perf_counter()
        total = write_lfw(root, args.images, args.folds, args.pairs_per_fold)
        pairs = read_lfw(root)
        print(f"generated {total} JPEGs, {len(pairs)} pairs over {len(pairs.images)} distinct images "
              f"in {time.perf_counter() - t:.1f} s")

        if args.model == "tiny":
            model = TinyNet.build().to(device).eval()
        else:
            from cosface.checkpoint import load_backbone

            ckpt = Path(tmp) / "bench.pt"
            write_checkpoint(ckpt, args.model)
            model = load_backbone(ckpt, device)[0]
        embed_fn = torch_embed_fn(model, device)

        decoded = np.stack([decode_image(Path(p).read_bytes()) for p in pairs.images])

        def model_only():
            for s in range(0, len(decoded), args.batch_size):
                b = decoded[s : s + args.batch_size]
                embed_fn(np.concatenate([b, b[:, :, ::-1]]))

        model_only()                                   # warm: every batch shape once (cuDNN picks kernels)
        t = time.perf_counter()
        model_only()
        base = time.perf_counter() - t
        n = len(decoded)
        print(f"model alone, {n} images + mirrors, batch {args.batch_size} ({device}): {base:.2f} s "
              f"({2 * n / base:.0f} forward images/s)")

        for workers in args.workers:
            label = f"{workers or 'default'} decode threads"
            if args.model == "tiny":
                what = "evaluate_lfw"
                t = time.perf_counter()
                report = evaluate_lfw(embed_fn, root, batch_size=args.batch_size, progress=False, workers=workers)
                e2e = time.perf_counter() - t
            else:
                what = "`cosface eval --json` (checkpoint load included)"
                argv = ["eval", "--ckpt", str(ckpt), "--lfw", str(root), "--json", "--no-progress",
                        "--device", device, "--batch-size", str(args.batch_size)]
                argv += ["--workers", str(workers)] if workers else []
                t = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()) as out:
                    rc = cli_main(argv)
                e2e = time.perf_counter() - t
                assert rc == 0
                report = json.loads(out.getvalue())
            mean = report["mean"] if isinstance(report, dict) else report.mean
            print(f"end to end, {what}, {label}: {e2e:.2f} s = {e2e / base:.2f} x the model alone "
                  f"(random model's LFW mean {100 * mean:.2f} %, a sanity check only)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilefacenet", help="a registered backbone, or 'tiny' (default mobilefacenet)")
    p.add_argument("--device", default="auto")
    p.add_argument("--images", type=int, default=13233)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--pairs-per-fold", type=int, default=300, help="same (and different) pairs per fold")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=int, nargs="+", default=[0], metavar="N",
                   help="decode threads for the end-to-end run(s); 0 = the library default (default 0)")
    p.add_argument("--repeat", type=int, default=5, help="protocol timing repeats")
    p.add_argument("--skip-protocol", action="store_true")
    p.add_argument("--skip-end-to-end", action="store_true")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cpu cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    if not args.skip_protocol:
        bench_protocol(args.repeat)
    if not args.skip_end_to_end:
        bench_end_to_end(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
