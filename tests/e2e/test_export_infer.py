"""A tiny model trained on synthetic faces, exported to ONNX and TorchScript, then served.

Checks: exported vs eager within 1e-4, one self-contained file with its metadata, a free batch axis,
`cosface infer` (ONNX Runtime) giving the accuracy of `cosface eval` (eager), and embed / verify on
files written by the synthetic generator.
"""
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cosface import __version__
from cosface.checkpoint import load_backbone, load_checkpoint
from cosface.cli import main
from cosface.config import load_config
from cosface.data.synthetic.writer import generate
from cosface.errors import CosfaceError
from cosface.export import export_model
from cosface.inference import Embedder, list_images
from cosface.preprocess import normalize

TOL = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    torch.set_num_threads(1)
    generate(root / "syn", identities=4, images_per_identity=8, lfw_identities=20, lfw_images_per_identity=2)
    lfw = root / "syn" / "lfw"
    # lr 0.01: a few steps at the seed's 0.1 on batches of 8 leave BN statistics that blow outputs up to
    # ~1e10, which says nothing about export and makes an absolute tolerance meaningless.
    cfg = load_config(None, [f"data.path='{root / 'syn' / 'train'}'", f"eval.lfw='{lfw}'", "train.batch_size=8",
                             "train.epochs=1", "data.workers=0", "checkpoint.save_start_epoch=1", "optim.lr=0.01"])
    from cosface.trainer import train

    ckpt = train(cfg, root / "run", progress=False).last_checkpoint
    onnx_result = export_model(ckpt, root / "onnx" / "model.onnx")
    images = list_images([lfw / "lfw_align_112"])
    return {"root": root, "lfw": lfw, "ckpt": ckpt, "onnx": onnx_result, "images": images}


def eager(ckpt, batch: np.ndarray) -> np.ndarray:
    model, prep, _ = load_backbone(ckpt)
    with torch.inference_mode():
        return model(normalize(torch.from_numpy(batch), prep).contiguous()).numpy()


