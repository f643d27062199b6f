"""The class-sharded head on 2 processes against the single-process CosFaceHead on the same global batch
(gloo on CPU; NCCL where there are GPUs enough: 2 ranks on 2 GPUs, or a 1-rank NCCL group)."""
import math

import pytest
import torch
import torch.nn.functional as F

from cosface.heads import CosFaceHead
from cosface.parallel.memory import head_memory
from cosface.parallel.sharded_head import ShardedCosFaceHead, class_ranges

from dist_launch import check_all_ok, run_ranks
from dist_workers import HEAD_CASES, INIT_SEED, MARGIN_CASES, NORMAL_INIT_CASE, head_inputs

CASES = {c[0]: c[1:] for c in HEAD_CASES}
FULL = [name for name, *_, rate in HEAD_CASES if rate == 1.0]


def reference(name: str, world: int):
    """The single-process head on the whole global batch: (head, x, y, loss, grad wrt x, grad wrt weight, RNG after init)."""
    c, d, b, s, m, _ = CASES[name]
    x, y = head_inputs(c, d, b, world, [n for n, *_ in HEAD_CASES].index(name))
    torch.manual_seed(INIT_SEED)
    head = CosFaceHead(c, d, s=s, m=m)
    rng = torch.get_rng_state()
    x = x.clone().requires_grad_(True)
    loss = head(x, y)
    loss.backward()
    return head, x, y, loss.item(), x.grad, head.weight.grad, rng


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.fixture(scope="module", params=[
    pytest.param(("cpu", 2), id="gloo-2"),
    pytest.param(("cuda", 2), id="nccl-2", marks=[pytest.mark.gpu, pytest.mark.skipif(_gpus() < 2, reason="needs 2 GPUs")]),
    pytest.param(("cuda", 1), id="nccl-1", marks=[pytest.mark.gpu, pytest.mark.skipif(_gpus() < 1, reason="needs a GPU")]),
])
def results(request, tmp_path_factory):
    """Per-rank results of dist_workers.run_head: a list with one dict per rank."""
    device, world = request.param
    out = tmp_path_factory.mktemp(f"head-{device}-{world}")
    check_all_ok(run_ranks(["head", str(out), device], world, out / "logs", timeout=180))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def test_class_ranges_are_contiguous_and_balanced():
    assert class_ranges(10, 2) == [(0, 5), (5, 10)]
    assert class_ranges(11, 2) == [(0, 6), (6, 11)]
    assert class_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert class_ranges(3, 3) == [(0, 1), (1, 2), (2, 3)]


def test_without_a_group_it_is_the_ordinary_head():
    torch.manual_seed(3)
    plain = CosFaceHead(9, 16)
    rng_plain = torch.get_rng_state()
    torch.manual_seed(3)
    sharded = ShardedCosFaceHead(9, 16, group=None)
    assert torch.equal(plain.weight, sharded.weight) and torch.equal(rng_plain, torch.get_rng_state())
    x, y = torch.randn(6, 16), torch.tensor([0, 8, 3, 3, 5, 1])
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    la, lb = plain(xa, y), sharded(xb, y)
    la.backward()
    lb.backward()
    assert lb.item() == pytest.approx(la.item(), abs=1e-5)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6)
    assert torch.allclose(plain.weight.grad, sharded.weight.grad, atol=1e-6)
    assert sharded.gather_rows(sharded.weight) is sharded.weight


def test_partial_fc_sample_follows_the_torch_seed_and_eval_uses_every_centre():
    torch.manual_seed(0)
    head = ShardedCosFaceHead(40, 8, sample_rate=0.3, group=None)
    x, y = torch.randn(4, 8), torch.tensor([3, 3, 17, 39])

    def scored(seed):
        torch.manual_seed(seed)
        head.weight.grad = None
        head(x, y).backward()
        return (head.weight.grad.abs().sum(dim=1) > 0).nonzero().squeeze(1).tolist()

    first = scored(5)
    assert len(first) == 12 and {3, 17, 39} <= set(first)
    assert scored(5) == first and scored(6) != first
    head.eval()
    assert len(scored(5)) == 40


@pytest.mark.parametrize("name", FULL)
def test_loss_and_gradients_equal_single_process_head(results, name):
    world = len(results)
    c, d, b, *_ = CASES[name]
    head, _, _, loss, x_grad, w_grad, rng = reference(name, world)
    ranges = []
    for rank, res in enumerate(results):
        r = res[name]
        lo, hi = r["start"], r["stop"]
        ranges.append((lo, hi))
        # Same initial centres, and the same RNG state afterwards, as the single-process head.
        assert torch.equal(r["weight"], head.weight.detach()[lo:hi])
        assert torch.equal(r["rng_after_init"], rng)
        assert r["loss"] == pytest.approx(loss, abs=1e-5)
        assert torch.allclose(r["weight_grad"], w_grad[lo:hi], atol=1e-5)
        # The backbone-side gradient is the world size times the global-batch gradient of this
        # rank's rows (DDP then averages over ranks), i.e. the gradient of this rank's local mean.
        rows = slice(rank * b, (rank + 1) * b)
        assert torch.allclose(r["x_grad"], world * x_grad[rows], atol=1e-5)
        assert r["x_grad"].abs().max() > 1e-3
    assert ranges == class_ranges(c, world)


def test_backbone_gradient_after_ddp_average_equals_single_process(results):
    world = len(results)
    c, d, b, *_ = CASES["uneven"]
    x_grad = reference("uneven", world)[4]
    averaged = torch.cat([res["uneven"]["x_grad"] for res in results]) / world
    assert torch.allclose(averaged, x_grad, atol=1e-6)


