"""`cosface demo`: the whole pipeline on the built-in synthetic faces, in minutes on a CPU.

generate synthetic identities -> train MobileFaceNet + CosFace (the demo preset) -> verify on
held-out identities with the reference LFW protocol -> export to ONNX and re-verify with ONNX
Runtime -> summary. Every step is the public library call a user would make.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cosface.config import load_config
from cosface.optional import check

if TYPE_CHECKING:
    from cosface.evaluation import Report


@dataclass
class DemoResult:
    out: Path
    manifest: dict
    baseline: float              # raw-pixel accuracy on the same pairs, reference protocol
    report: Report               # the trained checkpoint's evaluation Report (reference protocol)
    onnx_mean: float             # the exported model's mean accuracy through ONNX Runtime
    checkpoint: Path
    onnx: Path
    epochs: int
    seconds: dict


def run_demo(out: str | Path, *, identities: int = 260, images_per_identity: int = 20,
             lfw_identities: int = 200, seed: int = 0, config: str = "demo",
             overrides: tuple[str, ...] = (), progress: bool = True, say=print) -> DemoResult:
    from cosface.data.synthetic import generate, raw_pixel_baseline
    from cosface.export import export_model
    from cosface.inference import infer_lfw
    from cosface.train import train

    # The last step exports to ONNX and runs it: say now, not after the training, if that cannot work.
    check("onnx", "onnxscript", "onnxruntime", purpose="the demo's last step, ONNX export and ONNX Runtime")
    out = Path(out)
    seconds = {}
    t = time.perf_counter()
    data = out / "synthetic"
    manifest_file = data / "manifest.json"
    want = dict(identities=identities, images_per_identity=images_per_identity, lfw_identities=lfw_identities, seed=seed)
    if manifest_file.exists() and _same_set(json.loads(manifest_file.read_text()), want):
        manifest = json.loads(manifest_file.read_text())
        say(f"[1/4] reusing the synthetic set in {data}")
    else:
        say(f"[1/4] drawing {identities} training identities × {images_per_identity} images and "
            f"{lfw_identities} held-out identities into {data}")
        manifest = generate(data, identities=identities, images_per_identity=images_per_identity,
                            lfw_identities=lfw_identities, seed=seed, overwrite=True, progress=progress,
                            workers=os.cpu_count() or 1)
    seconds["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    # The trainer verifies the held-out identities at its save, so the checkpoint (and the export)
    # carries the evaluation and the threshold `cosface verify` uses.
    cfg = load_config(config, overrides).replace(**{"data.path": str(data / "train"), "eval.lfw": str(data / "lfw")})
    say(f"[2/4] training {cfg.model.backbone} + CosFace (s={cfg.head.s}, m={cfg.head.m}) for {cfg.train.epochs} epochs, "
        f"then verifying the held-out identities (reference LFW protocol)")
    run_dir = out / "run"
    if (run_dir / "config.toml").exists():  # a previous demo's run: start clean, not on top of it
        shutil.rmtree(run_dir)
    result = train(cfg, run_dir, progress=progress)
    seconds["train"] = time.perf_counter() - t

    report = result.report
    # Training with eval.lfw set always ends with a save that holds an evaluation.
    assert report is not None and result.last_checkpoint is not None

    t = time.perf_counter()
    say("[3/4] comparing with raw pixels on the same pairs")
    baseline = raw_pixel_baseline(data / "lfw")
    seconds["baseline"] = time.perf_counter() - t

    t = time.perf_counter()
    say("[4/4] exporting to ONNX and re-verifying with ONNX Runtime")
    exported = export_model(result.last_checkpoint, out / "model.onnx")
    onnx_report = infer_lfw(exported.path, data / "lfw", progress=progress)
    seconds["export"] = time.perf_counter() - t
    return DemoResult(out, manifest, baseline, report, onnx_report.mean, result.last_checkpoint, exported.path,
                      cfg.train.epochs, seconds)


def summary(r: DemoResult) -> str:
    m = r.manifest
    total = sum(r.seconds.values())
    lines = [
        "",
        "cosface demo: summary",
        f"  data      {m['train']['identities']} training identities, {m['train']['images']} images; "
        f"{m['lfw']['identities']} held-out identities, {m['lfw']['images']} images, {m['lfw']['pairs']} pairs",
        f"  training  {r.epochs} epochs in {r.seconds['train'] / 60:.1f} min "
        f"(total {total / 60:.1f} min: generate {r.seconds['generate']:.0f} s, train and verify {r.seconds['train']:.0f} s, "
        f"raw-pixel baseline {r.seconds['baseline']:.0f} s, export and re-verify {r.seconds['export']:.0f} s)",
        "",
        r.report.format(),
        "",
        f"  held-out identities, reference protocol:  {100 * r.report.mean:.2f} %",
        f"  raw pixels on the same pairs:             {100 * r.baseline:.2f} %",
        f"  exported ONNX model (ONNX Runtime):       {100 * r.onnx_mean:.2f} %",
        "",
        f"  checkpoint  {r.checkpoint}",
        f"  ONNX model  {r.onnx}",
        f"  metrics     {r.out / 'run' / 'metrics.jsonl'}",
        f"  try         cosface verify --model {r.onnx} IMG1 IMG2",
    ]
    return "\n".join(lines)


def _same_set(manifest: dict, want: dict) -> bool:
    return (manifest.get("seed") == want["seed"]
            and manifest.get("train", {}).get("identities") == want["identities"]
            and manifest.get("train", {}).get("images_per_identity") == want["images_per_identity"]
            and manifest.get("lfw", {}).get("identities") == want["lfw_identities"])

