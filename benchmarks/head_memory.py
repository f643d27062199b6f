"""Per-rank memory of the classification head for 10k, 1M and 10M identities at 128-d and 512-d:
replicated on every rank (plain data parallelism, as the reference), class-sharded over N ranks, and
sharded with Partial FC sampling. fp32 centres, gradient, SGD momentum, and the step's logits.

The figures come from cosface.parallel.memory (checked against real tensors by
tests/distributed/test_head_memory.py). With --measure on a GPU, each row is also run for real: one rank's
share (its centres, the global batch, labels spread over all N ranks' classes) trains two steps with
the trainer's optimizer, and the peak of torch.cuda.max_memory_allocated is printed beside the
estimate. Rows that would not fit in free GPU memory are left unmeasured.

    python benchmarks/head_memory.py
    python benchmarks/head_memory.py --ranks 8 --batch 128 --sample-rate 0.1 --measure --device cuda
"""
from __future__ import annotations

import argparse

import torch

from cosface.heads import CosFaceHead
from cosface.parallel.memory import head_memory
from cosface.parallel.sharded_head import ShardedCosFaceHead

IDENTITIES = (10_000, 1_000_000, 10_000_000)
DIMS = (128, 512)


def fmt(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / (1 << 20):.1f} MiB"


def layouts(ranks: int, rate: float):
    """(label, sharded, sample_rate) for the table's three rows per size."""
    return [(f"replicated (any N)", False, 1.0),
            (f"sharded /{ranks}", True, 1.0),
            (f"sharded /{ranks}, sample {rate:g}", True, rate)]


def measure(classes: int, dim: int, batch: int, ranks: int, sharded: bool, rate: float, device) -> int:
    """Peak bytes of two training steps of one rank's share of the head, run alone."""
    model = head_memory(classes, dim, batch, ranks, rate, sharded)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.device(device):
        torch.manual_seed(0)
        if sharded:
            # A rank's local work does not depend on the collectives: its rows, the global batch,
            # and labels of which about 1/N fall in its range (the others are other ranks' targets).
            head = ShardedCosFaceHead(model.rows, dim, sample_rate=rate, group=None)
            label_range = model.rows * ranks
        else:
            head = CosFaceHead(classes, dim)
            label_range = classes
        opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        for _ in range(2):
            x = torch.randn(model.batch, dim, requires_grad=True)
            y = torch.randint(0, label_range, (model.batch,))
            head(x, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    del head, opt, x, y
    torch.cuda.empty_cache()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128, help="images per rank per step")
    ap.add_argument("--sample-rate", type=float, default=0.1)
    ap.add_argument("--measure", action="store_true", help="also run each row on --device (CUDA)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.measure and device.type != "cuda":
        raise SystemExit("--measure reads the CUDA allocator's peak; pass --device cuda on a GPU machine")
    if args.measure:
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print(f"Per-rank head memory, fp32; {args.batch} images per rank per step, {args.ranks} ranks "
          f"(global batch {args.batch * args.ranks}).\n")
    cols = ["identities", "dim", "layout", "centres/rank", "scored/step", "weight+grad+momentum",
            "logits (1 buffer)", "estimated peak"] + (["measured peak"] if args.measure else [])
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for classes in IDENTITIES:
        for dim in DIMS:
            for label, sharded, rate in layouts(args.ranks, args.sample_rate):
                m = head_memory(classes, dim, args.batch, args.ranks, rate, sharded)
                row = [f"{classes:,}", str(dim), label, f"{m.rows:,}", f"{m.sampled:,}", fmt(m.state_bytes),
                       fmt(m.logits_bytes), fmt(m.total_bytes)]
                if args.measure:
                    free, _ = torch.cuda.mem_get_info(device)
                    fits = m.total_bytes + 2 * m.weight_bytes < 0.9 * free   # + the optimizer's temporaries
                    peak = measure(classes, dim, args.batch, args.ranks, sharded, rate, device) if fits else None
                    row.append(fmt(peak))
                print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
