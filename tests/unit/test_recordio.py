"""RecordIO files built byte by byte from the documented format, read back; the writer against hand-built bytes."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import struct
import warnings

import numpy as np
import pytest

from cosface.data.recordio import RecordSource, RecordWriter, decode_record, encode_record
from cosface.data.sources import open_source
from cosface.errors import CosfaceError

MAGIC = struct.pack("<I", 0xCED7230A)


def part(cflag: int, data: bytes) -> bytes:
    """One dmlc part: magic, lrec = cflag << 29 | length, data, zero padding to 4 bytes."""
    return MAGIC + struct.pack("<I", (cflag << 29) | len(data)) + data + b"\0" * (-len(data) % 4)


def ir(flag: int, label: float, id_: int, labels=(), image: bytes = b"") -> bytes:
    return struct.pack("<IfQQ", flag, label, id_, 0) + struct.pack(f"<{len(labels)}f", *labels) + image


def write_dataset(root, records):
    """records: list of (key, record bytes) in file order -> train.rec + train.idx; returns offsets by key."""
    root.mkdir(parents=True, exist_ok=True)
    rec, idx, offsets = b"", "", {}
    for key, data in records:
        offsets[key] = len(rec)
        idx += f"{key}\t{len(rec)}\n"
        rec += data
    (root / "train.rec").write_bytes(rec)
    (root / "train.idx").write_text(idx)
    return offsets


def open_quietly(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = RecordSource(root)
    return src, [str(w.message) for w in caught]


# Image bytes: anything works, the source does not decode. IMG_M holds the magic at an aligned payload position.
IMG_A = b"\xff\xd8A-image"                     # 9 bytes: exercises padding
IMG_B = b"\xff\xd8B-image-two"
IMG_M = b"\xff\xd8xy" + MAGIC + b"tail"         # payload offset 24 + 4 = 28: aligned


def insightface_records():
    """face2rec2's order: images 1..3 (label arrays [class, aligned] or plain floats), header 0, identities 4, 5."""
    return [
        (1, part(0, ir(2, 0.0, 1, (0.0, 1.0), IMG_A))),
        (2, part(0, ir(0, 0.0, 2, (), IMG_B))),
        (3, part(1, ir(0, 1.0, 3, (), IMG_M[:4])) + part(3, b"tail")),
        (0, part(0, ir(2, 0.0, 0, (4.0, 6.0)))),
        (4, part(0, ir(2, 0.0, 4, (1.0, 3.0)))),
        (5, part(0, ir(2, 0.0, 5, (3.0, 4.0)))),
    ]


def test_insightface_header_record_selects_image_range(tmp_path):
    offsets = write_dataset(tmp_path, insightface_records())
    src, caught = open_quietly(tmp_path)
    assert caught == []
    assert len(src) == 3
    assert src.labels.dtype == np.int64 and src.labels.tolist() == [0, 0, 1]
    assert src.class_names == ["0", "1"]
    assert [src.read(i) for i in range(3)] == [IMG_A, IMG_B, IMG_M]
    assert src.describe(2) == f"{tmp_path / 'train.rec'} record 3 @ offset {offsets[3]}"
    assert isinstance(open_source(tmp_path), RecordSource)


def test_multipart_record_reassembles_magic(tmp_path):
    payload = ir(0, 1.0, 3, (), IMG_M)
    data = part(1, payload[:28]) + part(3, payload[32:])
    assert decode_record(data, 0) == (payload, len(data))
    # three parts: magic twice, the second right after the first
    payload2 = b"abcd" + MAGIC + MAGIC + b"xyz"
    data2 = part(1, b"abcd") + part(2, b"") + part(3, b"xyz")
    assert decode_record(data2, 0) == (payload2, len(data2))


def test_encoder_splits_like_dmlc():
    assert encode_record(b"abcde") == part(0, b"abcde")
    assert encode_record(b"") == MAGIC + b"\0\0\0\0"
    # aligned magic at 0, and twice in a row: empty first and middle parts
    assert encode_record(MAGIC + MAGIC + b"xy") == part(1, b"") + part(2, b"") + part(3, b"xy")
    assert encode_record(b"abcd" + MAGIC) == part(1, b"abcd") + part(3, b"")
    # unaligned magic is data
    assert encode_record(b"ab" + MAGIC + b"cd") == part(0, b"ab" + MAGIC + b"cd")


def test_records_without_header_read_labels_per_record(tmp_path):
    write_dataset(tmp_path, [
        (0, part(0, ir(0, 10.0, 0, (), IMG_A))),
        (1, part(0, ir(1, 0.0, 1, (2.0,), IMG_B))),       # label array: its first element
        (2, part(0, ir(0, 2.0, 2, (), IMG_M[:4]))),
    ])
    src, caught = open_quietly(tmp_path)
    assert caught == []
    # distinct labels 2, 10 -> classes 0, 1, named with equal width so string order = numeric order
    assert src.labels.tolist() == [1, 0, 0]
    assert src.class_names == ["02", "10"]
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n")
    src, _ = open_quietly(tmp_path)
    assert src.labels.tolist() == [10, 2, 2] and src.class_names[10] == "k"


