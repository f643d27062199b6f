"""`cosface detect` and `cosface align` end to end on public-domain photos (scikit-image's astronaut and coffee)."""
import json
import re
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

from PIL import Image  # noqa: E402

from cosface.cli import main  # noqa: E402
from cosface.evaluation.pairs import read_lfw  # noqa: E402
from cosface.faces import aligned_faces, read_photo  # noqa: E402


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def resized(pixels, w, h=None):
    return np.asarray(Image.fromarray(pixels).resize((w, h or w), Image.BILINEAR))


def raw_folder(root):
    a = skdata.astronaut()
    save(root / "alice" / "big.jpg", a)
    save(root / "alice" / "small.jpg", resized(a, 250))
    save(root / "bob" / "tilted.png", np.asarray(Image.fromarray(a).rotate(15, resample=Image.BILINEAR)))
    save(root / "bob" / "coffee.jpg", skdata.coffee())
    save(root / "bob" / "two.jpg", np.concatenate([a, np.pad(resized(a, 256), ((0, 256), (0, 0), (0, 0)))], 1))
    (root / "bob" / "notes.txt").write_text("not a photo")
    return root


def run_cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_detect_prints_json_and_draws_the_points(tmp_path, capsys):
    photo = save(tmp_path / "astronaut.png", skdata.astronaut())
    coffee = save(tmp_path / "coffee.png", skdata.coffee())
    rc, out, _ = run_cli(capsys, "detect", photo, "--json", "-o", tmp_path / "annotated.png")
    assert rc == 0
    r = json.loads(out)
    assert r["width"] == 512 and len(r["faces"]) == 1 and r["faces"][0]["score"] > 0.99
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = r["faces"][0]["landmarks"]
    assert lx < nx < rx and max(ly, ry) < ny < min(mly, mry) and mlx < mrx
    drawn = np.asarray(Image.open(tmp_path / "annotated.png"))
    assert drawn.shape == (512, 512, 3)
    changed = np.any(drawn != skdata.astronaut(), axis=2)
    ys, xs = np.nonzero(changed)
    assert 150 < xs.min() and xs.max() < 300 and ys.max() < 200     # drawing only around the face
    assert changed[int(ly), int(lx)]                                  # a dot on the left eye
    rc, out, _ = run_cli(capsys, "detect", photo, coffee, "-o", tmp_path / "many")
    assert rc == 0 and "astronaut.png: 512x512, 1 face" in out and "coffee.png: 600x400, 0 faces" in out
    assert sorted(os.listdir(tmp_path / "many")) == ["astronaut.faces.png", "coffee.faces.png"]
    rc, _, err = run_cli(capsys, "detect", tmp_path / "missing.jpg")
    assert rc == 2 and "missing.jpg" in err and len(err.strip().splitlines()) == 1


