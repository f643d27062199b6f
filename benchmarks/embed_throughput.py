"""Embeddings/s of a backbone's forward pass under eager PyTorch, TorchScript and ONNX Runtime.

The model is MobileFaceNet with random weights (speed does not depend on them), exported the way
`cosface export` does it (traced TorchScript; dynamo ONNX with a dynamic batch). Every runtime gets
the same normalised float32 NCHW batch, so decoding and preprocessing are left out: this is the
model's own rate. Each figure is batch x calls / seconds over at least --seconds after warm-up.

    python benchmarks/embed_throughput.py --threads 1 --batch 1 64
    python benchmarks/embed_throughput.py --device cuda --batch 1 64 256    # eager + TorchScript on the GPU
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cosface import __version__
from cosface.backbones import build_backbone
from cosface.export import export_onnx, export_torchscript
from cosface.inference import ModelInfo
from cosface.preprocess import Preprocessing

RUNTIMES = ("eager", "torchscript", "onnxruntime")


def build_runners(backbone: str, device: torch.device, threads: int, workdir: Path, runtimes) -> dict:
    torch.manual_seed(0)
    model = build_backbone(backbone).eval()
    example = torch.randn(2, 3, 112, 112)
    info = ModelInfo(Preprocessing(), model.embedding_size, backbone, 0, __version__)
    runners = {}
    if "torchscript" in runtimes:
        path = workdir / "model.pt"
        export_torchscript(model, example, path, info)
        ts = torch.jit.load(str(path), map_location=device).eval()
        runners["torchscript"] = lambda x: ts(x)
    if "onnxruntime" in runtimes:
        import onnxruntime as ort

        path = workdir / "model.onnx"
        export_onnx(model, example, path, info, dynamic=True, opset=None)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                print("note: this onnxruntime has no CUDA execution provider; ONNX Runtime runs on the CPU",
                      file=sys.stderr)
            else:
                providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(path), opts, providers=providers)
        name = session.get_inputs()[0].name
        runners["onnxruntime"] = lambda x: session.run(None, {name: x.cpu().numpy()})[0]
    if "eager" in runtimes:
        eager = model.to(device)    # last: .to() moves the module the exports above read from
        runners = {"eager": eager, **runners}
    return runners


def measure(run, x: torch.Tensor, device: torch.device, seconds: float, warmup: int = 3) -> float:
    """Seconds per call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            run(x)
        sync()
        calls, t0 = 0, time.perf_counter()
        while True:
            run(x)
            calls += 1
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and calls >= 3:
                return elapsed / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="mobilefacenet")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="intra-op threads for torch and ONNX Runtime alike (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (ONNX Runtime needs onnxruntime-gpu for cuda)")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per figure")
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"# {args.backbone}, random weights; torch {torch.__version__}; {args.threads} thread(s) on {cpu}{gpu}")
    with tempfile.TemporaryDirectory() as tmp:
        runners = build_runners(args.backbone, device, args.threads, Path(tmp), args.runtimes)
        print(f"{'runtime':<12} {'batch':>5} {'ms/call':>9} {'emb/s':>9}")
        for batch in args.batch:
            x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (batch, 3, 112, 112)).astype(np.float32))
            x = x.to(device)
            for name, run in runners.items():
                per_call = measure(run, x, device, args.seconds)
                print(f"{name:<12} {batch:>5} {1000 * per_call:>9.2f} {batch / per_call:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
