"""Images/s of LFW evaluation and folder embedding inside one process, start-up reported apart.

`cosface eval` and `cosface embed` pay for importing torch, initialising the device and loading the
model once per command; on a GPU machine that is seconds, as long as embedding an LFW-size folder
itself. This script times the two the commands run, after start-up, on the same files:

* LFW end to end: `evaluate_lfw` (read + decode on worker threads, model on image and mirror, the
  reference 10-fold protocol), i.e. what `cosface eval --lfw DIR` does after loading the checkpoint;
* a folder: `Embedder.embed` over its images (read + decode on worker threads, the model), i.e. what
  `cosface embed --model M DIR` does after opening the model.

Each is run --repeat times; the first includes cuDNN's algorithm search and the allocator's growth,
the best of the rest is the steady rate.

    python benchmarks/eval_throughput.py --model run/checkpoints/epoch_002.pt --lfw syn/lfw \
        --folder syn/lfw/lfw_align_112 --device cuda --batch-size 1024
"""
from __future__ import annotations

import argparse
import os
import sys
import time

T0 = time.perf_counter()

import torch  # noqa: E402

from cosface.evaluation import checkpoint_embed_fn, evaluate_lfw  # noqa: E402
from cosface.inference import Embedder  # noqa: E402
from cosface.inference.embedder import list_images  # noqa: E402


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a cosface checkpoint")
    ap.add_argument("--lfw", help="an LFW folder (pairs.txt + lfw_align_112/)")
    ap.add_argument("--folder", help="a folder of aligned crops for Embedder.embed")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(8, cores))")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    imported = time.perf_counter() - T0
    print(f"# {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs; import {imported:.2f} s")

    if args.lfw:
        t = time.perf_counter()
        embed_fn, prep = checkpoint_embed_fn(args.model, args.device)
        print(f"checkpoint loaded in {time.perf_counter() - t:.2f} s")
        from cosface.evaluation.pairs import read_lfw

        n = len(read_lfw(args.lfw).images)
        report = []
        runs = timed(lambda: report.append(evaluate_lfw(embed_fn, args.lfw, batch_size=args.batch_size,
                                                        progress=False, workers=args.workers, size=prep.size)),
                     args.repeat)
        best = min(runs[1:] or runs)
        print(f"LFW end to end ({n} images; decode + model on image and mirror + protocol): "
              + ", ".join(f"{s:.2f} s" for s in runs) + f"; accuracy {100 * report[-1].mean:.2f} %")
        print(f"RESULT eval task=lfw_in_process images={n} img_s={n / best:.0f} seconds={best:.2f}")

    if args.folder:
        t = time.perf_counter()
        emb = Embedder(args.model, device=args.device, batch_size=args.batch_size, detect=False, quiet=True)
        print(f"model opened in {time.perf_counter() - t:.2f} s")
        files = [str(f) for f in list_images([args.folder])]
        runs = timed(lambda: emb.embed(files), args.repeat)
        best = min(runs[1:] or runs)
        print(f"Embedder.embed ({len(files)} images, with mirrors): " + ", ".join(f"{s:.2f} s" for s in runs))
        print(f"RESULT eval task=embed_in_process images={len(files)} img_s={len(files) / best:.0f} seconds={best:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
