"""Synthetic-face generation speed: images/s rendered, encoded and written, for 1 and 2 workers.

    python benchmarks/synth_speed.py [--identities 100] [--images-per-identity 20] [--workers 1 2]

Also prints the render-only rate of this process (no JPEG, no files), to separate drawing from I/O.
The machine's other load changes these numbers: run it on an idle machine for figures to quote.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from cosface.data.synthetic import generate
from cosface.data.synthetic.identity import sample_identity
from cosface.data.synthetic.render import render


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=100)
    ap.add_argument("--images-per-identity", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    render(sample_identity(rng), rng, 4)                    # warm-up: first-call allocations, noise bank
    n = args.identities * args.images_per_identity
    start = time.perf_counter()
    cpu = time.process_time()
    for _ in range(args.identities):
        render(sample_identity(rng), rng, args.images_per_identity)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"render only, this process: {n / wall:7.0f} images/s wall, {n / cpu:7.0f} images/s per CPU second")

    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            m = generate(os.path.join(tmp, "synth"), identities=args.identities,
                         images_per_identity=args.images_per_identity, lfw_identities=20,
                         lfw_images_per_identity=2, workers=workers)
            wall = time.perf_counter() - start
            total = m["train"]["images"] + m["lfw"]["images"]
            print(f"generate, {workers} worker{'s' if workers > 1 else ' '}:   {total / wall:7.0f} images/s "
                  f"({total} images in {wall:.1f} s, process start-up included)")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
