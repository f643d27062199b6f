"""Images/s of one training step (forward + backward + SGD step) for a backbone + margin head.

The step is the trainer's: uint8 NHWC batch on the device -> flip + normalise as tensor ops ->
backbone (channels_last) -> CosFace head (fp32) -> backward -> SGD. Synthetic data, so this measures
compute only; benchmarks/loader_throughput.py measures input. With --loader DIR it also reports the
input pipeline's images/s on the same machine.

    python benchmarks/train_throughput.py --device cpu --batch 32
    python benchmarks/train_throughput.py --device cuda --batch 128 512 --dtype fp32 bf16 --compile both
    python benchmarks/train_throughput.py --device cuda --backbone iresnet50 iresnet100 --head arcface \
        --classes 93431 --batch 128 --dtype bf16 --compile both
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import time

import torch

from cosface.backbones import build_backbone
from cosface.config import HeadConfig
from cosface.heads import build_head
from cosface.preprocess import normalize


def make_step(backbone_name: str, batch: int, classes: int, device: torch.device, dtype: str,
              channels_last: bool, compile_model: bool, head_type: str = "cosface"):
    torch.manual_seed(0)
    model = build_backbone(backbone_name).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    head = build_head(HeadConfig(type=head_type, s=64.0, m=0.5 if head_type == "arcface" else 0.4),
                      classes, model.embedding_size).to(device)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9,
                          nesterov=True, weight_decay=5e-4)
    fwd = torch.compile(model) if compile_model else model
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext
    images = torch.randint(0, 256, (batch, 112, 112, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    flips = torch.rand(batch, device=device) < 0.5

    def step():
        x = normalize(images)
        x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        if not channels_last:
            x = x.contiguous()
        with amp():
            loss = head(fwd(x).float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def measure(step, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per step, after warm-up (compilation, allocator, cuDNN autotuning)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - t) / iters


def loader_rate(data: str, batch: int, workers: int, device: torch.device, batches: int) -> float:
    from cosface.data.dataset import Plan, make_loader
    from cosface.data.sources import open_source

    src = open_source(data)
    plan = Plan(len(src), batch)
    loader = make_loader(src, plan, rank=0, seed=0, flip=True, image_size=112, workers=workers,
                         pin_memory=device.type == "cuda")
    it = iter(loader)
    next(it)  # worker start-up excluded
    t, n = time.perf_counter(), 0
    for b in itertools.islice(it, batches):
        b["images"].to(device, non_blocking=True)
        n += len(b["labels"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", nargs="+", default=["mobilefacenet"], help="one or more registered backbones")
    ap.add_argument("--head", default="cosface", help="head type (cosface, arcface, combined, softmax)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--layout", nargs="+", default=["channels_last"], choices=["channels_last", "nchw"])
    ap.add_argument("--compile", choices=["off", "on", "both"], default="off")
    ap.add_argument("--classes", type=int, default=10572)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--loader", metavar="DIR", help="also measure the input pipeline on this data directory")
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {', '.join(args.backbone)} + {args.head}({args.classes} classes) train step on {name}, torch {torch.__version__}")
    print(f"{'backbone':>13} {'batch':>6} {'dtype':>5} {'layout':>13} {'compile':>7} {'ms/step':>9} {'img/s':>9}")
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for bb, batch, dtype, layout, comp in itertools.product(args.backbone, args.batch, args.dtype, args.layout, compiles):
        step = make_step(bb, batch, args.classes, device, dtype, layout == "channels_last", comp, args.head)
        warm = args.warmup + (3 if comp else 0)
        sec = measure(step, device, warm, args.iters)
        print(f"{bb:>13} {batch:>6} {dtype:>5} {layout:>13} {str(comp):>7} {1000 * sec:>9.1f} {batch / sec:>9.0f}", flush=True)
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.loader:
        for w in args.workers:
            rate = loader_rate(args.loader, max(args.batch), w, device, batches=20)
            print(f"loader {args.loader}: {w} workers, batch {max(args.batch)}: {rate:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