def test_align_makes_a_trainable_folder_with_a_report_and_resumes(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    out = tmp_path / "aligned"
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    assert rc == 0 and "5 images: 4 aligned" in text
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert written == ["alice/big.jpg", "alice/small.jpg", "bob/tilted.jpg", "bob/two.jpg"]
    for p in out.rglob("*.jpg"):
        assert Image.open(p).size == (112, 112)
    crop = np.asarray(Image.open(out / "alice" / "big.jpg"))
    assert np.abs(crop.astype(int) - aligned_faces(skdata.astronaut())[0][1]).mean() < 6   # two JPEG steps
    report = json.loads((out / "align_report.json").read_text())
    assert report["images"] == 5 and report["faces_found"] == 5
    assert report["none_found"] == ["bob/coffee.jpg"] and report["not_photos"] == ["bob/notes.txt"]
    [several] = report["several_found"]
    assert several["image"] == "bob/two.jpg" and several["faces"] == 2 and several["why"] == "largest box"
    kept = several["boxes"][several["kept"][0]]
    assert kept[2] < 512                                              # the big face on the left

    # A rerun redoes nothing; a lost crop (and its journal line) is redone alone.
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    assert rc == 0 and "5 skipped as done by an earlier run" in text and "this run" not in text
    (out / "bob" / "tilted.jpg").unlink()
    journal = out / ".align_journal.jsonl"
    journal.write_text("".join(line for line in journal.read_text().splitlines(True) if "tilted" not in line))
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    assert "this run: 1 images" in text and (out / "bob" / "tilted.jpg").exists()
    assert json.loads((out / "align_report.json").read_text())["none_found"] == ["bob/coffee.jpg"]
    rc, _, err = run_cli(capsys, "align", raw, "-o", out, "--size", "128", "--quiet")
    assert rc == 2 and "aligned with other options (size 112 -> 128)" in err

    # and `cosface train` runs on it
    rc, text, err = run_cli(capsys, "train", "--data", out, "--out", tmp_path / "run", "--no-progress",
                            "--set", "train.batch_size=2", "--set", "train.epochs=1", "--set", "data.workers=0")
    assert rc == 0, err
    assert (tmp_path / "run" / "classes.txt").read_text().split() == ["alice", "bob"]


def test_align_several_processes_keep_all_faces(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    out = tmp_path / "all"
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "2", "--keep", "all", "--quiet")
    assert rc == 0
    assert sorted(p.name for p in (out / "bob").iterdir()) == ["tilted.jpg", "two_0.jpg", "two_1.jpg"]
    assert "this run: 5 images" in text and "2 workers" in text
    assert len((out / ".align_journal.jsonl").read_text().splitlines()) == 5      # every photo journaled
    assert json.loads((out / "align_report.json").read_text())["crops_without_record"] == 0


def test_a_killed_align_leaves_only_whole_files_and_resumes(tmp_path):
    raw = tmp_path / "raw"
    a = resized(skdata.astronaut(), 250)
    for i in range(40):
        save(raw / f"p{i % 4}" / f"{i:03d}.jpg", np.roll(a, i, axis=1))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "cosface", "align", str(raw), "-o", str(out), "--workers", "1", "--quiet"]
    for sig in (signal.SIGKILL, signal.SIGTERM):
        start = len(list(out.rglob("*.jpg")))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.rglob("*.jpg"))) < start + 3 and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(30)
        done = list(out.rglob("*.jpg"))
        assert start + 3 <= len(done) < 40, f"the run was not stopped midway ({len(done)} crops)"
        for p in done:
            assert Image.open(p).size == (112, 112) and np.asarray(Image.open(p)).shape == (112, 112, 3)
        if sig == signal.SIGTERM:
            assert proc.returncode == 130 and b"rerunning the same command continues" in proc.stderr.read()
            assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"this run: {40 - len(before)} images" in r.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())          # nothing redone
    assert len(list(out.rglob("*.jpg"))) == 40 and not list(out.rglob("*.partial"))


def test_align_lfw_mode_writes_the_eval_layout_and_falls_back_to_the_centre(tmp_path, capsys):
    lfw = tmp_path / "lfw"
    a = resized(skdata.astronaut(), 250)
    names = ["Ann_Able", "Bob_Baker", "Cid_Cole"]
    for k, name in enumerate(names):
        for n in (1, 2):
            pixels = resized(skdata.coffee()[:, 100:500], 250) if (k, n) == (2, 2) else np.roll(a, 5 * n + k, 0)
            save(lfw / name / f"{name}_{n:04d}.jpg", pixels)
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn_Able\t1\t2\nAnn_Able\t1\tCid_Cole\t2\n"
                                        "Bob_Baker\t1\t2\nBob_Baker\t2\tCid_Cole\t1\n")
    out = tmp_path / "lfw_aligned"
    rc, text, _ = run_cli(capsys, "align", lfw, "-o", out, "--lfw", "--workers", "1", "--quiet")
    assert rc == 0 and "1 centre-crop fallbacks" in text
    assert (out / "pairs.txt").read_text() == (tmp_path / "pairs.txt").read_text()
    assert Image.open(out / "lfw_align_112" / "Cid_Cole" / "Cid_Cole_0002.jpg").size == (112, 112)
    report = json.loads((out / "align_report.json").read_text())
    assert report["centre_crop_fallback"] == ["Cid_Cole/Cid_Cole_0002.jpg"] and report["options"]["keep"] == "center"
    pairs = read_lfw(out)
    assert len(pairs.images) == 6 and all(os.path.isfile(p) for p in pairs.images)


