"""Export every registered backbone to ONNX through `cosface export`'s own path (with its parity check)
and print the difference against eager and the time taken. Too slow for the test suite on a CPU
(tens of seconds per IResNet: the exporter traces every layer), so it lives here.

    python benchmarks/export_parity.py                          # every backbone, 112×112
    python benchmarks/export_parity.py --backbones iresnet18 iresnet50 --input-size 32
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cosface.backbones import available_backbones, build_backbone
from cosface.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, versions
from cosface.config import Config
from cosface.export import export_model
from cosface.preprocess import Preprocessing


def random_checkpoint(name: str, input_size: int, path: Path) -> None:
    """A checkpoint of `name` with its own random initialisation and BatchNorm statistics measured on
    random images (so activations stay in a trained model's range instead of growing with depth)."""
    torch.manual_seed(0)
    model = build_backbone(name, input_size=input_size)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase):
            m.reset_running_stats()
            m.momentum = None                                  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, input_size, input_size))
    cfg = Config().replace(**{"model.backbone": name, "model.input_size": input_size,
                              "model.embedding_size": model.embedding_size})
    atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), "config": cfg.to_dict(),
                 "num_classes": 0, "class_names": [], "preprocessing": Preprocessing(size=input_size).to_dict(),
                 "backbone": model.state_dict(), "head": {}}, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["mobilefacenet", "iresnet18", "iresnet34", "iresnet50",
                                                        "iresnet100", "iresnet200"], choices=available_backbones())
    ap.add_argument("--input-size", type=int, default=112)
    args = ap.parse_args()
    print(f"# ONNX export + parity (random weights), input {args.input_size}x{args.input_size}, torch {torch.__version__}")
    print(f"{'backbone':>14} {'max |onnx - eager|':>19} {'max |eager|':>12} {'MB':>7} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as d:
        for name in args.backbones:
            ckpt, out = Path(d) / f"{name}.pt", Path(d) / f"{name}.onnx"
            random_checkpoint(name, args.input_size, ckpt)
            t = time.perf_counter()
            r = export_model(ckpt, out)                      # raises when parity fails
            print(f"{name:>14} {r.max_abs_diff:>19.3g} {r.scale:>12.3g} {out.stat().st_size / 1e6:>7.1f} "
                  f"{time.perf_counter() - t:>8.1f}", flush=True)
            out.unlink()


if __name__ == "__main__":
    main()
