"""`cosface synth --ijb`, `cosface eval --ijb / --suite` and `cosface compare` end to end on a real
(randomly initialised) MobileFaceNet checkpoint and tiny synthetic sets."""
import json
import shutil

import numpy as np
import pytest

from cosface.cli import main

from test_eval_cli import write_bin, write_checkpoint, write_lfw


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def ijb(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "IJBC"
    assert main(["synth", "--ijb", str(out), "--subjects", "4", "--templates-per-subject", "2", "--quiet"]) == 0
    return out


def test_eval_ijb_json_and_text(ckpt, ijb, capsys, tmp_path):
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(ckpt), "--ijb", str(ijb), "--json", "--no-progress", "--batch-size", "16",
                 "--plot", str(tmp_path / "roc.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    manifest = json.loads((ijb / "manifest.json").read_text())["ijb"]
    assert out["protocol"] == "ijb" and out["target"] == "IJBC" and out["mode"] == "N1D1F1"
    assert out["pairs"] == manifest["pairs"] and out["images"] == manifest["images"] and out["templates"] == 8
    assert list(out["tar_at_far"]) == ["1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"]
    assert out["tar_at_far"]["1e-06"] is None                # a few dozen pairs cannot measure 1e-6
    assert 0.0 <= out["tar_at_far"]["0.1"] <= 1.0
    # insightface's reading is a number at every FAR (the nearest ROC point) and never below the exact one.
    assert list(out["tar_at_far_insightface"]) == list(out["tar_at_far"])
    assert all(isinstance(v, float) for v in out["tar_at_far_insightface"].values())
    assert all(out["tar_at_far_insightface"][f] >= v for f, v in out["tar_at_far"].items() if v is not None)
    ident = out["identification"]
    assert set(ident) == {"G1", "G2", "mean"}
    assert ident["G1"]["mated_probes"] == 2 and ident["G1"]["non_mated_probes"] == 2
    assert ident["mean"]["rank"]["1"] == pytest.approx((ident["G1"]["rank"]["1"] + ident["G2"]["rank"]["1"]) / 2)
    assert (tmp_path / "roc.png").stat().st_size > 0


def test_suite_runs_bin_lfw_and_ijb_sets(ckpt, ijb, capsys, tmp_path):
    rng = np.random.default_rng(0)
    suite = tmp_path / "suite"
    suite.mkdir()
    write_bin(suite / "cfp_fp.bin", rng)
    write_bin(suite / "agedb_30.bin", rng)
    write_lfw(suite / "lfw", rng)
    shutil.copytree(ijb, suite / "IJB_release" / "IJBC")
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(ckpt), "--suite", str(suite), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: v["protocol"] for k, v in out.items()} == {
        "agedb_30.bin": "insightface", "cfp_fp.bin": "insightface", "lfw": "reference", "IJB_release/IJBC": "ijb"}
    assert out["IJB_release/IJBC"]["summary"]["accuracy"] is None
    assert out["lfw"]["summary"]["accuracy"] == pytest.approx(out["lfw"]["mean"])

    assert main(["eval", "--ckpt", str(ckpt), "--suite", str(suite), "--no-progress", "--protocol", "reference"]) == 0
    text = capsys.readouterr().out
    for name, protocol in [("agedb_30.bin", "reference"), ("lfw", "reference"), ("IJB_release/IJBC", "ijb")]:
        assert any(line.startswith(name) and protocol in line for line in text.splitlines()), (name, text)
    assert "ijb: IJB template protocol" in text


def test_compare_two_models_on_bin_sets(ckpt, capsys, tmp_path):
    import torch

    from cosface.backbones import build_backbone
    from cosface.checkpoint import load_checkpoint, atomic_save

    # A second model: the same checkpoint with different weights, in a run folder's checkpoints/.
    other = load_checkpoint(ckpt)
    torch.manual_seed(1)
    other["backbone"] = build_backbone("mobilefacenet", embedding_size=128, input_size=112).state_dict()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    atomic_save(other, tmp_path / "run" / "checkpoints" / "epoch_001.pt")
    suite = tmp_path / "bins"
    suite.mkdir()
    write_bin(suite / "calfw.bin", np.random.default_rng(1))
    capsys.readouterr()
    assert main(["compare", str(ckpt), str(tmp_path / "run"), "--suite", str(suite), "--names", "a,b",
                 "--plot", str(tmp_path / "cmp.png"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[1].split()[-2:] == ["a", "b"]
    assert any(line.startswith("calfw.bin (insightface) acc %") for line in lines)
    assert "epoch_001.pt" in captured.err
    assert (tmp_path / "cmp.png").stat().st_size > 0


def test_bad_metadata_line_is_one_clear_cli_error(ckpt, ijb, capsys, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ijb, bad)
    pairs = bad / "meta" / "ijbc_template_pair_label.txt"
    lines = pairs.read_text().splitlines()
    lines[2] = "1 2"
    pairs.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(ckpt), "--ijb", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ijbc_template_pair_label.txt:3: expected '<template id> <template id> <label>'" in err[0]


def test_option_mistakes_are_usage_errors(ckpt, ijb):
    with pytest.raises(SystemExit):
        main(["eval", "--ckpt", str(ckpt), "--model", str(ckpt), "--ijb", str(ijb)])
    with pytest.raises(SystemExit):
        main(["eval", "--ijb", str(ijb)])
    with pytest.raises(SystemExit):
        main(["eval", "--ckpt", str(ckpt), "--suite", str(ijb), "--target", "IJBB"])
    with pytest.raises(SystemExit):
        main(["compare", str(ckpt), "--suite", str(ijb)])
