"""Pack an image folder into insightface's RecordIO files, and unpack such files into a folder.

Packing keeps a JPEG that already has the model's input size byte for byte (so aligned face crops
lose nothing); any other image is decoded, resized to the input size and JPEG-encoded. The class
folder names go to `classes.txt` (line i = class i), so labels map back to names. Unpacking writes
`<class name>/<record key, zero-padded>.<ext>`: with the names sorted as the image folder sorts them,
an unpacked folder has the same class indices and the same image order as the packed records.
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cosface.data.recordio import CLASSES_FILE, RecordSource, RecordWriter
from cosface.data.sources import ImageFolderSource
from cosface.errors import CosfaceError
from cosface.preprocess import DEFAULT, decode_image

_SIGNATURES = [  # (leading bytes, extension) for naming unpacked files
    (b"\xff\xd8", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"BM", ".bmp"),
    (b"GIF8", ".gif"),
]


def _extension(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for sig, ext in _SIGNATURES if data.startswith(sig)), ".bin")


@dataclass
class PackReport:
    out_dir: Path
    images: int = 0
    classes: int = 0
    copied: int = 0        # JPEGs stored unchanged
    reencoded: int = 0     # decoded, resized and encoded again
    skipped: list[str] = field(default_factory=list)


@dataclass
class UnpackReport:
    out_dir: Path
    images: int = 0
    classes: int = 0
    skipped: list[str] = field(default_factory=list)


def prepare_image(data: bytes, size: int = DEFAULT.size, quality: int = 95) -> tuple[bytes, bool]:
    """Encoded image -> (JPEG bytes of a size x size image, whether the input was kept unchanged).

    Raises ValueError when the bytes are not a decodable image.
    """
    import simplejpeg

    if data[:2] == b"\xff\xd8":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            height = width = None
        if height == size and width == size:
            return data, True
    img = decode_image(data, size)
    return simplejpeg.encode_jpeg(img, quality=quality, colorspace="RGB"), False


# Worker-process state, set once per process by the pool initializer so tasks carry only an index.
_worker_source: ImageFolderSource | None = None
_worker_quality = 95


def _init_worker(source: ImageFolderSource, quality: int) -> None:
    global _worker_source, _worker_quality
    _worker_source, _worker_quality = source, quality


def _prepare_sample(i: int) -> tuple[bytes | None, bool, str]:
    assert _worker_source is not None, "_init_worker runs first"
    try:
        data, copied = prepare_image(_worker_source.read(i), DEFAULT.size, _worker_quality)
    except (OSError, ValueError) as e:
        return None, False, f"{_worker_source.describe(i)}: {e}"
    return data, copied, ""


def pack_folder(image_dir: str | os.PathLike, out_dir: str | os.PathLike, workers: int | None = None,
                quality: int = 95, progress: bool = True) -> PackReport:
    """Write the image folder `image_dir` (`<class>/<image>`) as train.rec + train.idx in `out_dir`.

    `workers` processes read and encode (default: one per CPU; 0 or 1 works in this process).
    Files that are not decodable images are skipped and listed in the report.
    """
    from tqdm import tqdm

    if not 1 <= quality <= 100:
        raise CosfaceError(f"--quality must be in 1..100, got {quality}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise CosfaceError(f"--workers must be >= 0, got {workers}")
    source = ImageFolderSource(image_dir)
    report = PackReport(Path(out_dir), classes=len(source.class_names))
    with RecordWriter(out_dir, image_size=DEFAULT.size) as writer, \
            tqdm(total=len(source), unit="img", desc="pack", disable=not progress) as bar:
        if workers <= 1:
            _init_worker(source, quality)
            results: Iterator[tuple[bytes | None, bool, str]] = map(_prepare_sample, range(len(source)))
            _write_all(results, source, writer, report, bar)
        else:
            with multiprocessing.Pool(workers, _init_worker, (source, quality)) as pool:
                results = pool.imap(_prepare_sample, range(len(source)), chunksize=64)
                _write_all(results, source, writer, report, bar)
        # A class whose every file was skipped still owns its index, so labels keep matching the folder.
        while writer.num_classes < len(source.class_names):
            writer.add_empty_class()
    (Path(out_dir) / CLASSES_FILE).write_text("".join(f"{name}\n" for name in source.class_names), encoding="utf-8")
    return report


def _write_all(results, source, writer: RecordWriter, report: PackReport, bar) -> None:
    for i, (data, copied, error) in enumerate(results):
        bar.update(1)
        if data is None:
            report.skipped.append(error)
            continue
        label = int(source.labels[i])
        while writer.num_classes < label:
            writer.add_empty_class()
        writer.write(label, data)
        report.images += 1
        report.copied += copied
        report.reencoded += not copied


def unpack_records(packed_dir: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True) -> UnpackReport:
    """Write every image record of `packed_dir` (train.rec + train.idx) to `out_dir/<class name>/<key>.<ext>`.

    Class names come from classes.txt when present, else they are the label numbers. The output
    directory must be new or empty. Unreadable records are skipped and listed in the report.
    """
    from tqdm import tqdm

    packed_dir, out = Path(packed_dir), Path(out_dir)
    if not (packed_dir / "train.rec").is_file():
        raise CosfaceError(f"{packed_dir} has no train.rec")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CosfaceError(f"output directory {out} exists and is not empty")
    source = RecordSource(packed_dir)
    for c, name in enumerate(source.class_names):
        if name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
            raise CosfaceError(
                f"class {c} is named {name!r}, which cannot be a folder name (see {packed_dir / CLASSES_FILE})"
            )
    report = UnpackReport(out, skipped=list(source.skipped))
    width = len(str(max(source.record_key(i) for i in range(len(source)))))
    made: set[int] = set()
    for i in tqdm(range(len(source)), unit="img", desc="unpack", disable=not progress):
        try:
            data = source.read(i)
        except ValueError as e:
            report.skipped.append(str(e))
            continue
        label = int(source.labels[i])
        folder = out / source.class_names[label]
        if label not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(label)
        (folder / f"{source.record_key(i):0{width}d}{_extension(data)}").write_bytes(data)
        report.images += 1
    report.classes = len(made)
    return report
