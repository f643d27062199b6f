"""The IJB reader on a tiny `cosface synth --ijb` set: what it reads, and one clear error per kind of damage."""
import shutil

import numpy as np
import pytest

from cosface.data.synthetic.identity import sample_identity
from cosface.data.synthetic.ijb import generate_ijb
from cosface.data.synthetic.render import Nuisances, render, render_with_landmarks
from cosface.errors import CosfaceError
from cosface.evaluation.ijb import AlignedSource
from cosface.evaluation.ijb_data import load_ijb


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("ijb")
    generate_ijb(out, subjects=4, templates_per_subject=2, seed=3)
    return out


@pytest.fixture
def copy(synth, tmp_path):
    dst = tmp_path / "ijb"
    shutil.copytree(synth, dst)
    return dst


def test_reads_the_synthetic_set(synth):
    ijb = load_ijb(synth)
    m = __import__("json").loads((synth / "manifest.json").read_text())["ijb"]
    assert ijb.target == "IJBC" and len(ijb.names) == m["images"]
    assert len(np.unique(ijb.templates)) == m["templates"] == 8
    assert ijb.labels.sum() == 4                           # one same pair per subject (2 templates each)
    assert len(ijb.pairs) == m["pairs"]
    assert set(ijb.galleries) == {"G1", "G2"}
    # Each subject's first template is in exactly one gallery; every other template probes.
    assert sorted(np.r_[ijb.galleries["G1"].subjects, ijb.galleries["G2"].subjects]) == [1, 2, 3, 4]
    assert sorted(ijb.probe.subjects) == [1, 2, 3, 4]
    assert ijb.landmarks.shape == (len(ijb.names), 5, 2)
    sizes = {AlignedSource(ijb).read(i)[:2] for i in range(3)}
    assert sizes == {b"\xff\xd8"}


def test_loose_crops_are_larger_than_112_and_align_to_112(synth):
    from cosface.evaluation.ijb import decode_full

    ijb = load_ijb(synth)
    src = AlignedSource(ijb)
    shapes = [decode_full(src.read(i)).shape for i in range(len(ijb.names))]
    assert min(s[0] for s in shapes) > 112
    assert src.decode(0, 112).shape == (112, 112, 3)


def test_landmarks_follow_the_pose():
    """Aligning from the renderer's landmarks undoes its rotation, scale and shift: the aligned faces of
    one person agree far better than the raw images (wrong landmarks would leave them as scattered)."""
    nz = Nuisances(blur=0, occlusion=0, gray=0, gain=(1, 1), tint=0, gradient=0, clutter=0, saturation=(0, 0))
    from cosface.faces.align import align_face

    rng = np.random.default_rng(1)
    idn = sample_identity(rng)
    images, landmarks = render_with_landmarks(idn, rng, 6, nz)
    raw = np.stack([p for p, _ in images]).astype(float)
    aligned = np.stack([align_face(p, lm) for (p, _), lm in zip(images, landmarks)]).astype(float)

    def spread(a):
        face = a[:, 30:100, 25:87]
        return np.mean([np.abs(face[i] - face[j]).mean() for i in range(6) for j in range(i + 1, 6)])

    assert spread(aligned) < 0.5 * spread(raw)


def test_render_with_landmarks_draws_the_same_pixels():
    a = render(sample_identity(np.random.default_rng(4)), np.random.default_rng(5), 3)
    b, _ = render_with_landmarks(sample_identity(np.random.default_rng(4)), np.random.default_rng(5), 3)
    assert all((x == y).all() and qx == qy for (x, qx), (y, qy) in zip(a, b))


def _edit(path, line_no, new):
    lines = path.read_text().splitlines()
    lines[line_no - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("file, line, text, message", [
    ("ijbc_face_tid_mid.txt", 3, "3.jpg 1", r"ijbc_face_tid_mid.txt:3: expected '<image> <template id> <media id>'"),
    ("ijbc_face_tid_mid.txt", 2, "2.jpg x 2", r"ijbc_face_tid_mid.txt:2: template id must be an integer, got 'x'"),
    ("ijbc_name_5pts_score.txt", 4, "4.jpg 1 2 3", r"ijbc_name_5pts_score.txt:4: expected .* \(12 fields\), got 4"),
    ("ijbc_name_5pts_score.txt", 2, "9.jpg 1 2 3 4 5 6 7 8 9 10 0.9",
     r"ijbc_name_5pts_score.txt:2: image '9.jpg', but line 2 of .*ijbc_face_tid_mid.txt is '2.jpg'"),
    ("ijbc_name_5pts_score.txt", 2, "2.jpg 1 2 3 4 5 6 7 8 9 nan 0.9", r"ijbc_name_5pts_score.txt:2: .*finite"),
    ("ijbc_template_pair_label.txt", 1, "1 999 1", r"ijbc_template_pair_label.txt:1: template 999 has no images"),
    ("ijbc_template_pair_label.txt", 2, "1 2 yes", r"ijbc_template_pair_label.txt:2: label must be 1 .* got 'yes'"),
    ("ijbc_1N_probe_mixed.csv", 2, "2,77,img/x.jpg",
     r"ijbc_1N_probe_mixed.csv:3: template 2 belongs to subject 77 on an earlier line, here to 1"),
    ("ijbc_1N_gallery_G1.csv", 2, "555,1,img/1.jpg", r"ijbc_1N_gallery_G1.csv:2: template 555 has no images"),
    # no header: the first row is data, which must not be dropped as if it were the header
    ("ijbc_1N_gallery_G1.csv", 1, "1,1,img/1.jpg",
     r"ijbc_1N_gallery_G1.csv:1: expected a header row \(TEMPLATE_ID,SUBJECT_ID,...\), found '1,1,img/1.jpg'"),
])
def test_bad_metadata_line_is_one_error_naming_file_and_line(copy, file, line, text, message):
    _edit(copy / "meta" / file, line, text)
    with pytest.raises(CosfaceError, match=message):
        load_ijb(copy)


def test_missing_image_is_an_error_naming_the_list_line(copy):
    (copy / "loose_crop" / "5.jpg").unlink()
    with pytest.raises(CosfaceError, match=r"ijbc_face_tid_mid.txt:5: image 5.jpg is not in .*loose_crop"):
        load_ijb(copy)


def test_missing_gallery_file_and_unknown_target(copy):
    with pytest.raises(CosfaceError, match="unknown IJB target 'IJBA'"):
        load_ijb(copy, "IJBA")
    with pytest.raises(CosfaceError, match="ijbb_face_tid_mid.txt does not exist"):
        load_ijb(copy, "IJBB")
    (copy / "meta" / "ijbc_1N_gallery_G2.csv").unlink()
    with pytest.raises(CosfaceError, match="ijbc_1N_gallery_G2.csv is not"):
        load_ijb(copy)
