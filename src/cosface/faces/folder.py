"""`cosface align`: a raw photo folder becomes the aligned training (or LFW) layout.

RAW/<class>/<image> (any sizes) -> OUT/<class>/<stem>.jpg, one aligned crop per kept face. Work is spread
over processes (each with its own one-thread detector); every crop is written to a hidden temporary name
and renamed into place, so a file under its final name is always complete. Finished images are logged in
OUT/.align_journal.jsonl: a rerun skips them (and images whose crop exists), and the report still covers
every image. OUT/align_report.json lists the photos without a face and the photos with several (which
one was kept and why).

LFW mode: RAW is a raw LFW release (RAW/<Name>/<Name>_0001.jpg, 250x250); the crops go to
OUT/lfw_align_112/<Name>/, pairs.txt is copied to OUT, the face nearest the centre is kept, and a photo
without a detected face falls back to a centre crop (the convention of the reference's aligned LFW: the
box inset by 1/16 of the size on every side, widened by 22 pixels, resized), which the report lists.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
JOURNAL = ".align_journal.jsonl"
OPTIONS_FILE = ".align_options.json"
REPORT = "align_report.json"
PARTIAL = ".partial"
JPEG_QUALITY = 95
LFW_SUBDIR = "lfw_align_112"


@dataclass(frozen=True)
class AlignOptions:
    detector: str = "retinaface"
    size: int = 112
    keep: str = "largest"
    min_face: float = 0.0
    max_side: int = 640
    template: str = "arcface"
    score_threshold: float | None = None
    lfw: bool = False

    def check(self) -> None:
        from cosface.faces.align import template_points
        from cosface.faces.detect import DETECTORS, KEEP

        DETECTORS.get(self.detector)
        template_points(self.template, self.size)
        if self.keep not in KEEP:
            raise CosfaceError(f"--keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.min_face < 0:
            raise CosfaceError(f"--min-face must be >= 0 pixels, got {self.min_face}")
        # One detection on a blank pixel checks max_side, the threshold and that the detector can be built
        # (its package installed, its weights intact) here, rather than as an error on every photo.
        from cosface.faces.detect import detect_faces

        detect_faces(np.zeros((1, 1, 3), np.uint8), self.detector, self.max_side,
                     score_threshold=self.score_threshold, threads=1)


@dataclass(frozen=True)
class Task:
    source: str      # absolute path of the raw photo
    rel: str         # <class>/<file> under RAW, the image's name in the journal and the report
    out_stem: str    # absolute path of the crop without ".jpg"


def _out_stems(photos: list[str], keep_all: bool) -> dict[str, str]:
    """Photo file name -> the stem of its crops, no two photos sharing a crop name.

    a.jpg and a.png -> a.jpg, a.png (then a.jpg.jpg, a.png.jpg). With --keep all a photo x.jpg may write
    x_0.jpg, x_1.jpg, ..., so a photo x_0.jpg keeps its full name too (x_0.jpg.jpg).
    """
    count: dict[str, int] = {}
    for f in photos:
        count[Path(f).stem] = count.get(Path(f).stem, 0) + 1
    stems = {f: Path(f).stem if count[Path(f).stem] == 1 else f for f in photos}
    if keep_all:
        taken = set(stems.values())
        stems = {f: f if _face_suffixed(s, taken) else s for f, s in stems.items()}
    owner: dict[str, str] = {}
    for f, s in stems.items():          # what the renaming above cannot settle (a.jpg, a.png and a.jpg.png)
        if s in owner:
            raise CosfaceError(f"photos {owner[s]!r} and {f!r} would be written to the same crop name; rename one")
        owner[s] = f
    names = set(owner)
    for f, s in stems.items():
        if keep_all and _face_suffixed(s, names):
            raise CosfaceError(f"with --keep all, photo {f!r} would be written to the crop name of a face of photo "
                               f"{owner[s.rpartition('_')[0]]!r}; rename one")
    return stems


def _face_suffixed(stem: str, stems: set[str]) -> bool:
    """Whether `stem` is some other stem's name for one of several faces ("<other>_<i>")."""
    base, sep, num = stem.rpartition("_")
    return bool(sep) and num.isascii() and num.isdigit() and str(int(num)) == num and base in stems


