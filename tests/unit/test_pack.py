"""pack / unpack: labels and class names agree with the image folder; bytes survive the round trip."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from cosface.cli import main
from cosface.data.pack import pack_folder, unpack_records
from cosface.data.recordio import RecordSource
from cosface.data.sources import ImageFolderSource
from cosface.errors import CosfaceError
from cosface.preprocess import decode_image

# String order of the folder names differs from numeric order: "10" < "2".
CLASSES = ["10", "2", "alice"]
MAGIC = struct.pack("<I", 0xCED7230A)


def _jpeg(seed: int, size: int = 112, gray: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 1 if gray else 3), dtype=np.uint8)
    img = np.kron(small, np.ones((size // 8, size // 8, 1), dtype=np.uint8))
    return simplejpeg.encode_jpeg(img, quality=90, colorspace="GRAY" if gray else "RGB",
                                  colorsubsampling="Gray" if gray else "444")


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for j in range(3):
            (root / name / f"{j}.jpg").write_bytes(_jpeg(10 * c + j, gray=(j == 2)))
    png = np.zeros((40, 30, 3), dtype=np.uint8)
    png[:, :15] = (200, 30, 60)
    buf = io.BytesIO()
    Image.fromarray(png).save(buf, format="PNG")
    (root / "2" / "p.png").write_bytes(buf.getvalue())
    (root / "alice" / "small.jpg").write_bytes(_jpeg(99, size=64))
    # A JPEG comment holding the RecordIO magic at an aligned payload offset (24 + 8): a multi-part record.
    plain = (root / "alice" / "1.jpg").read_bytes()
    comment = b"\0\0" + MAGIC + b"cosface"
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    (root / "alice" / "1.jpg").write_bytes(plain[:2] + segment + plain[2:])
    (root / "alice" / "notes.txt").write_bytes(b"not an image")
    return root


def test_pack_labels_and_names_match_image_folder(folder, tmp_path):
    report = pack_folder(folder, tmp_path / "rec", workers=0, progress=False)
    assert (report.images, report.classes, report.copied, report.reencoded) == (11, 3, 9, 2)
    assert len(report.skipped) == 1 and "notes.txt" in report.skipped[0]
    assert (tmp_path / "rec" / "classes.txt").read_text() == "10\n2\nalice\n"
    assert (tmp_path / "rec" / "property").read_text() == "3,112,112\n"
    words = np.frombuffer((tmp_path / "rec" / "train.rec").read_bytes(), dtype="<u4")
    assert (words == 0xCED7230A).sum() == 11 + 1 + 3 + 1  # images, header, identities, one extra part

    packed, images = RecordSource(tmp_path / "rec"), ImageFolderSource(folder)
    readable = [i for i in range(len(images)) if not images.describe(i).endswith("notes.txt")]
    assert packed.class_names == images.class_names == CLASSES
    assert packed.labels.tolist() == images.labels[readable].tolist()
    for k, i in enumerate(readable):
        original, stored = images.read(i), packed.read(k)
        if images.describe(i).endswith(("/0.jpg", "/1.jpg", "/2.jpg")):
            assert stored == original  # 112x112 JPEGs, colour or gray, are stored byte for byte
        else:  # the PNG and the 64x64 JPEG: resized and encoded
            assert stored != original and simplejpeg.decode_jpeg_header(stored)[:2] == (112, 112)
    png_k = readable.index(next(i for i in readable if images.describe(i).endswith("p.png")))
    png = decode_image(packed.read(png_k)).astype(int)
    assert np.abs(png[:, :50] - (200, 30, 60)).mean() < 6 and np.abs(png[:, 62:]).mean() < 6


def test_unpack_round_trip_gives_same_bytes_labels_and_names(folder, tmp_path):
    pack_folder(folder, tmp_path / "rec", workers=2, progress=False)
    report = unpack_records(tmp_path / "rec", tmp_path / "out", progress=False)
    assert (report.images, report.classes, report.skipped) == (11, 3, [])
    packed, unpacked = RecordSource(tmp_path / "rec"), ImageFolderSource(tmp_path / "out")
    assert unpacked.class_names == CLASSES
    assert unpacked.labels.tolist() == packed.labels.tolist()
    assert [unpacked.read(i) for i in range(len(unpacked))] == [packed.read(i) for i in range(len(packed))]
    original = ImageFolderSource(folder)
    kept = {original.read(i) for i in range(len(original))
            if original.describe(i).endswith(("/0.jpg", "/1.jpg", "/2.jpg"))}
    assert kept <= {unpacked.read(i) for i in range(len(unpacked))}
    assert sorted(p.name for p in (tmp_path / "out" / "alice").iterdir()) == ["08.jpg", "09.jpg", "10.jpg", "11.jpg"]


def test_unpack_without_class_names_uses_sortable_label_numbers(folder, tmp_path):
    pack_folder(folder, tmp_path / "rec", workers=0, progress=False)
    (tmp_path / "rec" / "classes.txt").unlink()
    unpack_records(tmp_path / "rec", tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0", "1", "2"]
    assert ImageFolderSource(tmp_path / "out").labels.tolist() == RecordSource(tmp_path / "rec").labels.tolist()


def test_class_with_only_unreadable_files_keeps_its_index(tmp_path):
    root = tmp_path / "images"
    for name, data in [("a", _jpeg(1)), ("b", b"broken"), ("c", _jpeg(2))]:
        (root / name).mkdir(parents=True)
        (root / name / "x.jpg").write_bytes(data)
    pack_folder(root, tmp_path / "rec", workers=0, progress=False)
    packed = RecordSource(tmp_path / "rec")
    assert packed.class_names == ["a", "b", "c"] and packed.labels.tolist() == [0, 2]


def test_refuses_to_overwrite(folder, tmp_path):
    pack_folder(folder, tmp_path / "rec", workers=0, progress=False)
    with pytest.raises(CosfaceError, match="train.rec already exists"):
        pack_folder(folder, tmp_path / "rec", workers=0, progress=False)
    with pytest.raises(CosfaceError, match="exists and is not empty"):
        unpack_records(tmp_path / "rec", folder, progress=False)
    with pytest.raises(CosfaceError, match="quality must be in 1..100"):
        pack_folder(folder, tmp_path / "rec2", quality=0, progress=False)


def test_cli_pack_and_unpack(folder, tmp_path, capsys):
    assert main(["pack", str(folder), "-o", str(tmp_path / "rec"), "--workers", "0", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "packed 11 images of 3 classes" in out.out and "notes.txt" in out.err
    assert main(["unpack", str(tmp_path / "rec"), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert "unpacked 11 images of 3 classes" in capsys.readouterr().out
    assert main(["unpack", str(tmp_path / "nothing"), "-o", str(tmp_path / "o2"), "--quiet"]) == 2
    assert "has no train.rec" in capsys.readouterr().err
