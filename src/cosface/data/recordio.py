"""MXNet RecordIO as insightface writes it (`train.rec` + `train.idx`), read and written without MXNet.

Format (dmlc-core's recordio, which MXNet and insightface use; all integers little-endian):

* `train.rec` is a sequence of records. A record is one or more *parts*; a part is
  `uint32 magic 0xced7230a | uint32 lrec | data | zero padding to a multiple of 4`, with
  `cflag = lrec >> 29` and `len(data) = lrec & (2**29 - 1)`. The writer splits a payload at every
  4-byte-aligned position (counted from the payload start) where the magic word occurs, drops those
  four bytes and marks the parts cflag 1 (first), 2 (middle), 3 (last); a reader puts the magic back
  between the parts. cflag 0 is a record in one part. Only the last part needs padding, because the
  others end at aligned positions. So an aligned magic word in the file always starts a part.
* `train.idx` is text, one `key<TAB>byte offset of the record's first part` line per record.
* A record's payload is an IRHeader `<IfQQ` (flag uint32, label float32, id uint64, id2 uint64); when
  flag > 0, flag float32 labels follow (and the label field is 0); the rest is the encoded image.
* insightface's face datasets: record 0 has flag 2, no image, and labels [a, b]: the images are
  records 1 .. a-1 and records a .. b-1 are identity records (flag 2, no image, labels
  [first image key, end image key) of one identity, in label order). face2rec2 writes the images
  first, then record 0, then the identity records; `RecordWriter` does the same.

Labels and class names (the same semantics as an image folder): the class index of a record is its
label (the label field, or the first element of its label array) when `classes.txt` (one name per
line, line i = class i) sits beside the records; otherwise the distinct label values are numbered in
ascending order (the identity mapping for insightface's 0..C-1 labels) and named by their value,
zero-padded to a common width so that string order equals numeric order: unpacking to
`<name>/<file>` folders then gives an image folder with the same class indices.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cosface.errors import CosfaceError
from cosface.fsio import ensure_dir, read_text

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_PART_HEADER = struct.Struct("<II")
_IR_HEADER = struct.Struct("<IfQQ")
IR_HEADER_SIZE = _IR_HEADER.size  # 24
_FAST_HEADER = struct.Struct("<III")  # magic, lrec, IRHeader flag
# float32 holds integers exactly up to 2**24; insightface's header and identity records store keys as floats.
_MAX_FLOAT_KEY = 1 << 24
CLASSES_FILE = "classes.txt"


class RecordHeader(NamedTuple):
    flag: int
    label: float
    id: int
    id2: int
    labels: tuple[float, ...]   # the label array (empty when flag == 0)

    @property
    def class_label(self) -> float:
        """The label a face dataset means: the label field, or the first element of the label array."""
        return self.labels[0] if self.labels else self.label


def _pad(n: int) -> int:
    return -n % 4


def encode_record(payload: bytes) -> bytes:
    """One record's bytes in train.rec, split around aligned magic words exactly as dmlc-core does."""
    n = len(payload)
    if n > _LENGTH_MASK:
        raise ValueError(f"a record holds at most {_LENGTH_MASK} bytes, got {n}")
    words = np.frombuffer(payload, dtype="<u4", count=n // 4)
    hits = np.flatnonzero(words == MAGIC) * 4
    out = bytearray()
    start = 0
    for k, pos in enumerate(hits.tolist()):
        out += _PART_HEADER.pack(MAGIC, ((1 if k == 0 else 2) << 29) | (pos - start))
        out += payload[start:pos]
        start = pos + 4
    out += _PART_HEADER.pack(MAGIC, ((3 if len(hits) else 0) << 29) | (n - start))
    out += payload[start:]
    out += bytes(_pad(n))
    return bytes(out)


def decode_record(buf, offset: int) -> tuple[bytes, int]:
    """Reassemble the record whose first part starts at `offset` in `buf` (bytes or mmap).

    Returns (payload, offset just past the record). Raises ValueError saying what is wrong: a bad
    magic word, a continuation flag out of sequence, or a part running past the end of the data.
    """
    size = len(buf)
    pieces: list[bytes] = []
    pos = offset
    while True:
        if pos + 8 > size:
            raise ValueError(f"truncated: part header at byte {pos} runs past the end ({size} bytes)")
        magic, lrec = _PART_HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise ValueError(f"bad magic 0x{magic:08x} at byte {pos} (expected 0x{MAGIC:08x})")
        cflag, length = lrec >> 29, lrec & _LENGTH_MASK
        if cflag not in ((0, 1) if not pieces else (2, 3)):
            where = "a record's first part" if not pieces else "a continuation part"
            raise ValueError(f"continuation flag {cflag} at byte {pos} cannot start {where}")
        end = pos + 8 + length
        if end > size:
            raise ValueError(f"truncated: part of {length} bytes at byte {pos} runs past the end ({size} bytes)")
        data = bytes(buf[pos + 8:end])
        pos = end + _pad(length)
        if cflag == 0:
            return data, pos
        pieces.append(data)
        if cflag == 3:
            return _MAGIC_BYTES.join(pieces), pos


def make_payload(image: bytes, label, id: int, id2: int = 0) -> bytes:
    """IRHeader + optional label array + image, as mxnet.recordio.pack lays it out.

    A scalar label goes in the label field (flag 0); a sequence becomes the label array (flag = its
    length, label field 0).
    """
    if np.ndim(label) == 0:
        return _IR_HEADER.pack(0, float(label), id, id2) + image
    arr = np.asarray(label, dtype="<f4").ravel()
    return _IR_HEADER.pack(arr.size, 0.0, id, id2) + arr.tobytes() + image


def split_payload(payload: bytes) -> tuple[RecordHeader, bytes]:
    """Inverse of make_payload: (header, image bytes). Raises ValueError on a short payload."""
    if len(payload) < IR_HEADER_SIZE:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the {IR_HEADER_SIZE}-byte IRHeader")
    flag, label, id_, id2 = _IR_HEADER.unpack_from(payload)
    body = IR_HEADER_SIZE + 4 * flag
    if body > len(payload):
        raise ValueError(f"IRHeader announces {flag} labels but the payload holds {len(payload)} bytes")
    labels = tuple(np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_HEADER_SIZE).tolist())
    return RecordHeader(flag, label, id_, id2, labels), payload[body:]