def list_raw(raw: Path, out: Path, lfw: bool, keep_all: bool = False) -> tuple[list[Task], list[str]]:
    """Tasks for every photo in RAW/<class>/, and names of files that are not photos (reported, not aligned)."""
    if not raw.is_dir():
        raise CosfaceError(f"raw folder {raw} does not exist or is not a directory")
    classes = sorted(e.name for e in os.scandir(raw) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise CosfaceError(f"raw folder {raw} has no class folders (expected {raw}/<class>/<image>)")
    base = out / LFW_SUBDIR if lfw else out
    tasks, ignored = [], []
    for c in classes:
        files = sorted(e.name for e in os.scandir(raw / c) if e.is_file() and not e.name.startswith("."))
        ignored += [f"{c}/{f}" for f in files if Path(f).suffix.lower() not in PHOTO_SUFFIXES]
        photos = [f for f in files if Path(f).suffix.lower() in PHOTO_SUFFIXES]
        try:
            stems = _out_stems(photos, keep_all)
        except CosfaceError as e:
            raise CosfaceError(f"{raw / c}: {e}") from None
        tasks += [Task(str(raw / c / f), f"{c}/{f}", str(base / c / stems[f])) for f in photos]
    if not tasks:
        raise CosfaceError(f"raw folder {raw} holds no photos ({', '.join(sorted(PHOTO_SUFFIXES))}) in its class folders")
    return tasks, ignored


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """LFW's no-detection fallback: the box inset by 1/16 on each side, widened by 22 px, resized to size."""
    from PIL import Image

    h, w = image.shape[:2]
    x1, y1 = max(0, round(w / 16 - 22)), max(0, round(h / 16 - 22))
    x2, y2 = min(w, round(w - w / 16 + 22)), min(h, round(h - h / 16 + 22))
    crop = np.ascontiguousarray(image[y1:y2, x1:x2])
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def write_atomic(path: Path, data: bytes) -> None:
    """Write under a hidden temporary name in the same folder, then rename: the final name is never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _why(faces, keep: str) -> str:
    if keep == "largest":
        return "largest box"
    if keep == "center":
        return "box centre nearest the photo's centre"
    return "all kept"


def align_one(task: Task, opts: AlignOptions) -> dict:
    """Detect, choose, align and write one photo; returns its journal record (never raises for a bad photo)."""
    import simplejpeg

    from cosface.faces.align import align_face
    from cosface.faces.detect import choose_faces, detect_faces, read_photo

    record: dict = {"image": task.rel}
    try:
        image = read_photo(task.source)
        faces = detect_faces(image, opts.detector, opts.max_side, min_face=opts.min_face,
                             score_threshold=opts.score_threshold, threads=1)
    except CosfaceError as e:
        return {**record, "status": "error", "error": str(e)}
    h, w = image.shape[:2]
    record.update(width=w, height=h, faces=len(faces))
    chosen = choose_faces(faces, opts.keep, w, h)
    crops = [align_face(image, f.landmarks, opts.size, opts.template) for f in chosen]
    if not chosen:
        if not opts.lfw:
            return {**record, "status": "no_face"}
        crops = [centre_crop(image, opts.size)]
        record["status"] = "centre_crop"
    else:
        record["status"] = "aligned"
    if len(faces) > 1:
        record["kept"] = ([faces.index(f) for f in chosen], _why(faces, opts.keep))
        record["boxes"] = [[round(v, 1) for v in f.box] for f in faces]
        record["scores"] = [round(f.score, 4) for f in faces]
    outputs = [f"{task.out_stem}.jpg"] if len(crops) == 1 else [f"{task.out_stem}_{i}.jpg" for i in range(len(crops))]
    # Later crops first, the first one last: with --keep all, the first crop's presence means the image is done.
    for path, crop in reversed(list(zip(outputs, crops))):
        write_atomic(Path(path), simplejpeg.encode_jpeg(np.ascontiguousarray(crop), quality=JPEG_QUALITY,
                                                        colorspace="RGB"))
    record["outputs"] = len(outputs)
    return record


def _init_worker() -> None:
    # The parent handles Ctrl-C and stops the pool; workers would otherwise each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_pool(todo: list[Task], opts: AlignOptions, workers: int, finish) -> None:
    """Align on `workers` processes, journaling each photo as soon as it is done (in any order).

    A bounded number of photos is in flight, so memory stays flat on a 500k-photo folder. When stopped,
    photos already being aligned are finished and journaled before the interrupt goes on.
    """
    from concurrent.futures import FIRST_COMPLETED, wait

    tasks = iter(todo)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        running: set = set()
        try:
            while True:
                while len(running) < 4 * workers:
                    t = next(tasks, None)
                    if t is None:
                        break
                    running.add(pool.submit(align_one, t, opts))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    finish(f.result())
        except BaseException:
            for f in running:
                f.cancel()
            for f in wait(running).done:
                if not f.cancelled() and f.exception() is None:
                    finish(f.result())
            raise


def _read_journal(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue                       # a line cut by a kill: that image is simply redone
            if isinstance(r, dict) and "image" in r and r.get("status") != "error":
                done[r["image"]] = r
    return done


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _remove_partials(out: Path) -> int:
    n = 0
    if out.is_dir():
        for p in out.rglob(f".*{PARTIAL}"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _check_options(out: Path, opts: AlignOptions) -> None:
    path = out / OPTIONS_FILE
    mine = asdict(opts)
    if path.exists():
        try:
            theirs = json.loads(path.read_text())
        except json.JSONDecodeError:
            theirs = None
        if theirs != mine:
            diff = ", ".join(f"{k} {theirs.get(k)!r} -> {v!r}" for k, v in mine.items()
                             if isinstance(theirs, dict) and theirs.get(k) != v) or "unreadable options file"
            raise CosfaceError(f"{out} was aligned with other options ({diff}); align into a new folder, or delete "
                               f"{out} to start again")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(mine, indent=1).encode())


def find_pairs(raw: Path, pairs: str | os.PathLike | None) -> Path:
    if pairs is not None:
        p = Path(pairs)
        if not p.is_file():
            raise CosfaceError(f"pairs file {p} not found")
        return p
    for p in (raw / "pairs.txt", raw.parent / "pairs.txt"):
        if p.is_file():
            return p
    raise CosfaceError(f"--lfw needs pairs.txt: none in {raw} or {raw.parent}; pass --pairs FILE")


def align_folder(raw: str | os.PathLike, out: str | os.PathLike, opts: AlignOptions = AlignOptions(), *,
                 workers: int = 1, progress: bool = True, pairs: str | os.PathLike | None = None) -> dict:
    """Align every photo under RAW into OUT (see the module docstring); returns the report it writes."""
    from tqdm import tqdm

    opts.check()
    raw, out = Path(raw), Path(out)
    if workers < 1:
        raise CosfaceError(f"--workers must be >= 1, got {workers}")
    if out.resolve() == raw.resolve() or raw.resolve() in out.resolve().parents:
        raise CosfaceError(f"the output folder {out} must not lie inside the raw folder {raw}")
    pairs_src = find_pairs(raw, pairs) if opts.lfw else None
    tasks, ignored = list_raw(raw, out, opts.lfw, opts.keep == "all")
    _check_options(out, opts)
    _remove_partials(out)
    journal_path = out / JOURNAL
    done = _read_journal(journal_path)
    todo = [t for t in tasks if t.rel not in done and not _written(t, opts.keep == "all")]
    already = {t.rel for t in tasks} - {t.rel for t in todo}
    start = time.perf_counter()
    records: dict[str, dict] = {}

    def stop(signum, frame):                  # a plain `kill` ends the run as Ctrl-C does: cleanly
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if _main_thread() else None
    journal = open(journal_path, "a", encoding="utf-8")
    if _ends_mid_line(journal_path):     # a crash cut the last line: start on a fresh one, not glued to it
        journal.write("\n")
    try:
        with tqdm(total=len(tasks), initial=len(already), unit="img", desc="align", file=sys.stderr,
                  disable=not progress) as bar:
            def finish(r: dict) -> None:
                records[r["image"]] = r
                journal.write(json.dumps(r) + "\n")
                journal.flush()
                bar.update(1)

            if workers == 1 or len(todo) <= 1:
                for t in todo:
                    finish(align_one(t, opts))
            else:
                _run_pool(todo, opts, workers, finish)
    finally:
        journal.close()
        _remove_partials(out)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if pairs_src is not None:
        shutil.copyfile(pairs_src, out / "pairs.txt")
    report = _report(raw, out, opts, tasks, ignored, done, records, already, time.perf_counter() - start)
    write_atomic(out / REPORT, json.dumps(report, indent=1).encode())
    return report


def _written(t: Task, keep_all: bool) -> bool:
    # Only --keep all writes <stem>_0.jpg; otherwise that name may be another photo's crop.
    return Path(f"{t.out_stem}.jpg").exists() or (keep_all and Path(f"{t.out_stem}_0.jpg").exists())


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _report(raw, out, opts, tasks, ignored, done, records, already, seconds) -> dict:
    # A crop can exist without a journal line when a run was killed between the two writes: it counts as
    # aligned, but its face count is unknown.
    allr = [records.get(t.rel) or done.get(t.rel) or {"image": t.rel, "status": "aligned", "unrecorded": True}
            for t in tasks]
    by = lambda s: [r for r in allr if r.get("status") == s]   # noqa: E731
    several = [{"image": r["image"], "faces": r["faces"], "kept": r["kept"][0], "why": r["kept"][1],
                "boxes": r["boxes"], "scores": r["scores"]} for r in allr if r.get("faces", 0) > 1]
    report = {
        "raw": str(raw), "out": str(out), "options": asdict(opts),
        "images": len(tasks),
        "aligned": len(by("aligned")),
        "crops_written": sum(r.get("outputs", 1) for r in allr if r.get("status") in ("aligned", "centre_crop")),
        "faces_found": sum(r.get("faces", 0) for r in allr),
        "crops_without_record": sum(1 for r in allr if r.get("unrecorded")),
        "skipped_already_done": len(already),
        "processed_this_run": len(records),
        "seconds_this_run": round(seconds, 2),
        "none_found": [r["image"] for r in by("no_face")],
        "several_found": several,
        "errors": [{"image": r["image"], "error": r["error"]} for r in by("error")],
        "not_photos": ignored,
    }
    if opts.lfw:
        report["centre_crop_fallback"] = [r["image"] for r in by("centre_crop")]
    return report
