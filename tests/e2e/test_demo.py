"""The demo pipeline at tiny size: synthetic faces -> train -> held-out verification -> ONNX -> summary."""
import torch

from cosface.demo import run_demo, summary

TINY = ("train.epochs=4", "train.batch_size=16", "schedule.warmup_epochs=0.0", "data.workers=0",
        "checkpoint.save_start_epoch=4")


def test_demo_learns_identities_it_never_saw(tmp_path):
    torch.set_num_threads(2)
    said = []
    r = run_demo(tmp_path / "demo", identities=40, images_per_identity=10, lfw_identities=40, seed=1,
                 overrides=TINY, progress=False, say=said.append)
    assert len(said) == 4 and said[0].startswith("[1/4]")
    assert r.manifest["train"]["images"] == 400 and r.manifest["lfw"]["identities"] == 40
    # Held-out identities: clearly above what raw pixels achieve on the same pairs.
    assert r.report.mean >= r.baseline + 0.05, (r.report.mean, r.baseline)
    assert abs(r.onnx_mean - r.report.mean) <= 0.001  # the exported model verifies the same
    text = summary(r)
    assert "AVE:" in text and f"{100 * r.report.mean:.2f} %" in text and str(r.onnx) in text
    assert r.checkpoint.name == "epoch_004.pt" and r.onnx.exists()
    # A second run reuses the synthetic set and starts its training from scratch.
    again = run_demo(tmp_path / "demo", identities=40, images_per_identity=10, lfw_identities=40, seed=1,
                     overrides=(*TINY, "train.epochs=1", "checkpoint.save_start_epoch=1"), progress=False,
                     say=said.append)
    assert said[4].startswith("[1/4] reusing")
    assert [p.name for p in (tmp_path / "demo" / "run" / "checkpoints").iterdir()] == ["epoch_001.pt"]
    assert again.epochs == 1