def read_index(path: Path, rec_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """train.idx -> (keys, offsets), int64, in file order. Bad lines, and offsets that cannot start a
    record of a `rec_size`-byte train.rec, raise CosfaceError naming the line."""
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as e:
        bad = path.read_bytes()[: e.start].count(b"\n") + 1
        raise CosfaceError(f"{path}, line {bad}: not an index line (expected 'key<TAB>offset')") from None
    lines = text.splitlines()
    keys = np.empty(len(lines), dtype=np.int64)
    offsets = np.empty(len(lines), dtype=np.int64)
    n = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.strip().split("\t")  # as MXNet reads it: surrounding whitespace (a trailing tab) ignored
        try:
            if len(fields) != 2:
                raise ValueError
            key, off = int(fields[0]), int(fields[1])
        except ValueError:
            raise CosfaceError(f"{path}, line {lineno}: {line[:60]!r} is not 'key<TAB>offset' (two integers)") from None
        if off < 0:
            raise CosfaceError(f"{path}, line {lineno}: negative offset {off}")
        if rec_size is not None and off + _PART_HEADER.size > rec_size:
            raise CosfaceError(f"{path}, line {lineno}: offset {off} is past the end of train.rec ({rec_size} bytes)")
        if not -(1 << 63) <= key < (1 << 63) or off >= (1 << 63):
            raise CosfaceError(f"{path}, line {lineno}: {line[:60]!r} holds a number too large for a 64-bit integer")
        keys[n], offsets[n] = key, off
        n += 1
    keys, offsets = keys[:n], offsets[:n]
    if n == 0:
        raise CosfaceError(f"{path} lists no records")
    uniq, first = np.unique(keys, return_index=True)
    if len(uniq) != n:
        dup = np.setdiff1d(np.arange(n), first)[0]
        raise CosfaceError(f"{path}: key {keys[dup]} is listed twice (second time at entry {dup + 1})")
    return keys, offsets


class _Peek(NamedTuple):
    ok: np.ndarray        # bool: a one-part record whose IRHeader and labels lie inside the file
    span: np.ndarray      # bytes from the offset to the end of the record (without padding)
    label: np.ndarray     # float32 class label (label field or first array element)
    id: np.ndarray        # uint64 IRHeader id
    image_len: np.ndarray # int64 bytes of image data


def _peek(words: np.ndarray, offsets: np.ndarray, size: int, chunk: int = 1 << 16) -> _Peek:
    """Header fields of many one-part records at once, read from the file as uint32 words.

    Touches 36 bytes per record, so the labels of half a million records take well under a second
    once the file is in the page cache. Anything unusual (a multi-part record, a bad magic word, a
    record past the end) is left `ok=False` for the exact record-by-record parse.
    """
    n = len(offsets)
    ok = np.zeros(n, dtype=bool)
    span = np.zeros(n, dtype=np.int64)
    label = np.zeros(n, dtype=np.float32)
    ids = np.zeros(n, dtype=np.uint64)
    image_len = np.zeros(n, dtype=np.int64)
    nwords = len(words)
    if nwords == 0:
        return _Peek(ok, span, label, ids, image_len)
    cols = np.arange(9)
    for s in range(0, n, chunk):
        off = offsets[s:s + chunk]
        w0 = off // 4
        inside = (off % 4 == 0) & (w0 + 8 <= nwords)
        w = words[np.minimum(w0[:, None] + cols, nwords - 1)]          # (n, 9)
        length = (w[:, 1] & _LENGTH_MASK).astype(np.int64)
        flag = w[:, 2].astype(np.int64)
        body = IR_HEADER_SIZE + 4 * flag
        good = (inside & (w[:, 0] == MAGIC) & (w[:, 1] >> 29 == 0) & (length >= body)
                & (off + 8 + length <= size) & ((flag == 0) | (w0 + 9 <= nwords)))
        field = np.where(flag > 0, w[:, 8], w[:, 3]).view(np.float32)
        ok[s:s + chunk] = good
        span[s:s + chunk] = 8 + length
        label[s:s + chunk] = field
        ids[s:s + chunk] = w[:, 4].astype(np.uint64) | (w[:, 5].astype(np.uint64) << np.uint64(32))
        image_len[s:s + chunk] = length - body
    return _Peek(ok, span, label, ids, image_len)


def _scan_offsets(words: np.ndarray, chunk: int = 1 << 24) -> np.ndarray:
    """Offsets of every record in train.rec, found without an index.

    The writer escapes aligned magic words inside payloads, and an lrec word can never equal the
    magic (its top three bits would be cflag 6), so an aligned magic word whose cflag is 0 or 1
    starts a record. This also steps over damaged stretches of the file.
    """
    found = []
    for s in range(0, len(words), chunk):
        hits = np.flatnonzero(words[s:s + chunk] == MAGIC) + s
        hits = hits[hits + 1 < len(words)]
        found.append(hits[(words[hits + 1] >> 29) <= 1])
    return np.concatenate(found).astype(np.int64) * 4 if found else np.zeros(0, dtype=np.int64)


class RecordSource:
    """A directory with train.rec (+ train.idx), as a source (see cosface.data.sources).

    Opening reads only the record headers (labels); `read(i)` fetches one record with `os.pread`,
    which uses no shared file position, so DataLoader workers (forked or spawned) can share it, and
    unlike a memory map it cannot crash a worker with SIGBUS if the file shrinks under it.

    Records whose header cannot be read (bad magic, a record running past the end of the file, no
    image, a label that is not a class index, a key missing from train.idx) are left out, listed in
    `skipped`, and reported in one warning. An index line whose offset lies wholly beyond the end of
    train.rec is an error naming the line instead: that is a truncated copy of the file, to be fetched
    again rather than trained on in part. A record that goes bad later makes `read(i)` raise ValueError naming it,
    so the dataset skips it like a corrupt JPEG. Without train.idx the records are found by scanning
    train.rec (with a warning): keys are the IRHeader ids when unique, else positions in the file.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.rec_path = self.root / "train.rec"
        idx_path = self.root / "train.idx"
        if not self.rec_path.is_file():
            raise CosfaceError(f"{self.rec_path} does not exist")
        size = self.rec_path.stat().st_size
        if size == 0:
            raise CosfaceError(f"{self.rec_path} is empty")
        self.skipped: list[str] = []
        self._fd: int | None = None
        # The map is only for reading headers here; it is unmapped when the last view of it is
        # dropped (closing it explicitly would fail while a traceback still holds a numpy view).
        with open(self.rec_path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        words = np.frombuffer(mm, dtype="<u4", count=size // 4)
        keys, offsets = read_index(idx_path, size) if idx_path.is_file() else self._scan(words, mm, size)
        keys, offsets = self._image_records(keys, offsets, mm)
        labels, spans, good = self._labels(keys, offsets, words, mm, size)
        del words, mm
        self._keys, self._offsets, self._spans = keys[good], offsets[good], spans[good]
        self.labels, self.class_names = self._classes(labels[good])
        if self.skipped:
            shown = "; ".join(self.skipped[:3]) + ("; ..." if len(self.skipped) > 3 else "")
            warnings.warn(f"{self.rec_path}: skipped {len(self.skipped)} unreadable record(s): {shown}", stacklevel=2)
        if len(self._keys) == 0:
            raise CosfaceError(f"{self.rec_path} holds no readable image records")

    # -- opening ---------------------------------------------------------------------------------
    def _scan(self, words, mm, size: int) -> tuple[np.ndarray, np.ndarray]:
        offsets = _scan_offsets(words)
        if len(offsets) == 0:
            raise CosfaceError(f"{self.rec_path} contains no RecordIO records (no 0x{MAGIC:08x} magic word)")
        peek = _peek(words, offsets, size)
        ids = peek.id.astype(np.int64)
        for i in np.flatnonzero(~peek.ok):
            try:
                ids[i] = split_payload(decode_record(mm, int(offsets[i]))[0])[0].id
            except ValueError:
                ids[i] = -1 - i  # unreadable: any unique placeholder; its record is reported later
        unique_ids = len(np.unique(ids)) == len(ids) and (ids >= 0).all()
        keys = ids if unique_ids else np.arange(len(offsets), dtype=np.int64)
        warnings.warn(
            f"{self.root} has no train.idx: found {len(offsets)} records by scanning train.rec "
            f"(keyed by {'record id' if unique_ids else 'position'})",
            stacklevel=3,
        )
        return keys, offsets

    def _image_records(self, keys, offsets, mm) -> tuple[np.ndarray, np.ndarray]:
        """Keys and offsets of the image records, honouring insightface's header record 0."""
        where = np.flatnonzero(keys == 0)
        if len(where) == 0:
            return keys, offsets
        off0 = int(offsets[where[0]])
        try:
            header, image = split_payload(decode_record(mm, off0)[0])
        except ValueError as e:
            raise CosfaceError(
                f"{self.rec_path} record 0 @ offset {off0} (the dataset header) is unreadable: {e}"
            ) from None
        if header.flag < 2 or image:
            return keys, offsets  # record 0 is an ordinary image
        first, end = header.labels[0], header.labels[1]
        if not (np.isfinite([first, end]).all() and first == int(first) >= 1 and end == int(end) >= first):
            raise CosfaceError(
                f"{self.rec_path} record 0: header labels {header.labels[:2]} are not an image key range [1, a)"
            )
        wanted = np.arange(1, int(first), dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        pos = np.searchsorted(keys, wanted, sorter=order)
        pos = np.minimum(pos, len(keys) - 1)
        found = keys[order[pos]] == wanted
        for k in wanted[~found]:
            self.skipped.append(f"{self.rec_path} record {k}: in the header's image range but not in train.idx")
        return wanted[found], offsets[order[pos[found]]]

    def _labels(self, keys, offsets, words, mm, size):
        peek = _peek(words, offsets, size)
        labels, spans = peek.label.astype(np.float64), peek.span.copy()
        good = peek.ok & (peek.image_len > 0)
        for i in np.flatnonzero(~good):
            off = int(offsets[i])
            try:
                payload, after = decode_record(mm, off)
                header, image = split_payload(payload)
                if not image:
                    raise ValueError("holds no image data")
            except ValueError as e:
                self.skipped.append(f"{self.rec_path} record {keys[i]} @ offset {off}: {e}")
                continue
            labels[i], spans[i], good[i] = header.class_label, after - off, True
        bad = good & ~(np.isfinite(labels) & (labels >= 0) & (labels < 2**31) & (labels == np.round(labels)))
        for i in np.flatnonzero(bad):
            self.skipped.append(
                f"{self.rec_path} record {keys[i]} @ offset {offsets[i]}: label {labels[i]} is not a class index"
            )
        good &= ~bad
        return np.where(good, labels, 0).astype(np.int64), spans, good

    def _classes(self, raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
        names_path = self.root / CLASSES_FILE
        if names_path.is_file():
            names = read_text(names_path, "class list").splitlines()
            for lineno, name in enumerate(names, 1):
                if not name.strip():
                    raise CosfaceError(f"{names_path}, line {lineno}: empty class name")
            if len(raw) and raw.max() >= len(names):
                raise CosfaceError(
                    f"{names_path} names {len(names)} classes but {self.rec_path} has label {int(raw.max())}"
                )
            return raw, names
        values, labels = np.unique(raw, return_inverse=True)
        width = len(str(int(values[-1]))) if len(values) else 1
        return labels.astype(np.int64), [str(int(v)).zfill(width) for v in values]

    # -- the source protocol ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._keys)

    def read(self, i: int) -> bytes:
        off, span = int(self._offsets[i]), int(self._spans[i])
        if self._fd is None:
            self._fd = os.open(self.rec_path, os.O_RDONLY)
        data = os.pread(self._fd, span, off)
        if len(data) >= _FAST_HEADER.size:
            # The usual record, one part with a scalar label: slice the image out in one step (the
            # loader's per-image cost); anything else takes the full parse below.
            magic, lrec, flag = _FAST_HEADER.unpack_from(data)
            start, end = 8 + IR_HEADER_SIZE + 4 * flag, 8 + (lrec & _LENGTH_MASK)
            if magic == MAGIC and lrec >> 29 == 0 and start < end <= len(data):
                return data[start:end]
        try:
            payload, _ = decode_record(data, 0)
            header, image = split_payload(payload)
        except ValueError as e:
            raise ValueError(f"{self.describe(i)}: {e}") from None
        if not image:
            raise ValueError(f"{self.describe(i)}: holds no image data")
        return image

    def describe(self, i: int) -> str:
        return f"{self.rec_path} record {self._keys[i]} @ offset {self._offsets[i]}"

    def record_key(self, i: int) -> int:
        """The train.idx key (insightface's record number) of sample i."""
        return int(self._keys[i])

    # -- process safety ----------------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"] = None  # a descriptor number means nothing in another process
        return state

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass


class RecordWriter:
    """Writes `train.rec` + `train.idx` (+ `property`) as insightface's face2rec2 lays them out.

    Images get keys 1..N in the order written, with a scalar label (flag 0) and id = key; on close,
    record 0 (flag 2, labels [N+1, N+1+C]) and one identity record per class (keys N+1.., labels
    [first key, end key)) follow. Labels must arrive grouped and in order (0, 0, 1, 2, 2, ...), which
    is what identity records describe. Files are written under temporary names and renamed on a
    successful close, so a failed run leaves no half-written dataset behind.
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 112):
        self.root = ensure_dir(root, "output directory")
        for name in ("train.rec", "train.idx"):
            if (self.root / name).exists():
                raise CosfaceError(f"{self.root / name} already exists; choose an empty output directory")
        self.image_size = image_size
        self._rec = open(self.root / "train.rec.partial", "wb")
        self._idx = open(self.root / "train.idx.partial", "w", encoding="ascii", newline="\n")
        self._pos = 0
        self._next_key = 1
        self._class_starts: list[int] = []   # first image key of each class; class c = position c
        self._closed = False

    def _put(self, key: int, payload: bytes) -> None:
        data = encode_record(payload)
        self._rec.write(data)
        self._idx.write(f"{key}\t{self._pos}\n")
        self._pos += len(data)

    def write(self, label: int, image: bytes) -> int:
        """Append one encoded image of class `label`; returns its key."""
        label = int(label)
        current = len(self._class_starts) - 1
        if label == current + 1:
            self._class_starts.append(self._next_key)
        elif label != current:
            raise ValueError(f"labels must come grouped and in order: got {label} after {current}")
        key = self._next_key
        self._put(key, make_payload(image, float(label), key))
        self._next_key += 1
        return key

    def add_empty_class(self) -> None:
        """Give the next class index an identity record with no images (all its files were unreadable)."""
        self._class_starts.append(self._next_key)

    @property
    def num_classes(self) -> int:
        return len(self._class_starts)

    def close(self) -> None:
        if self._closed:
            return
        first_identity = self._next_key
        end = first_identity + len(self._class_starts)
        if end > _MAX_FLOAT_KEY:
            self.abort()
            raise CosfaceError(f"{end} records exceed what insightface's float32 header can address ({_MAX_FLOAT_KEY})")
        self._put(0, make_payload(b"", [float(first_identity), float(end)], 0))
        bounds = self._class_starts + [first_identity]
        for c in range(len(self._class_starts)):
            key = first_identity + c
            self._put(key, make_payload(b"", [float(bounds[c]), float(bounds[c + 1])], key))
        self._rec.close()
        self._idx.close()
        (self.root / "property").write_text(f"{len(self._class_starts)},{self.image_size},{self.image_size}\n")
        os.replace(self.root / "train.rec.partial", self.root / "train.rec")
        os.replace(self.root / "train.idx.partial", self.root / "train.idx")
        self._closed = True

    def abort(self) -> None:
        """Stop and delete the partial files."""
        self._closed = True
        for f in (self._rec, self._idx):
            with contextlib.suppress(OSError):  # a full disk fails the final flush too
                f.close()
        for name in ("train.rec.partial", "train.idx.partial"):
            (self.root / name).unlink(missing_ok=True)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
