"""Photos straight into the Embedder, `cosface embed` and `cosface verify`: detect, align, then embed."""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

from test_export_runtime import INFO, pooling_onnx, write_png  # noqa: E402

from cosface.cli import main  # noqa: E402
from cosface.errors import CosfaceError  # noqa: E402
from cosface.faces import ALIGNMENT_METHOD, aligned_faces  # noqa: E402
from cosface.inference import Embedder  # noqa: E402
from cosface.inference.models import DEFAULT_ALIGNMENT_METHOD, DEFAULT_ALIGNMENT_TEMPLATE  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    astro = skdata.astronaut()
    small = np.asarray(Image.fromarray(astro).resize((300, 300), Image.BILINEAR))
    pair = np.concatenate([astro, np.asarray(Image.fromarray(astro).resize((256, 256)).crop((0, 0, 256, 512)))], 1)
    (face, crop), = aligned_faces(astro)
    Image.fromarray(small).save(d / "astronaut_small.jpg", quality=95)
    return {"astro": write_png(d / "astronaut.png", astro), "small": d / "astronaut_small.jpg",
            "coffee": write_png(d / "coffee.png", skdata.coffee()), "crop": write_png(d / "crop.png", crop),
            "pair": write_png(d / "pair.png", pair), "crop_pixels": crop, "dir": d}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return pooling_onnx(tmp_path_factory.mktemp("m") / "m.onnx", INFO.to_metadata())


def test_model_metadata_names_the_alignment_of_this_package():
    assert DEFAULT_ALIGNMENT_TEMPLATE == "arcface" and DEFAULT_ALIGNMENT_METHOD == ALIGNMENT_METHOD
    assert INFO.to_metadata()["alignment_template"] == "arcface"


def test_a_photo_is_detected_and_aligned_a_crop_is_taken_as_is(photos, model):
    emb = Embedder(model)
    p = emb.prepare(str(photos["astro"]))
    assert "aligned to the arcface 112x112 template" in p.how and "512x512 photo" in p.how
    np.testing.assert_array_equal(p.image, photos["crop_pixels"])
    crop = emb.prepare(str(photos["crop"]))
    assert crop.how.endswith("112x112, taken as already aligned") and crop.face is None
    np.testing.assert_allclose(emb.embed(str(photos["astro"]), flip=False),
                               emb.embed(photos["crop_pixels"], flip=False), atol=1e-6)
    # an array photo goes the same way as a file
    assert "aligned to the arcface" in emb.prepare(skdata.astronaut()).how


def test_no_face_is_an_error_naming_the_file_and_no_detect_resizes(photos, model):
    with pytest.raises(CosfaceError, match=r"coffee\.png: no face found in the 600x400 photo"):
        Embedder(model).embed(str(photos["coffee"]))
    p = Embedder(model, detect=False, quiet=True).prepare(str(photos["coffee"]))
    assert "coffee.png (600x400) resized to 112x112 (no face detection)" in p.how


def test_verify_two_photos_of_different_sizes_says_how_each_was_aligned(photos, model, capsys):
    rc = main(["verify", "--model", str(model), str(photos["astro"]), str(photos["small"])])
    out = capsys.readouterr().out
    assert rc == 0
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert "512x512 photo, aligned to the arcface 112x112 template" in lines["image 1"]
    assert "300x300 photo, aligned to the arcface 112x112 template" in lines["image 2"]
    assert float(lines["similarity"].split()[0]) > 0.99       # same face: channel means nearly equal
    rc = main(["verify", "--model", str(model), str(photos["astro"]), str(photos["coffee"])])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "coffee.png: no face found" in err


def test_embed_all_faces_writes_one_row_per_face_with_its_box(photos, model, tmp_path, capsys):
    out = tmp_path / "e.npy"
    rc = main(["embed", "--model", str(model), str(photos["pair"]), str(photos["crop"]), "--all-faces",
               "-o", str(out)])
    assert rc == 0 and "wrote 3 embeddings" in capsys.readouterr().out
    rows = [line.split("\t") for line in out.with_suffix(".txt").read_text().splitlines()]
    assert [r[0].rsplit("/", 1)[1] for r in rows] == ["pair.png", "pair.png", "crop.png"]
    boxes = sorted(list(map(float, r[1].split())) for r in rows[:2])
    assert boxes[0][2] < 512 < boxes[1][0]                 # one face in each half of the photo
    assert rows[2][1:] == ["-", "-"] and float(rows[0][2]) > 0.9
    assert np.load(out).shape == (3, 6)
    rc = main(["embed", "--model", str(model), str(photos["pair"]), "-o", str(tmp_path / "one.npy")])
    assert rc == 0 and np.load(tmp_path / "one.npy").shape == (1, 6)       # largest face only


def test_a_model_trained_on_another_template_refuses_photos(photos, tmp_path):
    meta = {**INFO.to_metadata(), "alignment_template": "cosface"}
    emb = Embedder(pooling_onnx(tmp_path / "c.onnx", meta))
    assert emb.info.alignment_template == "cosface"
    with pytest.raises(CosfaceError, match="trained on cosface-template crops"):
        emb.embed(str(photos["astro"]))