def test_gather_rows_builds_the_whole_table_on_rank_zero(results):
    c, d, *_ = CASES["uneven"]   # 11 classes: 6 + 5 rows on 2 ranks
    head, *_, w_grad, _ = reference("uneven", len(results))
    assert torch.equal(results[0]["uneven"]["full_weight"], head.weight.detach())
    assert torch.allclose(results[0]["uneven"]["full_grad"], w_grad, atol=1e-5)
    for res in results[1:]:
        assert res["uneven"]["full_weight"].shape == (0, d)
    table = torch.arange(c * d, dtype=torch.float32).view(c, d)
    for res in results:
        assert torch.equal(res["uneven"]["scatter"], table[res["uneven"]["start"]:res["uneven"]["stop"]])


def test_partial_fc_keeps_positives_and_equals_ce_over_the_sampled_centres(results):
    world = len(results)
    c, d, b, s, m, rate = CASES["sampled"]
    head, x, y, *_ = reference("sampled", world)
    sampled = []
    for res in results:
        r = res["sampled"]
        lo, hi = r["start"], r["stop"]
        rows = (r["weight_grad"].abs().sum(dim=1) > 0).nonzero().squeeze(1) + lo   # unsampled rows: zero gradient
        owned_targets = {int(t) for t in y if lo <= t < hi}
        assert owned_targets <= set(rows.tolist()), "a positive centre was not sampled"
        assert len(rows) == max(math.ceil(rate * (hi - lo)), len(owned_targets))
        sampled.append(rows)
    cols = torch.cat(sampled)
    assert len(cols) < c
    # The reference: CosFace cross-entropy restricted to the sampled centres.
    head.weight.grad = None
    xr = x.detach().clone().requires_grad_(True)
    logits = head.logits(xr, y)[:, cols]
    loss = F.cross_entropy(logits, (cols[None, :] == y[:, None]).float().argmax(dim=1))
    loss.backward()
    for rank, res in enumerate(results):
        r = res["sampled"]
        assert r["loss"] == pytest.approx(loss.item(), abs=1e-5)
        assert torch.allclose(r["x_grad"], world * xr.grad[rank * b:(rank + 1) * b], atol=1e-5)
        assert torch.allclose(r["weight_grad"][sampled[rank] - r["start"]], head.weight.grad[sampled[rank]], atol=1e-5)


def test_no_rank_holds_a_full_logit_matrix_and_memory_model_fits(results):
    world = len(results)
    for name in ("uneven", "sampled"):
        c, d, b, _, _, rate = CASES[name]
        model = head_memory(c, d, b, world_size=world, sample_rate=rate)
        r = results[0][name]   # rank 0 holds the largest shard
        assert r["weight"].numel() * 4 == model.weight_bytes
        softmax = (world * b, model.sampled)
        assert softmax in r["saved_shapes"]
        assert math.prod(softmax) * 4 == model.logits_bytes
        if world > 1:
            assert not any(c in shape for shape in r["saved_shapes"]), r["saved_shapes"]


@pytest.mark.parametrize("case", range(len(MARGIN_CASES)), ids=[c[0] for c in MARGIN_CASES])
def test_other_margins_sharded_equal_single_process_head(results, case):
    """ArcFace, the combined margin and the plain normalised softmax, class-sharded, against the
    one-process MarginHead on the whole global batch."""
    from cosface.heads import MarginHead
    from cosface.losses import Margin

    name, c, d, b, s, margin = MARGIN_CASES[case]
    world = len(results)
    x, y = head_inputs(c, d, b, world, len(HEAD_CASES) + case)
    torch.manual_seed(INIT_SEED)
    head = MarginHead(c, d, s=s, margin=Margin(*margin))
    x = x.clone().requires_grad_(True)
    loss = head(x, y)
    loss.backward()
    for rank, res in enumerate(results):
        r = res[name]
        assert r["loss"] == pytest.approx(loss.item(), abs=1e-5)
        assert torch.allclose(r["weight_grad"], head.weight.grad[r["start"]:r["stop"]], atol=1e-5)
        assert torch.allclose(r["x_grad"], world * x.grad[rank * b:(rank + 1) * b], atol=1e-5)
        assert r["x_grad"].abs().max() > 1e-3


def test_normal_init_shards_are_the_rows_of_the_single_process_head(results):
    """head.init = "normal", built by Runtime.build_head: each rank's centres are bit for bit its rows
    of the one-process head's with the same seed, and the RNG is left in the same state."""
    c, d, std = NORMAL_INIT_CASE
    torch.manual_seed(INIT_SEED)
    whole = CosFaceHead(c, d, init="normal", init_std=std).weight.detach()
    rng = torch.get_rng_state()
    assert whole.std().item() == pytest.approx(std, rel=0.2)
    bounds = [(res["normal_init"]["start"], res["normal_init"]["stop"]) for res in results]
    assert bounds == class_ranges(c, len(results))
    for res in results:
        r = res["normal_init"]
        assert torch.equal(r["weight"], whole[r["start"]:r["stop"]])
        assert torch.equal(r["rng_after_init"], rng)


@pytest.mark.parametrize("clip", [0.0, 5.0])
def test_fp16_loss_scaling_skips_or_takes_a_step_on_every_rank_together(tmp_path, clip):
    """The sharded head's gradients differ per rank, so an fp16 overflow can appear in one rank's shard only;
    GradScaler decides per rank, and a step skipped on one rank and taken on another would leave the
    replicated backbone (and the loss scale) different across ranks from then on."""
    check_all_ok(run_ranks(["overflow", str(tmp_path), str(clip)], 2, tmp_path / "logs", timeout=60))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["scale"] == r1["scale"] == 512.0          # halved on both: the step was skipped everywhere
    for k in r0["backbone"]:
        assert torch.equal(r0["backbone"][k], r1["backbone"][k]), k
