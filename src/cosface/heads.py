"""Classification heads (class centres + margin loss) and their registry.

A head maps (embeddings (B, D), labels (B,)) -> mean loss. Heads that hold only part of the class
centres (cosface.parallel) implement the same contract plus `gather_rows`/`scatter_rows`, which the
checkpoint code uses so a head is always saved whole. Every registered head type has
`from_config(head_cfg, num_classes, embedding_size)`; `build_head` calls it.

Every head, whole or sharded, fills its centres with `init_centre_rows`, so with the same seed a
one-process and an N-process run start from the same table, bit for bit.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cosface.errors import CosfaceError
from cosface.losses import Margin, cosface_logits, margin_for, margin_logits, normalized_cosines
from cosface.registry import Registry

HEADS: Registry = Registry("head type")
register_head = HEADS.register
available_heads = HEADS.names
head_class = HEADS.get

# Values of the centre table drawn at a time by init_centre_rows (~16 MiB of fp32 per chunk).
INIT_CHUNK_VALUES = 1 << 22


def _xavier_uniform(chunk: torch.Tensor, num_classes: int, std: float) -> torch.Tensor:
    # The same expression as nn.init.xavier_uniform_ (fan_in = D, fan_out = C), for identical bits.
    bound = math.sqrt(3.0) * math.sqrt(2.0 / float(chunk.shape[1] + num_classes))
    return chunk.uniform_(-bound, bound)


def _normal(chunk: torch.Tensor, num_classes: int, std: float) -> torch.Tensor:
    return chunk.normal_(0.0, std)


# head.init -> how one chunk of rows is drawn: (chunk, num_classes, init_std) -> chunk, filled in place.
CENTRE_INITS: dict[str, Callable[[torch.Tensor, int, float], torch.Tensor]] = {
    "xavier": _xavier_uniform,   # U(±√(6 / (C + D))), nn.init.xavier_uniform_ on the (C, D) table
    "normal": _normal,           # N(0, init_std²), insightface arcface_torch's Partial FC
}


@torch.no_grad()
def init_centre_rows(weight: torch.Tensor, num_classes: int, start: int = 0, init: str = "xavier",
                     std: float = 0.01, chunk_values: int = INIT_CHUNK_VALUES) -> None:
    """Fill `weight` with rows [start, start + len) of the whole (num_classes, D) centre table drawn by
    `init` from torch's global generator, and leave the generator where drawing the whole table would.

    The table is always drawn whole, in chunks of whole rows (`chunk_values` values, rounded down to
    rows; memory: one chunk), and a head keeps the rows it owns. The chunking depends only on D, never on
    `start` or the number of processes, so a shard holds exactly the rows of a one-process head with the
    same seed. That matters for "normal": torch's CPU normal_ draws in blocks of 16 values and redraws
    the last 16 of a tensor whose size is not a multiple of 16, so one call over the table and one call
    per shard give different values; uniform_ draws value by value, and "xavier" equals
    nn.init.xavier_uniform_ on the whole table. Cost: about 0.5 s per 10^8 values on one core (~25 s per
    rank for 10M × 512), once, at start-up; a resumed run overwrites the rows from the checkpoint.
    """
    if init not in CENTRE_INITS:
        raise CosfaceError(f"head.init must be one of {sorted(CENTRE_INITS)}, got {init!r}")
    if not std > 0:
        raise CosfaceError(f"head.init_std must be > 0, got {std}")
    draw = CENTRE_INITS[init]
    d = weight.shape[1]
    stop = start + weight.shape[0]
    assert 0 <= start <= stop <= num_classes, (start, stop, num_classes)
    rows = max(1, chunk_values // d)
    buf = torch.empty(rows, d, dtype=weight.dtype)   # on the CPU: the CPU generator draws every head's table
    for lo in range(0, num_classes, rows):
        hi = min(lo + rows, num_classes)
        chunk = draw(buf[:hi - lo], num_classes, std)
        a, b = max(lo, start), min(hi, stop)
        if a < b:
            weight[a - start:b - start] = chunk[a - lo:b - lo]


@register_head("cosface")
class CosFaceHead(nn.Module):
    """Large Margin Cosine Loss over all classes on one process. No bias; centres drawn by
    init_centre_rows (`init`: "xavier" uniform, or "normal" with standard deviation `init_std`)."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 32.0, m: float = 0.40,
                 init: str = "xavier", init_std: float = 0.01):
        super().__init__()
        self.num_classes, self.s, self.m = num_classes, s, m
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        init_centre_rows(self.weight.data, num_classes, 0, init, init_std)

    @classmethod
    def from_config(cls, cfg, num_classes: int, embedding_size: int) -> nn.Module:
        return cls(num_classes, embedding_size, s=cfg.s, m=cfg.m, init=cfg.init, init_std=cfg.init_std)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosface_logits(normalized_cosines(embeddings, self.weight), labels, self.s, self.m)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def margin_on_target(self, cos_t: torch.Tensor) -> torch.Tensor:
        """The target cosine after the margin, (B,) -> (B,): what cosface.margin_ce needs of a head."""
        return cos_t - self.m

    # The whole table lives here, so saving and loading are identities.
    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def scatter_rows(self, full: torch.Tensor) -> torch.Tensor:
        return full


