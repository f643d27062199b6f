"""Per-rank programs for the multi-process tests (started by dist_launch.run_ranks with torchrun's env).

    python dist_workers.py head OUT_DIR DEVICE      sharded-head cases; each rank saves OUT_DIR/rank<r>.pt
    python dist_workers.py fail die|stall ARGS...   `cosface train ARGS...` where rank 1 dies or stalls after step 1
    python dist_workers.py overflow OUT_DIR CLIP    Trainer._optimizer_step under fp16 loss scaling with an overflow
                                                    in rank 1's head shard only; each rank saves OUT_DIR/rank<r>.pt
    python dist_workers.py train ARGS...            plain `cosface train ARGS...`
    python dist_workers.py slowread TIMES_DIR ARGS...  `cosface train ARGS...` where rank 1 reads the run directory
                                                     late; each rank records when it read and wrote there
"""
from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist

# Each case: name, classes, embedding size, batch per rank, s, m, sample_rate.
HEAD_CASES = [
    ("even", 10, 16, 3, 32.0, 0.40, 1.0),
    ("uneven", 11, 16, 3, 32.0, 0.40, 1.0),
    ("three_classes", 3, 8, 2, 64.0, 0.35, 1.0),
    ("sampled", 41, 8, 2, 32.0, 0.40, 0.5),
]
INIT_SEED = 7
# The other margins on the same path: name, classes, embedding size, batch per rank, s, (m1, m2, m3).
MARGIN_CASES = [
    ("arcface", 11, 16, 3, 64.0, (1.0, 0.5, 0.0)),
    ("combined", 10, 16, 3, 64.0, (1.0, 0.3, 0.2)),
    ("softmax", 11, 8, 2, 32.0, (1.0, 0.0, 0.0)),
]
# head.init = "normal" through Runtime.build_head: classes, embedding size (11 × 17 values: no shard is a
# multiple of 16 values, where torch's normal_ would draw differently per shard), init_std.
NORMAL_INIT_CASE = (11, 17, 0.02)


def head_inputs(num_classes: int, dim: int, batch: int, world: int, case: int):
    """The global batch of a case, identical on every rank and in the test process."""
    g = torch.Generator().manual_seed(1000 + case)
    x = torch.randn(world * batch, dim, generator=g)
    y = torch.randint(0, num_classes, (world * batch,), generator=g)
    # A target owned by the last rank in rank 0's rows and one owned by rank 0 in the last rank's.
    y[0], y[-1] = num_classes - 1, 0
    return x, y


def run_head(out_dir: str, device: str) -> None:
    from cosface.parallel import setup_runtime
    from cosface.losses import Margin
    from cosface.parallel.sharded_head import ShardedCosFaceHead

    torch.set_num_threads(1)
    rt = setup_runtime(device, timeout_s=60)
    group = rt.group
    if group is None:
        # setup_runtime makes no group for one process; make one anyway, to run the collectives.
        dist.init_process_group("nccl" if rt.device.type == "cuda" else "gloo", rank=0, world_size=1,
                                device_id=rt.device if rt.device.type == "cuda" else None)
        group = dist.group.WORLD
    results = {}
    for case, (name, c, d, b, s, m, rate) in enumerate(HEAD_CASES):
        x, y = head_inputs(c, d, b, rt.world_size, case)
        rows = slice(rt.rank * b, (rt.rank + 1) * b)
        torch.manual_seed(INIT_SEED)
        head = ShardedCosFaceHead(c, d, s=s, m=m, sample_rate=rate, group=group).to(rt.device)
        rng_after_init = torch.get_rng_state()
        x_local = x[rows].clone().to(rt.device).requires_grad_(True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.append(tuple(t.shape)), t)[1], lambda t: t):
            loss = head(x_local, y[rows].to(rt.device))
        loss.backward()
        full_weight = head.gather_rows(head.weight.detach())
        full_grad = head.gather_rows(head.weight.grad)
        results[name] = {
            "start": head.start, "stop": head.stop, "loss": loss.item(), "rng_after_init": rng_after_init,
            "weight": head.weight.detach().cpu(), "weight_grad": head.weight.grad.cpu(),
            "x_grad": x_local.grad.cpu(), "full_weight": full_weight, "full_grad": full_grad,
            "saved_shapes": saved,
            "scatter": head.scatter_rows(torch.arange(c * d, dtype=torch.float32).view(c, d)),
        }
    for case, (name, c, d, b, s, margin) in enumerate(MARGIN_CASES):
        x, y = head_inputs(c, d, b, rt.world_size, len(HEAD_CASES) + case)
        rows = slice(rt.rank * b, (rt.rank + 1) * b)
        torch.manual_seed(INIT_SEED)
        head = ShardedCosFaceHead(c, d, s=s, group=group, margin=Margin(*margin)).to(rt.device)
        x_local = x[rows].clone().to(rt.device).requires_grad_(True)
        loss = head(x_local, y[rows].to(rt.device))
        loss.backward()
        results[name] = {"start": head.start, "stop": head.stop, "loss": loss.item(),
                         "weight_grad": head.weight.grad.cpu(), "x_grad": x_local.grad.cpu()}
    from cosface.config import HeadConfig

    c, d, std = NORMAL_INIT_CASE
    torch.manual_seed(INIT_SEED)
    head = rt.build_head(HeadConfig(init="normal", init_std=std), c, d)
    results["normal_init"] = {"start": getattr(head, "start", 0), "stop": getattr(head, "stop", c),
                              "weight": head.weight.detach().cpu(), "rng_after_init": torch.get_rng_state()}
    torch.save(results, os.path.join(out_dir, f"rank{rt.rank}.pt"))
    dist.destroy_process_group(group)


