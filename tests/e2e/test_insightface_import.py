"""insightface weights: import -> checkpoint -> export -> ONNX Runtime, and metadata-less ONNX models."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from cosface.backbones import build_backbone
from cosface.checkpoint import load_backbone, load_checkpoint
from cosface.errors import CosfaceError
from cosface.insightface import import_insightface
from cosface.preprocess import Preprocessing


SIZE = 32   # insightface's models take 112×112; a smaller input (a smaller FC) keeps this test fast


def insightface_state_dict(arch: str, seed: int = 0, input_size: int = SIZE) -> dict:
    """Random weights under insightface's key names, scaled so a deep residual net stays finite:
    conv weights ~ N(0, 1/fan_in), small last-BN scales on the residual branches, random BN statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in build_backbone(arch, input_size=input_size).state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(1000)
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean") or k.endswith(".bias"):
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
        elif v.dim() == 1:   # BN scales, PReLU slopes
            scale = 0.2 if ".bn3." in k else 1.0
            state[k] = scale * (0.5 + 0.5 * torch.rand(v.shape, generator=g))
        else:                # conv / fc weights
            state[k] = torch.randn(v.shape, generator=g) / math.sqrt(v[0].numel())
    state["features.weight"] = torch.ones(512)     # fixed at 1 in insightface
    return state


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("insightface")
    state = insightface_state_dict("iresnet18")
    assert {"conv1.weight", "prelu.weight", "layer1.0.downsample.0.weight", "layer4.1.bn3.running_var",
            "fc.weight", "features.running_mean"} <= set(state)
    torch.save(state, d / "backbone.pth")
    r = import_insightface(d / "backbone.pth", "iresnet18", d / "r18.pt", input_size=SIZE)
    assert (r.arch, r.embedding_size, r.parameters) == ("iresnet18", 512, 24_025_600 - 512 * 512 * (49 - 4))
    return d, state


def test_checkpoint_is_ordinary_and_records_insightface_preprocessing(imported):
    d, state = imported
    ckpt = load_checkpoint(d / "r18.pt")
    assert ckpt["preprocessing"] == Preprocessing(size=SIZE, channel_order="RGB", mean=127.5, std=127.5).to_dict()
    assert ckpt["config"]["model"]["backbone"] == "iresnet18" and ckpt["num_classes"] == 0
    model, prep, _ = load_backbone(d / "r18.pt")
    ref = build_backbone("iresnet18", input_size=SIZE)
    ref.load_state_dict(state, strict=True)
    ref.eval()
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 127.5     # insightface's own recipe
    with torch.no_grad():
        want = ref(x)
        from cosface.preprocess import normalize
        got = model(normalize(torch.from_numpy(images), prep).contiguous())
    assert torch.allclose(got, want, atol=1e-5) and 1e-2 < want.abs().max() < 1e3


