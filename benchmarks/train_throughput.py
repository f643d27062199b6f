"""Images/s of one training step (forward + backward + SGD step) for backbones + a margin head.

The step is the trainer's (cosface.step.build_step): uint8 NHWC batch on the device -> flip +
normalise as tensor ops -> backbone (channels_last) -> CosFace head -> backward -> SGD, in each
variant: eager, compiled (torch.compile of backbone + head loss; --compile-mode), graph (the whole
step as one CUDA graph), each optionally with the blocked head loss (--class-chunk). Synthetic data,
so this measures compute only; benchmarks/loader_throughput.py measures input. With --loader DIR it
also reports the input pipeline's images/s on the same machine. Each measured row is also printed as
a `RESULT step ...` line for benchmarks/gpu_check.sh's table.

    python benchmarks/train_throughput.py --device cpu --batch 32
    python benchmarks/train_throughput.py --device cuda --batch 128 512 --dtype fp32 bf16 --variant eager compiled graph
    python benchmarks/train_throughput.py --device cuda --backbone iresnet50 iresnet100 --head arcface \
        --classes 93431 --batch 128 --dtype bf16 --variant eager compiled
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

from types import SimpleNamespace

from cosface.backbones import build_backbone
from cosface.config import Config, HeadConfig
from cosface.heads import build_head
from cosface.preprocess import Preprocessing
from cosface.step import GRAPH_WARMUP_STEPS, build_optimizer, build_step


def make_step(backbone_name: str, batch: int, classes: int, device: torch.device, dtype: str,
              channels_last: bool, variant: str, compile_mode: str = "default", class_chunk: int = 0,
              optimizer: str = "auto", head_type: str = "cosface"):
    """A zero-argument function running one training step of the chosen variant on a fixed batch."""
    torch.manual_seed(0)
    model = build_backbone(backbone_name).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = build_head(HeadConfig(type=head_type, s=64.0, m=0.5 if head_type == "arcface" else 0.4),
                      classes, model.embedding_size).to(device)
    sets = {"train.compile": variant == "compiled", "train.compile_mode": compile_mode,
            "train.cuda_graph": variant == "graph", "train.channels_last": channels_last,
            "optim.implementation": optimizer}
    cfg = Config().replace(**sets)
    opt = build_optimizer(list(model.parameters()) + list(head.parameters()), cfg.optim, cfg.train.cuda_graph)
    amp = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if dtype == "bf16"
           else (lambda: torch.autocast(device.type, enabled=False)))
    runtime = SimpleNamespace(device=device, distributed=False)
    step = build_step(cfg.train, opt, model, head, Preprocessing(), amp, None, runtime, class_chunk=class_chunk)
    step.set_lr(0.1)
    images = torch.randint(0, 256, (batch, 112, 112, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    flips = torch.rand(batch, device=device) < 0.5

    def run():
        loss = step.forward_backward(images, labels, flips, sync=True)
        step.optimizer_step()
        return loss

    return run


def measure(step, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per step, after warm-up (compilation, the allocator, cuDNN's algorithm timing when it is on)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - t) / iters


def loader_rate(data: str, batch: int, workers: int, device: torch.device, batches: int, decoder: str = "cpu") -> float:
    from cosface.data.dataset import Plan, make_loader
    from cosface.data.sources import open_source

    src = open_source(data)
    plan = Plan(len(src), batch)
    loader = make_loader(src, plan, rank=0, seed=0, flip=True, image_size=112, workers=workers,
                         pin_memory=device.type == "cuda", decoder=decoder, device=device)
    it = iter(loader)
    next(it)  # worker start-up excluded
    t, n = time.perf_counter(), 0
    for b in itertools.islice(it, batches):
        b["images"].to(device, non_blocking=True)
        n += len(b["labels"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - t)
    if hasattr(loader, "close"):
        loader.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", nargs="+", default=["mobilefacenet"])
    ap.add_argument("--head", default="cosface", help="head type (cosface, arcface, combined, softmax)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--layout", nargs="+", default=["channels_last"], choices=["channels_last", "nchw"])
    ap.add_argument("--variant", nargs="+", default=["eager"], choices=["eager", "compiled", "graph"])
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    ap.add_argument("--class-chunk", type=int, nargs="+", default=[0], help="0 = plain head logits")
    ap.add_argument("--cudnn-benchmark", nargs="+", default=["off"], choices=["off", "on"],
                    help="torch.backends.cudnn.benchmark (train.cudnn_benchmark): off = cuDNN's heuristics")
    ap.add_argument("--optimizer", default="auto", choices=["auto", "for-loop", "foreach", "fused"])
    ap.add_argument("--classes", type=int, default=10572)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--loader", metavar="DIR", help="also measure the input pipeline on this data directory")
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--loader-only", action="store_true", help="with --loader: skip the step measurements")
    ap.add_argument("--loader-batches", type=int, default=20, help="batches timed per loader figure")
    ap.add_argument("--gpu-decode", action="store_true", help="with --loader on CUDA: also nvImageCodec decoding")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {', '.join(args.backbone)} + {args.head}({args.classes} classes) train step on {name}, torch {torch.__version__}")
    print(f"{'backbone':>13} {'batch':>6} {'dtype':>5} {'layout':>13} {'variant':>9} {'chunk':>6} {'cudnn':>5} "
          f"{'ms/step':>9} {'img/s':>9}")
    combos = [] if args.loader_only else itertools.product(args.backbone, args.batch, args.dtype, args.layout,
                                                           args.variant, args.class_chunk, args.cudnn_benchmark)
    for bb, batch, dtype, layout, variant, chunk, cudnn in combos:
        torch.backends.cudnn.benchmark = cudnn == "on"
        try:
            step = make_step(bb, batch, args.classes, device, dtype, layout == "channels_last", variant,
                             args.compile_mode, chunk, args.optimizer, args.head)
            warm = args.warmup + (3 if variant == "compiled" else 0) + (GRAPH_WARMUP_STEPS + 1 if variant == "graph" else 0)
            sec = measure(step, device, warm, args.iters)
        except Exception as e:   # one failing variant must not hide the others' figures
            print(f"{bb:>13} {batch:>6} {dtype:>5} {layout:>13} {variant:>9} {chunk:>6} {cudnn:>5}  failed: "
                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            print(f"RESULT step backbone={bb} batch={batch} dtype={dtype} variant={variant} chunk={chunk} cudnn={cudnn} "
                  f"failed", flush=True)
            continue
        print(f"{bb:>13} {batch:>6} {dtype:>5} {layout:>13} {variant:>9} {chunk:>6} {cudnn:>5} {1000 * sec:>9.1f} "
              f"{batch / sec:>9.0f}", flush=True)
        print(f"RESULT step backbone={bb} batch={batch} dtype={dtype} variant={variant} chunk={chunk} cudnn={cudnn} "
              f"img_s={batch / sec:.0f} ms={1000 * sec:.2f}", flush=True)
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.loader:
        for w in args.workers:
            rate = loader_rate(args.loader, max(args.batch), w, device, batches=args.loader_batches)
            print(f"loader {args.loader}: {w} workers, batch {max(args.batch)}: {rate:.0f} img/s", flush=True)
            print(f"RESULT loader decoder=cpu workers={w} batch={max(args.batch)} img_s={rate:.0f}", flush=True)
        if device.type == "cuda" and args.gpu_decode:
            rate = loader_rate(args.loader, max(args.batch), 0, device, batches=args.loader_batches, decoder="gpu")
            print(f"loader {args.loader}: GPU decode (nvImageCodec), batch {max(args.batch)}: {rate:.0f} img/s", flush=True)
            print(f"RESULT loader decoder=gpu workers=0 batch={max(args.batch)} img_s={rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
