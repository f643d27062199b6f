"""Detect + align throughput on this CPU: images per second for raw-LFW/CASIA-sized photos (250x250) and for
640-pixel photos, in one process and in several (one ONNX Runtime thread each, as `cosface align` runs).

    python benchmarks/detect_throughput.py [--seconds 5] [--workers 1 2] [--detector retinaface]

"Per CPU-second" divides by the CPU time the processes were given: on a shared machine it is the figure
closest to what one free core does. Each image is decoded from JPEG bytes, detected (long side capped at 640), its largest face aligned to
112x112: the per-image work of `cosface align` without the file writes. Photos are built from
scikit-image's public-domain astronaut (one face) over its coffee picture.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np


def photos() -> dict[str, bytes]:
    import simplejpeg
    from PIL import Image
    from skimage import data

    astro = Image.fromarray(data.astronaut())
    small = np.asarray(astro.resize((250, 250), Image.BILINEAR))
    big = np.asarray(Image.fromarray(data.coffee()).resize((640, 480), Image.BILINEAR)).copy()
    big[100:400, 250:550] = np.asarray(astro.resize((300, 300), Image.BILINEAR))
    return {"250x250": simplejpeg.encode_jpeg(np.ascontiguousarray(small), quality=90),
            "640x480": simplejpeg.encode_jpeg(np.ascontiguousarray(big), quality=90)}


def run(args: tuple[bytes, float, str]) -> tuple[int, float, float]:
    """Process the same photo for about `seconds`; -> (images, wall seconds, CPU seconds of this process)."""
    import simplejpeg

    from cosface.faces import aligned_faces

    data, seconds, detector = args
    img = simplejpeg.decode_jpeg(data, colorspace="RGB")
    aligned_faces(img, detector=detector, threads=1)               # build the session, warm up
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        img = simplejpeg.decode_jpeg(data, colorspace="RGB")
        [(_, crop)] = aligned_faces(img, detector=detector, threads=1)
        n += 1
    return n, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per setting (default 5)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                    help="process counts to measure (default: 1 and the CPU count)")
    ap.add_argument("--detector", default="retinaface")
    args = ap.parse_args()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"detect + align ({args.detector}, 112x112 arcface crops), {os.cpu_count()} CPUs visible, "
          f"load average {load} (other work on the machine lowers these figures)")
    for name, data in photos().items():
        for w in sorted(set(args.workers)):
            with ProcessPoolExecutor(w, mp_context=get_context("spawn")) as pool:
                # all workers start together; each reports its own count and time
                results = list(pool.map(run, [(data, args.seconds, args.detector)] * w))
            rate = sum(n / t for n, t, _ in results)
            images = sum(n for n, _, _ in results)
            per_cpu = images / sum(c for _, _, c in results)
            print(f"  {name}: {w} process{'es' if w > 1 else '  '}  {rate:7.1f} images/s wall "
                  f"({rate / w:6.1f} per process); {per_cpu:6.1f} images per CPU-second "
                  f"({1000 / per_cpu:5.1f} ms of CPU per image)")


if __name__ == "__main__":
    main()
