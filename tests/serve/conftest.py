"""One tiny model for the gallery and service tests: synthetic faces, a few CPU training steps, once per session."""
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """{"model": checkpoint path, "faces": {identity: [held-out aligned 112x112 JPEGs]}}."""
    from cosface.config import load_config
    from cosface.data.synthetic.writer import generate
    from cosface.trainer import train

    root = tmp_path_factory.mktemp("tiny_model")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generate(root / "syn", identities=4, images_per_identity=4, lfw_identities=20, lfw_images_per_identity=2,
                 workers=1, progress=False)
        cfg = load_config(None, [f"data.path='{root / 'syn' / 'train'}'", "train.batch_size=8", "train.epochs=1",
                                 "data.workers=0", "checkpoint.save_start_epoch=1", "optim.lr=0.01"])
        ckpt = train(cfg, root / "run", progress=False).last_checkpoint
    finally:
        torch.set_num_threads(prev)
    lfw = root / "syn" / "lfw" / "lfw_align_112"
    faces = {d.name: sorted(d.glob("*.jpg")) for d in sorted(lfw.iterdir()) if d.is_dir()}
    return {"model": Path(ckpt), "faces": faces, "root": root}


@pytest.fixture(scope="session")
def embedder(tiny):
    from cosface.inference import Embedder

    return Embedder(tiny["model"], device="cpu", quiet=True)
