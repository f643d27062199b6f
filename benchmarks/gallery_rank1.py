"""Rank-1 identification on held-out synthetic identities: enrol each person's first photo(s), identify the rest.

The folder is an LFW-style set of aligned crops, one subfolder per person (what `cosface synth` and
`cosface demo` write to .../lfw/lfw_align_112, people the model never saw in training). Each
person's first --enroll photos go into a fresh gallery through cosface.gallery (the path of
`cosface gallery enroll`); every other photo is identified against all of them. Prints rank-1 and
rank-5 accuracy, chance (1 / subjects), and how many answers the verify threshold keeps as "known"
(the right person / someone else); with --distractors, also rank-1 with that many random unit embeddings added as subjects.

    python benchmarks/gallery_rank1.py --model demo_out/model.onnx --folder demo_out/synthetic/lfw/lfw_align_112
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cosface.gallery import Gallery, ModelIdentity, enroll_photos, photo_faces
from cosface.inference import IMAGE_SUFFIXES, Embedder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--folder", required=True, help="one subfolder of aligned crops per person")
    ap.add_argument("--enroll", type=int, default=1, help="photos enrolled per person (default 1)")
    ap.add_argument("--scoring", choices=("max", "mean"), default="max")
    ap.add_argument("--distractors", type=int, default=0, help="random unit embeddings added as extra subjects")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for checkpoints (default 1: a shared CPU "
                    "runs one-image batches far faster on one thread than on contended ones)")
    args = ap.parse_args()
    if not args.model.endswith(".onnx"):
        import torch

        torch.set_num_threads(args.threads)

    embedder = Embedder(args.model, device="cpu", quiet=True)
    threshold, source = embedder.default_threshold()
    people = {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
              for d in sorted(Path(args.folder).iterdir()) if d.is_dir()}
    people = {k: v for k, v in people.items() if len(v) > args.enroll}
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Gallery(Path(tmp) / "g.sqlite", ModelIdentity.of(embedder), index="exact", scoring=args.scoring)
        t0 = time.perf_counter()
        for name, photos in people.items():
            enroll_photos(gallery, embedder, name, photos[:args.enroll])
        enrolled = time.perf_counter() - t0
        if args.distractors:
            rng = np.random.default_rng(0)
            noise = rng.normal(size=(args.distractors, gallery.model.dim)).astype(np.float32)
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            gallery.store.add_many((f"distractor-{i}", e[None]) for i, e in enumerate(noise))
        queries = [(name, p) for name, photos in people.items() for p in photos[args.enroll:]]
        faces = photo_faces(embedder, [str(p) for _, p in queries])
        truth = {str(p): name for name, p in queries}
        results = gallery.identify(faces.embeddings, top_k=5, threshold=threshold)
    rank1 = np.mean([r.matches[0].name == truth[s] for s, r in zip(faces.sources, results)])
    rank5 = np.mean([truth[s] in [m.name for m in r.matches] for s, r in zip(faces.sources, results)])
    kept = np.mean([r.known and r.name == truth[s] for s, r in zip(faces.sources, results)])
    wrong = np.mean([r.known and r.name != truth[s] for s, r in zip(faces.sources, results)])
    n = len(people) + args.distractors
    print(f"{args.model}: {len(people)} held-out people, {args.enroll} enrolled photo(s) each "
          f"({enrolled:.1f} s), {len(faces.sources)} query photos, scoring {args.scoring}"
          + (f", {args.distractors:,} random distractor subjects" if args.distractors else ""))
    print(f"  rank-1 {100 * rank1:.1f} %   rank-5 {100 * rank5:.1f} %   chance {100 / n:.2f} %")
    print(f"  above the threshold {threshold:.4f} ({source.split(':')[0]}): {100 * kept:.1f} % correct, "
          f"{100 * wrong:.1f} % someone else")
    if faces.failures:
        print(f"  {len(faces.failures)} photo(s) without a usable face")


if __name__ == "__main__":
    main()