def test_export_onnx_parity_then_metadata_less_model_needs_and_takes_mean_std(imported, tmp_path):
    import onnx

    from cosface.export import export_model
    from cosface.inference import Embedder

    d, _ = imported
    r = export_model(d / "r18.pt", tmp_path / "r18.onnx")
    assert r.max_abs_diff <= 1e-4 * max(1.0, r.scale) and r.info.preprocessing.mean == 127.5
    # Strip cosface's metadata and rename the input: what insightface's own exports look like.
    proto = onnx.load(str(tmp_path / "r18.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(CosfaceError, match="--mean 127.5 --std 127.5"):
        Embedder(tmp_path / "bare.onnx", device="cpu")
    bare = Embedder(tmp_path / "bare.onnx", device="cpu", preprocessing=Preprocessing(mean=127.5, std=127.5))
    assert bare.info.embedding_size == 512 and bare.info.preprocessing.size == SIZE
    images = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    tagged = Embedder(tmp_path / "r18.onnx", device="cpu")
    assert np.array_equal(bare.features(images), tagged.features(images))
    with pytest.raises(CosfaceError, match="carries its own preprocessing metadata"):
        Embedder(tmp_path / "r18.onnx", device="cpu", preprocessing=Preprocessing(mean=127.5, std=127.5))
    with pytest.raises(CosfaceError, match="records its own preprocessing"):
        Embedder(d / "r18.pt", device="cpu", preprocessing=Preprocessing(mean=127.5, std=127.5))
    # verify: the imported checkpoint and its export agree on a pair.
    from skimage import data

    a, b = data.astronaut()[:300, 100:400], data.coffee()[:300, :300]
    v_ckpt = Embedder(d / "r18.pt", device="cpu", quiet=True, detect=False).verify(a, b)
    v_onnx = Embedder(tmp_path / "r18.onnx", device="cpu", quiet=True, detect=False).verify(a, b)
    assert v_ckpt.similarity == pytest.approx(v_onnx.similarity, abs=1e-4)


def test_infer_cli_wants_mean_and_std_together(imported):
    d, _ = imported
    out = subprocess.run([sys.executable, "-m", "cosface", "infer", "--model", str(d / "r18.pt"), "--lfw", str(d),
                          "--mean", "127.5"], capture_output=True, text=True)
    assert out.returncode == 2 and "--mean and --std go together" in out.stderr


def test_wrong_architecture_names_the_first_mismatched_key(imported, tmp_path):
    d, state = imported
    out = subprocess.run([sys.executable, "-m", "cosface", "import-insightface", str(d / "backbone.pth"),
                          "--arch", "iresnet34", "-o", str(tmp_path / "x.pt")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"cosface import-insightface: error: {d / 'backbone.pth'} does not fit iresnet34 "
                                  f"(input 112x112, 512-d): first mismatched key 'layer1.2.bn1.weight' is missing from "
                                  f"the file; its blocks per stage are those of iresnet18 (--arch iresnet18)")
    bad = dict(state)
    bad["fc.weight"] = bad["fc.weight"][:, :100]
    torch.save({"state_dict_backbone": {f"module.{k}": v for k, v in bad.items()}}, tmp_path / "ckpt_gpu_0.pt")
    with pytest.raises(CosfaceError, match=r"first mismatched key 'fc\.weight' has shape \(512, 100\) in the file"):
        import_insightface(tmp_path / "ckpt_gpu_0.pt", "iresnet18", tmp_path / "x.pt", input_size=SIZE)
    torch.save({"weights": [1, 2]}, tmp_path / "junk.pth")
    with pytest.raises(CosfaceError, match="is not a state dict of tensors"):
        import_insightface(tmp_path / "junk.pth", "iresnet18", tmp_path / "x.pt")
    with pytest.raises(CosfaceError, match="insightface backbones importable here are iresnet100"):
        import_insightface(d / "backbone.pth", "mobilefacenet", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_output_that_is_the_source_file_is_refused_and_the_weights_survive(imported, tmp_path):
    d, _ = imported
    src = tmp_path / "backbone.pth"
    src.write_bytes((d / "backbone.pth").read_bytes())
    before = src.read_bytes()
    (tmp_path / "link.pth").symlink_to(src)
    for out in (src, tmp_path / "link.pth", tmp_path / "." / "backbone.pth"):
        with pytest.raises(CosfaceError, match=f"{out} is the file being imported"):
            import_insightface(src, "iresnet18", out, input_size=SIZE)
    assert src.read_bytes() == before


def test_infer_cli_refuses_channel_order_without_mean_and_std(imported, capsys):
    from cosface.cli import main

    d, _ = imported
    with pytest.raises(SystemExit) as e:   # a cosface model has its own channel order: not silently dropped
        main(["infer", "--model", str(d / "r18.pt"), "--lfw", str(d), "--channel-order", "BGR"])
    assert e.value.code == 2 and "--channel-order goes with --mean and --std" in capsys.readouterr().err