def run_failing_train(mode: str, cli_args: list[str]) -> int:
    """`cosface train` in which rank 1 exits (die) or stops answering (stall) right after step 1."""
    from cosface import cli
    from cosface.trainer import Trainer

    step = Trainer._optimizer_step

    def step_then_fail(self):
        step(self)
        if self.rt.rank == 1:
            if mode == "die":
                os._exit(17)
            time.sleep(120)  # the test stops waiting once rank 0 has exited, and kills this rank

    Trainer._optimizer_step = step_then_fail
    return cli.main(["train", *cli_args])


def run_overflow_step(out_dir: str, clip: float) -> None:
    """One Trainer._optimizer_step (a CPU GradScaler standing in for CUDA's) after a backward in which only
    rank 1's shard of the head has an infinite gradient, as an fp16 overflow in one shard's weight gradient."""
    from types import SimpleNamespace

    from cosface.config import OptimConfig
    from cosface.parallel import setup_runtime
    from cosface.parallel.sharded_head import ShardedCosFaceHead
    from cosface.step import EagerStep
    from cosface.trainer import Trainer

    torch.set_num_threads(1)
    rt = setup_runtime("cpu", timeout_s=60)
    torch.manual_seed(0)
    backbone = torch.nn.Linear(6, 8)
    head = ShardedCosFaceHead(10, 8, group=rt.group)
    model = rt.wrap_backbone(backbone)
    optimizer = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    step = EagerStep(lambda x, y, _: head(model(x), y), model, optimizer, scaler, accumulate=1, distributed=True)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2 * 3, 6, generator=g), torch.randint(0, 10, (2 * 3,), generator=g)
    rows = slice(rt.rank * 3, (rt.rank + 1) * 3)
    step.forward_backward(x[rows], y[rows], None, sync=True)
    if rt.rank == 1:
        head.weight.grad[0, 0] = float("inf")
    trainer = SimpleNamespace(cfg=SimpleNamespace(optim=OptimConfig(clip_grad_norm=clip)), backbone=backbone, head=head, rt=rt,
                              optimizer=optimizer, scaler=scaler, step=step)
    Trainer._optimizer_step(trainer)
    torch.save({"backbone": {k: v.clone() for k, v in backbone.state_dict().items()}, "scale": scaler.get_scale()},
               os.path.join(out_dir, f"rank{rt.rank}.pt"))
    del model, step, trainer        # as the trainer's run ends: the DDP wrapper goes before the group
    rt.close()


def run_slow_reader(times_dir: str, cli_args: list[str]) -> int:
    """`cosface train` in which rank 1 checks the run's val_identities.txt 2 s late. Rank 1 writes
    TIMES_DIR/read_end (when it had read it), rank 0 TIMES_DIR/write_start (when it began rewriting it)."""
    from cosface import cli
    from cosface.validation import Validator

    check, write = Validator.check_resume, Validator.write
    rank = int(os.environ["RANK"])

    def late_check(self, run_dir, resuming):
        if rank == 1:
            time.sleep(2.0)
        check(self, run_dir, resuming)
        if rank == 1:
            with open(os.path.join(times_dir, "read_end"), "w") as f:
                f.write(repr(time.time()))

    def timed_write(self, run_dir):
        with open(os.path.join(times_dir, "write_start"), "w") as f:
            f.write(repr(time.time()))
        write(self, run_dir)

    Validator.check_resume, Validator.write = late_check, timed_write
    return cli.main(["train", *cli_args])


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "head":
        run_head(sys.argv[2], sys.argv[3])
    elif what == "fail":
        sys.exit(run_failing_train(sys.argv[2], sys.argv[3:]))
    elif what == "overflow":
        run_overflow_step(sys.argv[2], float(sys.argv[3]))
    elif what == "train":
        from cosface import cli

        sys.exit(cli.main(["train", *sys.argv[2:]]))
    elif what == "slowread":
        sys.exit(run_slow_reader(sys.argv[2], sys.argv[3:]))
    else:
        raise SystemExit(f"unknown worker {what!r}")