class MarginHead(nn.Module):
    """Softmax over s·cos with a cosface.losses.Margin on each target, all classes on one process.
    No bias; centres drawn as CosFaceHead's."""

    def __init__(self, num_classes: int, embedding_size: int, s: float, margin: Margin,
                 init: str = "xavier", init_std: float = 0.01):
        super().__init__()
        self.num_classes, self.s, self.margin = num_classes, s, margin
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        init_centre_rows(self.weight.data, num_classes, 0, init, init_std)

    @classmethod
    def from_config(cls, cfg, num_classes: int, embedding_size: int) -> nn.Module:
        return MarginHead(num_classes, embedding_size, s=cfg.s, margin=margin_for(cfg),
                          init=cfg.init, init_std=cfg.init_std)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, s={self.s}, margin {self.margin.describe()}"

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return margin_logits(normalized_cosines(embeddings, self.weight), labels, self.s, self.margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels)

    def margin_on_target(self, cos_t: torch.Tensor) -> torch.Tensor:
        """The target cosine after the margin, (B,) -> (B,): what cosface.margin_ce needs of a head."""
        return self.margin.target(cos_t)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def scatter_rows(self, full: torch.Tensor) -> torch.Tensor:
        return full


@register_head("arcface")
class ArcFaceHead(MarginHead):
    """ArcFace (additive angular margin): target logit s·cos(θ + m)."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0, m: float = 0.5,
                 init: str = "xavier", init_std: float = 0.01):
        super().__init__(num_classes, embedding_size, s, Margin(1.0, m, 0.0), init, init_std)


@register_head("combined")
class CombinedMarginHead(MarginHead):
    """insightface's combined margin: target logit s·(cos(m1·θ + m2) − m3)."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 64.0,
                 m1: float = 1.0, m2: float = 0.5, m3: float = 0.0, init: str = "xavier", init_std: float = 0.01):
        super().__init__(num_classes, embedding_size, s, Margin(m1, m2, m3), init, init_std)


@register_head("softmax")
class NormSoftmaxHead(MarginHead):
    """Normalised softmax (NormFace): s·cos θ for every class, no margin."""

    def __init__(self, num_classes: int, embedding_size: int, s: float = 32.0,
                 init: str = "xavier", init_std: float = 0.01):
        super().__init__(num_classes, embedding_size, s, Margin(), init, init_std)


def build_head(head_cfg, num_classes: int, embedding_size: int) -> nn.Module:
    """The one-process head of a [head] config section."""
    return head_class(head_cfg.type).from_config(head_cfg, num_classes, embedding_size)
