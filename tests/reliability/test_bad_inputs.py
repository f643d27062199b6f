"""The bad-input table: every command, given a broken input, exits 2 with one line naming the input,
no traceback, and leaves every file that existed before byte-identical.

To add a row (e.g. for a new command), append a `Case` to CASES: an id, and a function that gets the
read-only `good_world` and a fresh directory for this case, creates whatever broken input it needs
there, and returns (argv for `cosface`, text the error line must contain). Rows run in-process
through `cosface.cli.main`; rows that need a separate process (a file-size limit) are in
FULL_DISK_CASES below.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from reliability_inputs import World, copy_tree, jpeg_claiming, png_claiming
from cosface.cli import main
from cosface.rundir import RunLock

pytestmark = pytest.mark.reliability

TINY_TRAIN = ["--no-progress", "--set", "data.workers=0", "--set", "train.batch_size=4", "--set", "train.epochs=1",
              "--set", "checkpoint.save_start_epoch=1", "--set", "train.log_every=1"]
NOT_UTF8 = b"caf\xe9 latin-1 text\n"   # 0xe9 at byte offset 3
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0   # permissions do not stop root


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[World, Path], tuple[list[str], str]]
    as_root: bool = True      # False: the case relies on file permissions, which root bypasses


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def lfw_with(w: World, d: Path, edit) -> Path:
    lfw = copy_tree(w.lfw, d / "lfw")
    edit(lfw)
    return lfw


def packed_with(w: World, d: Path, *, idx: str | None = None, classes: bytes | None = None) -> Path:
    p = copy_tree(w.packed, d / "packed")
    if idx is not None:
        put(p / "train.idx", idx)
    if classes is not None:
        put(p / "classes.txt", classes)
    return p


def idx_line(w: World, line: str) -> str:
    """train.idx of the good pack with its second line replaced."""
    lines = (w.packed / "train.idx").read_text().splitlines()
    lines[1] = line
    return "\n".join(lines) + "\n"


def existing_run(d: Path) -> Path:
    out = d / "run"
    put(out / "checkpoints" / "epoch_001.pt", b"an earlier run's checkpoint")
    put(out / "metrics.jsonl", '{"type": "step"}\n')
    return out


def locked_run(d: Path) -> Path:
    out = d / "run"
    out.mkdir()
    locked_run.held = RunLock(out)      # released by the test after the command ran
    return out


def blocked(d: Path) -> Path:
    """A path whose parent directory is a file."""
    return put(d / "blocker", b"a file where a directory should be") / "out"


def unwritable_dir(d: Path) -> Path:
    p = d / "readonly"
    p.mkdir()
    p.chmod(0o555)
    return p


def bad_image_lfw(data: bytes):
    return lambda lfw: put(lfw / "lfw_align_112" / "P0" / "P0_0001.jpg", data)


CASES = [
    # ---- config ------------------------------------------------------------------------------
    Case("config-missing-file", lambda w, d: (["config", str(d / "nope.toml")], "nope.toml")),
    Case("config-not-utf8", lambda w, d: (["config", str(put(d / "c.toml", b"[optim]\n# " + NOT_UTF8))], "byte offset 13")),
    Case("config-bad-toml", lambda w, d: (["config", str(put(d / "c.toml", "[optim\nlr = 1\n"))], "c.toml")),
    Case("config-nan-set", lambda w, d: (["config", "--set", "optim.lr=nan"], "optim.lr")),
    Case("config-inf-file", lambda w, d: (["config", str(put(d / "c.toml", "[train]\ntimeout_s = inf\n"))],
                                          "train.timeout_s")),
    Case("config-neg-inf-set", lambda w, d: (["config", "--set", "schedule.gamma=-inf"], "schedule.gamma")),
    # ---- train -------------------------------------------------------------------------------
    Case("train-missing-data", lambda w, d: (["train", "--data", str(d / "nope"), "--out", str(d / "run"), *TINY_TRAIN],
                                             "nope")),
    Case("train-existing-run", lambda w, d: (["train", "--data", str(w.images), "--out", str(existing_run(d)),
                                              *TINY_TRAIN], "--resume auto")),
    Case("train-locked-run", lambda w, d: (["train", "--data", str(w.images), "--out", str(locked_run(d)), *TINY_TRAIN],
                                           f"in use by process {os.getpid()}")),
    Case("train-overwrite-and-resume", lambda w, d: (["train", "--data", str(w.images), "--out", str(existing_run(d)),
                                                      "--overwrite", "--resume", "auto", *TINY_TRAIN], "--overwrite")),
    Case("train-out-is-file", lambda w, d: (["train", "--data", str(w.images), "--out", str(put(d / "f", b"x")),
                                             *TINY_TRAIN], str(d / "f"))),
    Case("train-out-blocked", lambda w, d: (["train", "--data", str(w.images), "--out", str(blocked(d)), *TINY_TRAIN],
                                            str(d / "blocker"))),
    Case("train-out-unwritable", lambda w, d: (["train", "--data", str(w.images), "--out",
                                                str(unwritable_dir(d) / "run"), *TINY_TRAIN], "readonly"), as_root=False),
    Case("train-resume-nan-checkpoint", lambda w, d: (["train", "--data", str(w.images), "--out", str(d / "run"),
                                                       "--resume", str(w.nan_ckpt), *TINY_TRAIN], "non-finite")),
    Case("train-resume-malicious", lambda w, d: (["train", "--data", str(w.images), "--out", str(d / "run"),
                                                  "--resume", str(w.evil_ckpt), *TINY_TRAIN], "forbidden global")),
    Case("train-nan-config", lambda w, d: (["train", "--data", str(w.images), "--out", str(d / "run"), *TINY_TRAIN,
                                            "--set", "head.m=nan"], "head.m")),
    Case("train-classes-not-utf8", lambda w, d: (["train", "--data", str(packed_with(w, d, classes=NOT_UTF8)),
                                                  "--out", str(d / "run"), *TINY_TRAIN], "classes.txt")),
    Case("train-idx-past-end", lambda w, d: (["train", "--data", str(packed_with(w, d, idx=idx_line(w, "2\t99999999"))),
                                              "--out", str(d / "run"), *TINY_TRAIN], "train.idx, line 2")),
    # ---- eval --------------------------------------------------------------------------------
    Case("eval-missing-checkpoint", lambda w, d: (["eval", "--ckpt", str(d / "no.pt"), "--lfw", str(w.lfw)], "no.pt")),
    Case("eval-malicious-checkpoint", lambda w, d: (["eval", "--ckpt", str(w.evil_ckpt), "--lfw", str(w.lfw)],
                                                    "forbidden global")),
    Case("eval-nan-checkpoint", lambda w, d: (["eval", "--ckpt", str(w.nan_ckpt), "--lfw", str(w.lfw)], "nan.pt")),
    Case("eval-pairs-not-utf8", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--no-progress", "--lfw",
                                               str(lfw_with(w, d, lambda lfw: put(lfw / "pairs.txt", NOT_UTF8)))],
                                              "byte offset 3")),
    Case("eval-oversized-jpeg", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--no-progress", "--lfw",
                                               str(lfw_with(w, d, bad_image_lfw(jpeg_claiming(20000, 20000))))],
                                              "P0_0001.jpg")),
    Case("eval-corrupt-image", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--no-progress", "--lfw",
                                              str(lfw_with(w, d, bad_image_lfw(b"\xff\xd8 not a jpeg")))], "P0_0001.jpg")),
    Case("eval-features-out-blocked", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--no-progress", "--lfw", str(w.lfw),
                                                     "--features-out", str(blocked(d) / "f.mat")], "blocker")),
    Case("eval-plot-not-a-picture", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--no-progress", "--lfw", str(w.lfw),
                                                   "--plot", str(d / "roc.txt")], "roc.txt")),
    Case("eval-bin-is-a-checkpoint", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--no-progress", "--bin", str(w.ckpt)],
                                                   "not a readable verification .bin")),
    # ---- export ------------------------------------------------------------------------------
    Case("export-missing-checkpoint", lambda w, d: (["export", "--ckpt", str(d / "no.pt"), "-o", str(d / "m.onnx")],
                                                    "no.pt")),
    Case("export-malicious-checkpoint", lambda w, d: (["export", "--ckpt", str(w.evil_ckpt), "-o", str(d / "m.onnx")],
                                                      "forbidden global")),
    Case("export-nan-checkpoint", lambda w, d: (["export", "--ckpt", str(w.nan_ckpt), "-o", str(d / "m.onnx")],
                                                "nan.pt")),
    Case("export-out-blocked", lambda w, d: (["export", "--ckpt", str(w.ckpt), "-o", str(blocked(d) / "m.onnx")],
                                             "blocker")),
    # ---- infer -------------------------------------------------------------------------------
    Case("infer-missing-model", lambda w, d: (["infer", "--model", str(d / "m.onnx"), "--lfw", str(w.lfw)], "m.onnx")),
    Case("infer-garbage-onnx", lambda w, d: (["infer", "--model", str(put(d / "m.onnx", b"not a model")), "--lfw",
                                              str(w.lfw)], "m.onnx")),
    Case("infer-checkpoint-not-onnx", lambda w, d: (["infer", "--model", str(w.ckpt), "--lfw", str(w.lfw)], "export")),
    # ---- embed -------------------------------------------------------------------------------
    Case("embed-oversized-png", lambda w, d: (["embed", "--model", str(w.ckpt), str(put(d / "bomb.png",
                                               png_claiming(100_000, 100_000))), "-o", str(d / "e.npy")], "bomb.png")),
    Case("embed-corrupt-image", lambda w, d: (["embed", "--model", str(w.ckpt), str(put(d / "x.jpg", b"\xff\xd8junk")),
                                               "-o", str(d / "e.npy")], "x.jpg")),
    Case("embed-missing-image", lambda w, d: (["embed", "--model", str(w.ckpt), str(d / "gone.jpg"),
                                               "-o", str(d / "e.npy")], "gone.jpg")),
    Case("embed-out-blocked", lambda w, d: (["embed", "--model", str(w.ckpt), str(w.image), "-o",
                                             str(blocked(d) / "e.npy")], "blocker")),
    Case("embed-keeps-old-output", lambda w, d: (["embed", "--model", str(w.ckpt), str(w.image), str(put(d / "t.txt", "text")),
                                                  "-o", str(put(d / "e.npy", b"earlier embeddings"))], "t.txt")),
    # ---- verify ------------------------------------------------------------------------------
    Case("verify-oversized-jpeg", lambda w, d: (["verify", "--model", str(w.ckpt), str(w.image),
                                                 str(put(d / "big.jpg", jpeg_claiming(20000, 20000)))], "big.jpg")),
    Case("verify-not-an-image", lambda w, d: (["verify", "--model", str(w.ckpt), str(put(d / "a.png", "hello")),
                                               str(w.image)], "a.png")),
    Case("verify-missing-image", lambda w, d: (["verify", "--model", str(w.ckpt), str(w.image), str(d / "b.jpg")],
                                               "b.jpg")),
    Case("verify-malicious-model", lambda w, d: (["verify", "--model", str(w.evil_ckpt), str(w.image), str(w.image)],
                                                 "forbidden global")),
    # ---- pack / unpack -----------------------------------------------------------------------
    Case("pack-missing-folder", lambda w, d: (["pack", str(d / "nope"), "-o", str(d / "p"), "--quiet"], "nope")),
    Case("pack-out-holds-pack", lambda w, d: (["pack", str(w.images), "-o", str(packed_with(w, d)), "--quiet",
                                               "--workers", "0"], "train.rec")),
    Case("pack-out-blocked", lambda w, d: (["pack", str(w.images), "-o", str(blocked(d)), "--quiet", "--workers", "0"],
                                           "blocker")),
    Case("unpack-duplicate-class", lambda w, d: (["unpack", str(packed_with(w, d, classes=b"alice\nalice\n")),
                                                  "-o", str(d / "u"), "--quiet"], "'alice' twice")),
    Case("unpack-classes-not-utf8", lambda w, d: (["unpack", str(packed_with(w, d, classes=NOT_UTF8)),
                                                   "-o", str(d / "u"), "--quiet"], "classes.txt")),
    Case("unpack-idx-negative", lambda w, d: (["unpack", str(packed_with(w, d, idx=idx_line(w, "2\t-8"))),
                                               "-o", str(d / "u"), "--quiet"], "train.idx, line 2")),
    Case("unpack-idx-past-end", lambda w, d: (["unpack", str(packed_with(w, d, idx=idx_line(w, "2\t1000000"))),
                                               "-o", str(d / "u"), "--quiet"], "train.idx, line 2")),
    Case("unpack-idx-huge", lambda w, d: (["unpack", str(packed_with(w, d, idx=idx_line(w, f"2\t{2**70}"))),
                                           "-o", str(d / "u"), "--quiet"], "train.idx, line 2")),
    Case("unpack-idx-not-ascii", lambda w, d: (["unpack", str(packed_with(w, d, idx="1\t0\n2\t\xe9\n")),
                                                "-o", str(d / "u"), "--quiet"], "train.idx, line 2")),
    Case("unpack-out-not-empty", lambda w, d: (["unpack", str(w.packed), "-o", str(put(d / "u" / "keep.txt", "x").parent),
                                                "--quiet"], str(d / "u"))),
    Case("unpack-out-blocked", lambda w, d: (["unpack", str(w.packed), "-o", str(blocked(d)), "--quiet"], "blocker")),
    # ---- synth -------------------------------------------------------------------------------
    Case("synth-out-not-empty", lambda w, d: (["synth", str(put(d / "s" / "mine.txt", "x").parent),
                                               "--identities", "2", "--lfw-identities", "20"], str(d / "s"))),
    # ---- demo --------------------------------------------------------------------------------
    Case("demo-out-blocked", lambda w, d: (["demo", "--out", str(blocked(d)), "--no-progress"], "blocker")),
    Case("demo-nan-config", lambda w, d: (["demo", "--out", str(d / "demo"), "--no-progress", "--set", "head.s=inf"],
                                          "head.s")),
    Case("synth-out-blocked", lambda w, d: (["synth", str(blocked(d)), "--identities", "2",
                                             "--lfw-identities", "20"], "blocker")),
    # ---- photos: verify / detect / align (issue 10) -------------------------------------------
    Case("verify-photo-without-face", lambda w, d: (["verify", "--model", str(w.ckpt), str(w.image),
                                                     str(put(d / "wall.png", blank_photo()))], "wall.png")),
    Case("detect-not-an-image", lambda w, d: (["detect", str(put(d / "a.png", "hello"))], "a.png")),
    Case("detect-oversized-jpeg", lambda w, d: (["detect", str(put(d / "big.jpg", jpeg_claiming(20000, 20000)))],
                                                "big.jpg")),
    Case("detect-missing-photo", lambda w, d: (["detect", str(d / "gone.jpg")], "gone.jpg")),
    Case("detect-out-is-directory", lambda w, d: (["detect", str(w.image), "-o", str(d)], str(d))),
    Case("detect-out-not-a-picture", lambda w, d: (["detect", str(w.image), "-o", str(d / "faces.txt")], "faces.txt")),
    Case("align-missing-folder", lambda w, d: (["align", str(d / "nope"), "-o", str(d / "out"), "--quiet"], "nope")),
    Case("align-out-blocked", lambda w, d: (["align", str(w.images), "-o", str(blocked(d)), "--quiet",
                                             "--workers", "1"], "blocker")),
    # ---- IJB evaluation (issue 13) --------------------------------------------------------------
    Case("eval-ijb-missing-metadata", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--ijb",
                                                     str(put(d / "ijb" / "loose_crop" / "1.jpg", b"x").parent.parent),
                                                     "--target", "IJBC", "--no-progress"], "ijbc_face_tid_mid.txt")),
    Case("eval-ijb-bad-line", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--ijb", str(ijb_with(d, b"1.jpg one 2\n")),
                                             "--target", "IJBC", "--no-progress"], "ijbc_face_tid_mid.txt:1")),
    Case("eval-ijb-not-utf8", lambda w, d: (["eval", "--ckpt", str(w.ckpt), "--ijb", str(ijb_with(d, NOT_UTF8)),
                                             "--target", "IJBC", "--no-progress"], "byte offset 3")),
    # ---- plot / import-insightface (issues 12, 11) ----------------------------------------------
    Case("plot-missing-run", lambda w, d: (["plot", str(d / "norun"), "-o", str(d / "c.png")], "norun")),
    # (a cut-short LAST line is what a killed run leaves, and is skipped; one inside the file is an error)
    Case("plot-metrics-not-json", lambda w, d: (["plot", str(put(d / "run" / "metrics.jsonl", '{not json\n{"type": "step"}\n').parent),
                                                 "-o", str(d / "c.png")], "metrics.jsonl")),
    Case("import-insightface-garbage", lambda w, d: (["import-insightface", str(put(d / "b.pth", b"junk")), "--arch",
                                                      "iresnet18", "-o", str(d / "c.pt")], "b.pth")),
    Case("import-insightface-malicious", lambda w, d: (["import-insightface", str(w.evil_ckpt), "--arch", "iresnet18",
                                                        "-o", str(d / "c.pt")], "forbidden global")),
    Case("import-insightface-wrong-arch", lambda w, d: (["import-insightface", str(w.ckpt), "--arch", "iresnet18",
                                                         "-o", str(d / "c.pt")], "model.pt")),
]


def blank_photo() -> bytes:
    """A 160x120 grey gradient PNG: a photo (not 112x112) in which there is no face."""
    import io

    import numpy as np
    from PIL import Image

    img = np.tile(np.linspace(60, 200, 160, dtype=np.uint8)[None, :, None], (120, 1, 3))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def ijb_with(d: Path, face_tid_mid: bytes) -> Path:
    """An IJB-C-layout folder whose meta/ijbc_face_tid_mid.txt holds `face_tid_mid`."""
    root = d / "ijb"
    put(root / "loose_crop" / "1.jpg", b"x")
    put(root / "meta" / "ijbc_face_tid_mid.txt", face_tid_mid)
    put(root / "meta" / "ijbc_template_pair_label.txt", "1 1 1\n")
    put(root / "meta" / "ijbc_name_5pts_score.txt", "1.jpg " + " ".join(["50"] * 10) + " 0.9\n")
    return root


def snapshot(*roots: Path) -> dict[str, str]:
    files = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                files[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return int(e.code or 0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case: Case, good_world: World, tmp_path, capfd):
    if ROOT and not case.as_root:
        pytest.skip("file permissions do not stop root")
    d = tmp_path / "case"
    d.mkdir()
    argv, must_name = case.build(good_world, d)
    before = snapshot(good_world.root, d)
    capfd.readouterr()
    try:
        rc = run_cli(argv)
    finally:
        held = getattr(locked_run, "held", None)
        if held is not None:
            held.release()
            locked_run.held = None
        for p in d.rglob("*"):       # undo unwritable_dir so pytest can clean up
            if p.is_dir():
                p.chmod(0o755)
    _, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cosface {argv[0]}: error: "), lines[0]
    assert must_name in lines[0], lines[0]
    after = snapshot(good_world.root, d)
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, f"files changed or removed by a failed command: {changed}"


# ---- a full disk: a file-size limit in a child process --------------------------------------------
FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails with EFBIG
limit = int(sys.argv[1])
# The limit cuts every write of this process short, the .pyc files of modules it imports first too, and
# CPython renames a short .pyc write into __pycache__ unchecked: every later import of that module then
# fails ("marshal data too short") until the cache is cleared. Only the command's own files are tested.
sys.dont_write_bytecode = True
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from cosface.cli import main
sys.exit(main(sys.argv[2:]))
"""