def test_align_never_writes_two_photos_to_one_crop_name(tmp_path, capsys):
    # With --keep all, x.jpg's two faces are named x_0.jpg and x_1.jpg: the photo x_0.jpg must not take
    # (or be skipped because of) the first of those names.
    raw = tmp_path / "raw"
    a = resized(skdata.astronaut(), 250)
    two = np.concatenate([a, np.pad(resized(a, 125), ((0, 125), (0, 0), (0, 0)))], 1)
    save(raw / "p" / "x.jpg", two)
    save(raw / "p" / "x_0.jpg", np.roll(a, 40, axis=1))
    out = tmp_path / "all"
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--keep", "all", "--quiet")
    assert rc == 0 and "3 crops" in text
    crops = {p.name: np.asarray(Image.open(p)).astype(int) for p in (out / "p").iterdir()}
    assert len(crops) == 3
    own = aligned_faces(read_photo(raw / "p" / "x_0.jpg"))[0][1]
    assert sorted(np.abs(c - own).mean() < 3 for c in crops.values()) == [False, False, True]  # x_0.jpg's, once

    # With --keep largest, x_0.jpg's crop must not make x.jpg look done: a lost crop of x.jpg is redone.
    out = tmp_path / "largest"
    run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    (out / "p" / "x.jpg").unlink()
    journal = out / ".align_journal.jsonl"
    journal.write_text("".join(line for line in journal.read_text().splitlines(True) if '"p/x.jpg"' not in line))
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    assert rc == 0 and "this run: 1 images" in text and (out / "p" / "x.jpg").exists()


def test_crop_names_of_photos_are_distinct_or_refused():
    from cosface.errors import CosfaceError
    from cosface.faces.folder import _out_stems

    assert _out_stems(["a.jpg", "a.png", "b.jpg"], False) == {"a.jpg": "a.jpg", "a.png": "a.png", "b.jpg": "b"}
    assert _out_stems(["x.jpg", "x_0.jpg", "x_01.jpg"], False) == {"x.jpg": "x", "x_0.jpg": "x_0", "x_01.jpg": "x_01"}
    assert _out_stems(["x.jpg", "x_0.jpg", "x_01.jpg", "y_2.png"], True) == {
        "x.jpg": "x", "x_0.jpg": "x_0.jpg", "x_01.jpg": "x_01", "y_2.png": "y_2"}
    with pytest.raises(CosfaceError, match=r"photos 'a.jpg' and 'a.jpg.png' would be written to the same crop name"):
        _out_stems(["a.jpg", "a.jpg.png", "a.png"], False)


@pytest.mark.parametrize("option, message", [
    (["--max-side", "16"], "max_side must be at least 32 pixels, got 16"),
    (["--threshold", "1.5"], r"score threshold must be in \[0, 1\), got 1.5"),
])
def test_align_refuses_a_bad_detector_option_before_any_photo(tmp_path, capsys, option, message):
    # Not "every photo unreadable" with exit 0 (and an options file that makes the folder expect them).
    raw = tmp_path / "raw"
    save(raw / "p" / "a.jpg", resized(skdata.astronaut(), 250))
    rc, _, err = run_cli(capsys, "align", raw, "-o", tmp_path / "out", "--workers", "1", "--quiet", *option)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err) and not (tmp_path / "out").exists()


def test_a_journal_cut_mid_line_loses_no_later_record(tmp_path, capsys):
    # A crash (power loss, full disk) can leave the journal's last line without its end: the next run's
    # first record must not be glued onto it, or that photo is redone once more by every later run.
    raw = tmp_path / "raw"
    a = resized(skdata.astronaut(), 250)
    for name in ("a", "b"):
        save(raw / "p" / f"{name}.jpg", a)
    out = tmp_path / "out"
    run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    journal = out / ".align_journal.jsonl"
    first, second = journal.read_text().splitlines(True)
    journal.write_text(first + second[:len(second) // 2])          # b's line cut: b is redone
    (out / "p" / "b.jpg").unlink()
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    assert rc == 0 and "this run: 1 images" in text
    rc, text, _ = run_cli(capsys, "align", raw, "-o", out, "--workers", "1", "--quiet")
    assert rc == 0 and "2 skipped as done by an earlier run" in text and "this run" not in text
    assert json.loads((out / "align_report.json").read_text())["faces_found"] == 2


def test_detect_draws_photos_of_one_name_to_distinct_pictures(tmp_path, capsys):
    a = save(tmp_path / "a" / "001.jpg", skdata.astronaut())
    b = save(tmp_path / "b" / "001.jpg", skdata.coffee())
    c = save(tmp_path / "c" / "001-2.png", skdata.coffee()[:100])
    rc, out, _ = run_cli(capsys, "detect", a, b, c, "-o", tmp_path / "many", "--json")
    assert rc == 0
    drawn = [r["annotated"] for r in json.loads(out)]
    assert len(set(drawn)) == 3 and sorted(os.listdir(tmp_path / "many")) == sorted(os.path.basename(d) for d in drawn)
    assert drawn[0].endswith("001.faces.png")
    for d, source in zip(drawn, (a, b, c)):
        assert Image.open(d).size == Image.open(source).size