def decoded(paths):
    from cosface.preprocess import decode_image

    return np.stack([decode_image(p.read_bytes()) for p in paths])


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_onnx_export_is_one_file_with_metadata_and_matches_eager(run):
    import onnx

    r = run["onnx"]
    assert r.max_abs_diff <= TOL and r.parity_batch == 3 and r.batch is None
    assert [p.name for p in r.path.parent.iterdir()] == ["model.onnx"]          # no .data file, no temp file
    model = onnx.load(str(r.path), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param          # symbolic batch
    ev = load_checkpoint(run["ckpt"])["evaluation"]
    assert ev["protocol"] == "reference" and -1 <= ev["verify_threshold"] <= 1
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta == {
        "cosface_format": "1", "cosface_version": __version__, "backbone": "mobilefacenet",
        "embedding_size": "128", "num_classes": "4", "input_size": "112", "channel_order": "RGB",
        "mean": "128.0", "std": "128.0", "layout": "NCHW",
        "threshold": repr(float(ev["verify_threshold"])), "evaluation": json.dumps(ev),
        "alignment_template": "arcface", "alignment_method": "umeyama-similarity-5pt+bilinear",
    }
    emb = Embedder(r.path, device="cpu")
    for n in (1, 3):                                                            # the batch axis is free
        batch = decoded(run["images"][:n])
        got = emb.features(batch)
        assert got.shape == (n, 128)
        assert np.max(np.abs(got - eager(run["ckpt"], batch))) <= TOL


def test_readme_metadata_table_names_every_key_an_export_writes(run):
    import onnx

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("Metadata (ONNX `metadata_props`", 1)[1].split("\n\n", 2)[1]   # the table after the intro
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")}
    meta = {p.key: p.value for p in onnx.load(str(run["onnx"].path), load_external_data=False).metadata_props}
    documented = {key.strip().strip("`") for first in rows for key in first.split(",")}
    assert set(meta) <= documented, sorted(set(meta) - documented)
    row = rows["`evaluation`"]
    ev = json.loads(meta["evaluation"])
    keys = [*ev, *ev["far_thresholds"]]                    # far_thresholds: {"0.1": t, "0.01": t, "0.001": t or null}
    assert [k for k in keys if f"`{k}`" not in row and f'"{k}"' not in row] == [], row


def test_torchscript_export_through_the_cli(run, capsys):
    out = run["root"] / "ts" / "model.pt"
    rc, stdout, _ = cli(capsys, "export", "--ckpt", run["ckpt"], "--format", "torchscript", "-o", out)
    assert rc == 0
    diff = float(re.search(r"parity: max \|exported - eager\| = (\S+) on 3 random images", stdout).group(1))
    assert diff <= TOL and re.search(r"threshold -?\d\.\d{4}$", stdout.strip())
    with zipfile.ZipFile(out) as z:
        meta = json.loads(z.read(next(n for n in z.namelist() if n.endswith("/extra/cosface.json"))))
    assert meta["input_size"] == "112" and meta["channel_order"] == "RGB" and meta["embedding_size"] == "128"
    emb = Embedder(out, device="cpu")
    assert emb.kind == "torchscript"
    for n in (1, 3):
        batch = decoded(run["images"][-n:])
        assert np.max(np.abs(emb.features(batch) - eager(run["ckpt"], batch))) <= TOL


def test_export_above_tolerance_fails_and_leaves_no_file(run, monkeypatch, tmp_path):
    features = Embedder.features
    monkeypatch.setattr(Embedder, "features", lambda self, batch: features(self, batch) + 1e-3)
    with pytest.raises(CosfaceError, match=r"differs from the eager model by 0\.001 .* not written"):
        export_model(run["ckpt"], tmp_path / "m.pt", fmt="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_infer_reports_what_eval_reports(run, capsys):
    common = ["--lfw", run["lfw"], "--no-progress", "--batch-size", "16"]
    rc, out, _ = cli(capsys, "eval", "--ckpt", run["ckpt"], "--json", *common)
    assert rc == 0
    ref = json.loads(out)
    rc, out, _ = cli(capsys, "infer", "--model", run["onnx"].path, "--json", *common)
    assert rc == 0
    got = json.loads(out)
    assert ref["pairs"] == got["pairs"] == 40 and got["protocol"] == "reference"
    assert abs(got["mean"] - ref["mean"]) <= 0.001                                # 0.1 percentage point
    # A fold's threshold is the middle of the grid points tied at the best accuracy; with 40 pairs the
    # ends of that range move with score changes of 1e-3 (eval on a GPU runs TF32 convolutions).
    np.testing.assert_allclose(got["thresholds"], ref["thresholds"], atol=1e-2)
    assert got["mean"] == pytest.approx(load_checkpoint(run["ckpt"])["evaluation"]["mean"], abs=0.001)
    # The same table as eval prints: source line, then the folds and AVE as the reference prints them.
    text = cli(capsys, "infer", "--model", run["onnx"].path, *common)[1].splitlines()
    assert text[0].startswith(f"{ref['source']}: 40 pairs, reference LFW 10-fold protocol")
    assert text[1:12] == [f"{i + 1}\t{a * 100:.2f}" for i, a in enumerate(ref["folds"])] + [f"AVE: {ref['mean'] * 100:.2f}"]


def test_embed_and_verify_on_synthetic_files(run, capsys, tmp_path):
    rc, out, _ = cli(capsys, "embed", "--model", run["onnx"].path, run["lfw"] / "lfw_align_112", "-o", tmp_path / "e.npy")
    assert rc == 0 and "wrote 40 embeddings of 256 values" in out
    emb = np.load(tmp_path / "e.npy")
    files = (tmp_path / "e.txt").read_text().splitlines()
    assert emb.shape == (40, 256) and files == [str(p) for p in run["images"]]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    eager_rows = Embedder(run["ckpt"], device="cpu").embed(files[:4])
    assert np.max(np.abs(emb[:4] - eager_rows)) <= TOL

    a, b = run["images"][0], run["images"][1]                # the two images of one synthetic person
    ts = run["root"] / "ts" / "model.pt"
    if not ts.exists():
        export_model(run["ckpt"], ts, fmt="torchscript")
    lines, codes = {}, {}
    for model in (run["ckpt"], run["onnx"].path, ts):
        codes[model], out, _ = cli(capsys, "verify", "--model", model, a, b)
        lines[model] = dict(line.split(":", 1) for line in out.splitlines())
    sims = {float(v["similarity"].split()[0]) for v in lines.values()}
    assert max(sims) - min(sims) <= 2e-4
    ckpt_threshold = lines[run["ckpt"]]["threshold"]
    assert "from the checkpoint: best threshold for this similarity over all pairs of its LFW evaluation" in ckpt_threshold
    assert "from the model metadata: best threshold for this similarity" in lines[run["onnx"].path]["threshold"]
    sim, threshold = sims.pop(), float(ckpt_threshold.split()[0])
    want = "same person" if sim > threshold else "different people"
    assert all(v["verdict"].strip() == want for v in lines.values())
    assert set(codes.values()) == {0 if want == "same person" else 1}     # the exit status is the verdict
    rc, out, _ = cli(capsys, "verify", "--model", run["onnx"].path, a, b, "--threshold", "1.0")
    assert rc == 1 and "threshold:  1.0000 from --threshold" in out and "verdict:    different people" in out
    rc, out, _ = cli(capsys, "verify", "--model", run["onnx"].path, a, b, "--threshold", "-1.0", "--json")
    assert rc == 0 and json.loads(out) == {"same": True, "similarity": pytest.approx(sim, abs=2e-4), "threshold": -1.0,
                                           "threshold_source": "--threshold", "images": [str(a), str(b)],
                                           "model": str(run["onnx"].path),
                                           "alignments": [f"{a}: 112x112, taken as already aligned",
                                                          f"{b}: 112x112, taken as already aligned"]}


def test_evaluated_checkpoint_stores_a_threshold_per_measurable_far(run, capsys):
    from cosface.checkpoint import load_checkpoint

    # 20 pairs, 10 of them different: FAR 0.1 allows one false accept; 0.01 and 0.001 cannot be measured.
    ckpt = load_checkpoint(run["ckpt"])
    stored = ckpt["evaluation"]["far_thresholds"]
    # Portable: the data lay outside the working directory, so only the folder names are kept.
    assert ckpt["config"]["data"]["path"] == "train" and ckpt["config"]["eval"]["lfw"] == "lfw"
    assert ckpt["evaluation"]["dataset"] == "lfw" and Embedder(run["onnx"].path).info.evaluation["dataset"] == "lfw"
    assert stored["0.01"] is None and stored["0.001"] is None and isinstance(stored["0.1"], float)
    onnx = Embedder(run["onnx"].path)
    assert onnx.threshold_at_far(0.1) == stored["0.1"]                   # carried into the export
    a, b = run["images"][0], run["images"][1]
    rc, out, _ = cli(capsys, "verify", "--model", run["onnx"].path, a, b, "--far", "0.1", "--json")
    assert rc in (0, 1) and json.loads(out)["threshold"] == stored["0.1"]
    rc, _, err = cli(capsys, "verify", "--model", run["onnx"].path, a, b, "--far", "0.001")
    assert rc == 2 and "FAR 0.001 could not be measured" in err and len(err.splitlines()) == 1


def test_cli_errors_name_the_wrong_kind_of_file(run, capsys, tmp_path):
    rc, _, err = cli(capsys, "infer", "--model", run["ckpt"], "--lfw", run["lfw"])
    assert rc == 2 and "is a cosface training checkpoint, not an ONNX model" in err and len(err.splitlines()) == 1
    rc, _, err = cli(capsys, "export", "--ckpt", run["onnx"].path, "-o", tmp_path / "x.onnx")
    assert rc == 2 and "is an ONNX model, not a cosface training checkpoint" in err
    bad = tmp_path / "face.jpg"
    bad.write_bytes(b"\xff\xd8 this is no JPEG")
    rc, _, err = cli(capsys, "verify", "--model", run["onnx"].path, bad, run["images"][0])
    assert rc == 2 and f"{bad}: " in err