def test_corrupt_and_truncated_records_are_skipped_and_reported(tmp_path):
    good = part(0, ir(0, 0.0, 1, (), IMG_A))
    bad_magic = b"\x00\x00\x00\x00" + good[4:]
    truncated = part(0, ir(0, 1.0, 3, (), IMG_B))[:-8]
    write_dataset(tmp_path, [(1, good), (2, bad_magic), (3, truncated)])
    src, caught = open_quietly(tmp_path)
    assert len(src) == 1 and src.read(0) == IMG_A
    assert len(src.skipped) == 2
    assert "record 2 @ offset" in src.skipped[0] and "bad magic 0x00000000" in src.skipped[0]
    assert "record 3 @ offset" in src.skipped[1] and "truncated" in src.skipped[1]
    assert len(caught) == 1 and "skipped 2 unreadable record(s)" in caught[0]


def test_read_raises_value_error_naming_record_when_file_changes(tmp_path):
    offsets = write_dataset(tmp_path, insightface_records()[:3])
    src, _ = open_quietly(tmp_path)
    rec = tmp_path / "train.rec"
    data = bytearray(rec.read_bytes())
    data[offsets[2]] ^= 0xFF
    rec.write_bytes(bytes(data[: offsets[3] + 12]))
    with pytest.raises(ValueError, match=r"record 2 @ offset \d+: bad magic"):
        src.read(1)
    with pytest.raises(ValueError, match=r"record 3 @ offset \d+: truncated"):
        src.read(2)
    assert src.read(0) == IMG_A


def test_bad_index_line_names_file_and_line(tmp_path):
    write_dataset(tmp_path, insightface_records())
    (tmp_path / "train.idx").write_text("1\t0\n2\tx12\n")
    with pytest.raises(CosfaceError, match=r"train.idx, line 2: .* is not 'key<TAB>offset'"):
        RecordSource(tmp_path)
    (tmp_path / "train.idx").write_text("1\t0\n1\t40\n")
    with pytest.raises(CosfaceError, match="key 1 is listed twice"):
        RecordSource(tmp_path)


def test_index_lines_as_mxnet_reads_them(tmp_path):
    # Out-of-order keys, CRLF, a trailing tab or spaces and trailing blank lines: MXNet strips each line.
    offsets = write_dataset(tmp_path, insightface_records())
    ends = ["\t", " ", "", "\t ", "", ""]
    lines = [f"{k}\t{offsets[k]}{end}" for k, end in zip([3, 0, 5, 1, 4, 2], ends)]
    (tmp_path / "train.idx").write_bytes(("\r\n".join(lines) + "\r\n\r\n").encode())
    src, caught = open_quietly(tmp_path)
    assert caught == [] and src.labels.tolist() == [0, 0, 1]
    assert [src.read(i) for i in range(3)] == [IMG_A, IMG_B, IMG_M]
    assert [src.record_key(i) for i in range(3)] == [1, 2, 3]


def test_missing_index_is_rebuilt_by_scanning(tmp_path):
    write_dataset(tmp_path, insightface_records())
    (tmp_path / "train.idx").unlink()
    src, caught = open_quietly(tmp_path)
    assert len(caught) == 1 and "no train.idx: found 6 records by scanning" in caught[0]
    assert src.labels.tolist() == [0, 0, 1]
    assert [src.read(i) for i in range(3)] == [IMG_A, IMG_B, IMG_M]


def test_writer_bytes_match_hand_built_file(tmp_path):
    with RecordWriter(tmp_path) as w:
        assert w.write(0, IMG_A) == 1
        w.write(0, IMG_M)
        w.write(1, IMG_B)
    expected = [
        (1, part(0, ir(0, 0.0, 1, (), IMG_A))),
        (2, part(1, ir(0, 0.0, 2, (), IMG_M[:4])) + part(3, b"tail")),
        (3, part(0, ir(0, 1.0, 3, (), IMG_B))),
        (0, part(0, ir(2, 0.0, 0, (4.0, 6.0)))),
        (4, part(0, ir(2, 0.0, 4, (1.0, 3.0)))),
        (5, part(0, ir(2, 0.0, 5, (3.0, 4.0)))),
    ]
    ref = tmp_path / "ref"
    write_dataset(ref, expected)
    assert (tmp_path / "train.rec").read_bytes() == (ref / "train.rec").read_bytes()
    assert (tmp_path / "train.idx").read_text() == (ref / "train.idx").read_text()
    assert (tmp_path / "property").read_text() == "2,112,112\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["property", "ref", "train.idx", "train.rec"]


def test_writer_rejects_ungrouped_labels_and_cleans_up(tmp_path):
    with pytest.raises(ValueError, match="grouped and in order: got 0 after 1"):
        with RecordWriter(tmp_path) as w:
            w.write(0, IMG_A)
            w.write(1, IMG_A)
            w.write(0, IMG_A)
    assert list(tmp_path.iterdir()) == []


def _read_all(src):
    return [src.read(i) for i in range(len(src))]


def test_source_survives_pickling_and_forked_workers(tmp_path):
    write_dataset(tmp_path, insightface_records())
    src, _ = open_quietly(tmp_path)
    src.read(0)  # opens the descriptor in this process
    clone = pickle.loads(pickle.dumps(src))
    assert _read_all(clone) == [IMG_A, IMG_B, IMG_M]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_read_all, [src, src])
    assert results == [[IMG_A, IMG_B, IMG_M]] * 2
    assert _read_all(src) == [IMG_A, IMG_B, IMG_M]