FULL_DISK_CASES = [
    # (id, file-size limit in bytes, argv builder, text the error line must contain)
    ("train-checkpoint", 200_000, lambda w, d: ["train", "--data", str(w.images), "--out", str(d / "run"), *TINY_TRAIN],
     "cannot write checkpoint"),
    ("pack-records", 3_000, lambda w, d: ["pack", str(w.images), "-o", str(d / "p"), "--quiet", "--workers", "0"],
     "cannot write"),
    ("unpack-images", 2_000, lambda w, d: ["unpack", str(w.packed), "-o", str(d / "u"), "--quiet"], "cannot write image"),
]


@pytest.mark.parametrize("limit,build,must", [c[1:] for c in FULL_DISK_CASES], ids=[c[0] for c in FULL_DISK_CASES])
def test_full_disk_is_one_line_and_leaves_no_partial_file(limit, build, must, good_world: World, tmp_path):
    argv = build(good_world, tmp_path)
    before = snapshot(good_world.root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), *argv], capture_output=True, text=True,
                          timeout=120, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and must in lines[0] and "File too large" in lines[0], proc.stderr
    assert snapshot(good_world.root) == before
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not leftovers


def test_features_out_on_a_full_disk_keeps_the_earlier_file(good_world: World, tmp_path):
    """--features-out over an earlier .mat: a write that fails leaves that file as it was, not cut short."""
    earlier = put(tmp_path / "f.mat", b"an earlier run's features")
    argv = ["eval", "--ckpt", str(good_world.ckpt), "--lfw", str(good_world.lfw), "--no-progress", "--device", "cpu",
            "--features-out", str(earlier)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, "1500", *argv], capture_output=True, text=True,
                          timeout=120, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "f.mat" in lines[0] and "File too large" in lines[0], proc.stderr
    assert earlier.read_bytes() == b"an earlier run's features"
    assert [p.name for p in tmp_path.iterdir()] == ["f.mat"]

