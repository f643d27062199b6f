"""The user-facing runtime: the Embedder API, embedding files to .npy, and LFW through ONNX Runtime.

Embeddings are the reference's pair features: [f(image), f(mirror)] concatenated, then L2-normalised
(2 x D values; `flip=False` gives f(image) alone). The cosine of two such rows is the score the
evaluation's all-pairs metrics use, so a threshold from an evaluation carries over (see
`Embedder.default_threshold` for what it means exactly). Images are prepared as the model's metadata
says, with the training decoder.
"""
from __future__ import annotations

import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cosface.errors import CosfaceError
from cosface.evaluation.metrics import check_cosine_threshold
from cosface.fsio import atomic_write, write_text
from cosface.inference.models import check_output_width, open_model, require_kind
from cosface.preprocess import Preprocessing, decode_image, image_size, normalize_numpy, resize, to_rgb8

if TYPE_CHECKING:
    from cosface.faces import Face

# Used by verify when the model carries no evaluation. Margin-trained face embeddings put different
# people near cosine 0 and the same person well above 0.5; 0.3 sits between (insightface's LFW
# thresholds, squared distance about 1.4 on unit vectors, are cosine 0.3). Calibrate with an evaluation.
FALLBACK_THRESHOLD = 0.3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(inputs) -> list[Path]:
    """Files as given, and every image file under each directory (recursive, sorted)."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise CosfaceError(f"directory {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif p.exists():
            found.append(p)
        else:
            raise CosfaceError(f"{p} does not exist")
    return found


def _is_single(images) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim <= 3
    return isinstance(images, (str, os.PathLike)) or _is_pil(images)


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


@dataclass(frozen=True)
class Verification:
    similarity: float        # cosine of the two L2-normalised flip-concatenated features
    threshold: float
    threshold_source: str
    alignments: tuple[str, ...] = ()   # how each image became the model's input (see Prepared.how)

    @property
    def same(self) -> bool:
        return self.similarity > self.threshold   # strict, as the protocol counts a same pair correct


@dataclass(frozen=True, eq=False)
class Prepared:
    """One image made ready for the model: the (S, S, 3) uint8 input and how it was obtained."""

    image: np.ndarray
    how: str                     # e.g. "112x112, taken as already aligned" or "face 0.999 ... aligned to ..."
    face: Face | None = None     # the face that was aligned, when one was
    resized_from: str | None = None   # "WxH" when the image was resized without detection (detect=False)


class Embedder:
    """Embeds images with a cosface checkpoint, TorchScript export or ONNX export.

    Images are file paths, (H, W, 3) uint8 RGB arrays (or (H, W) grayscale) or PIL images; a list of
    them, or an (N, H, W, 3) array, is a batch. An image of the model's input size (112x112) is taken as
    an already aligned face. Any other photo is searched for faces (`detector`, on a copy whose long side
    is at most `max_side`) and the largest one is aligned to the template the model was trained with; a
    photo without a face is an error naming it. With `detect=False` other sizes are resized instead
    (bilinear, as training's decoder does) and a note says so on stderr unless `quiet`.
    `device`: "auto" (CUDA when available), "cpu" or "cuda".
    """

    def __init__(self, model: str | os.PathLike, *, device: str = "auto", batch_size: int = 64, quiet: bool = False,
                 detect: bool = True, detector: str = "retinaface", max_side: int = 640,
                 preprocessing: Preprocessing | None = None):
        if batch_size < 1:
            raise CosfaceError(f"batch size must be >= 1, got {batch_size}")
        self.path = Path(model)
        # `preprocessing`: only for an ONNX model without cosface metadata (see open_model).
        self.kind, self._run, self.info = open_model(self.path, device, preprocessing)
        self.batch_size = batch_size
        self.quiet = quiet
        self.detect = detect
        self.detector = detector
        self.max_side = max_side

    @property
    def preprocessing(self) -> Preprocessing:
        return self.info.preprocessing

    def features(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, D) float32 raw model outputs, prepared as the metadata says.

        This is an `embed_fn` for cosface.evaluation: it resizes when the batch is not the model's size.
        """
        prep = self.info.preprocessing
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
            raise CosfaceError(f"expected an (N, H, W, 3) uint8 batch, got {batch.dtype} {batch.shape}")
        if batch.shape[1:3] != (prep.size, prep.size):
            batch = np.stack([resize(im, prep.size) for im in batch])
        if prep.channel_order == "BGR":
            batch = batch[..., ::-1]
        return self._checked(self._run(normalize_numpy(batch, prep)), len(batch))

    def _checked(self, out, n: int) -> np.ndarray:
        """The model's (n, D) float32 output, or an error naming the file when it has another shape."""
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or len(out) != n:
            raise CosfaceError(f"{self.path}: the model returns shape {out.shape} for {n} images; "
                               f"expected (N, {self.info.embedding_size})")
        check_output_width(self.path, out.shape[1], self.info.embedding_size)
        return out

    def _prepared_batches(self, items: list):
        """Each batch's Prepared inputs, in order. Several images are read, decoded (and, for photos,
        searched for faces) on worker threads, the next batch while the model runs on this one; errors
        surface in input order, as one at a time would raise them, and the first one ends the call
        without waiting for the images queued after it."""
        n, size = len(items), self.batch_size
        starts = range(0, n, size)
        side = self.info.preprocessing.size
        # Arrays already at the model's size (cosface serve's crops) need no reading, decoding or detection.
        if n <= 1 or all(isinstance(x, np.ndarray) and x.shape[:2] == (side, side) for x in items):
            for s in starts:
                yield [self.prepare(items[i], i) for i in range(s, min(s + size, n))]
            return
        # Pillow reads a lazily opened image's file on its first use, unsafely from two threads at once:
        # the same PIL image given twice is loaded under its own lock.
        loading: dict[int, threading.Lock] = {}

        def prepare(item, i: int) -> Prepared:
            lock = loading.get(id(item))
            if lock is not None:
                with lock:
                    item.load()
            return self.prepare(item, i)

        with ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="cosface-embed") as pool:
            def submit(s: int) -> list:
                for i in range(s, min(s + size, n)):
                    if _is_pil(items[i]):
                        loading.setdefault(id(items[i]), threading.Lock())
                return [pool.submit(prepare, items[i], i) for i in range(s, min(s + size, n))]

            pending = submit(0)
            for s in starts:
                following = submit(s + size) if s + size < n else []
                try:
                    yield [f.result() for f in pending]
                except BaseException:
                    for f in pending + following:      # the rest of this batch and the next: not started
                        f.cancel()
                    raise
                pending = following

    def embed(self, images, *, flip: bool = True) -> np.ndarray:
        """-> (N, 2D) float32 L2-normalised [f(image), f(mirror)] rows; (N, D) f(image) with flip=False."""
        items = [images] if _is_single(images) else list(images)
        resized: list[str] = []
        out = []
        from_uint8 = getattr(self._run, "from_uint8", None)   # torch models: normalise and mirror where they run
        for prepared in self._prepared_batches(items):
            resized += [p.resized_from for p in prepared if p.resized_from]
            batch = np.stack([p.image for p in prepared])                  # (B, S, S, 3) uint8 at the model's size
            b = len(batch)
            if from_uint8 is not None:
                f = self._checked(from_uint8(batch, self.info.preprocessing, flip), 2 * b if flip else b)
            else:
                f = self.features(np.concatenate([batch, batch[:, :, ::-1]]) if flip else batch)   # mirror = flip along W
            if flip:
                f = np.concatenate([f[:b], f[b:]], axis=1)                # (B, 2D)
            out.append(f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12))
        if resized and not self.quiet:
            size = self.info.preprocessing.size
            shown = ", ".join(resized[:3]) + (f" and {len(resized) - 3} more" if len(resized) > 3 else "")
            print(f"note: {len(resized)} of {len(items)} image(s) are not {size}x{size} and were resized "
                  f"to it (bilinear): {shown}", file=sys.stderr)
        dim = self.info.embedding_size * (2 if flip else 1)
        return np.concatenate(out) if out else np.empty((0, dim), np.float32)

    def similarity(self, a, b) -> float | np.ndarray:
        """Pairwise: the cosine of a[i] and b[i]. A float for two images; (N,) for two batches of N.
        For every image of one set against every image of another, use `similarity_matrix`."""
        ea, eb = self.embed(a), self.embed(b)
        if len(ea) != len(eb):
            raise CosfaceError(f"similarity needs as many images on each side, got {len(ea)} and {len(eb)}")
        s = np.einsum("ij,ij->i", ea, eb)
        return float(s[0]) if _is_single(a) and _is_single(b) else s

    def similarity_matrix(self, a, b) -> np.ndarray:
        """(len(a), len(b)) float32 cosines of every image of `a` against every image of `b` (1:N search,
        clustering). `a` and `b` are batches (or single images) as `embed` takes them."""
        return self.embed(a) @ self.embed(b).T

    def threshold_at_far(self, far: float) -> float:
        """The threshold stored for target FAR `far` by the model's evaluation (a checkpoint evaluated during
        training, or its export): at most that fraction of the evaluation's different-person pairs scored
        above it. Raises CosfaceError when the model has none for `far` (not evaluated, another FAR, or too
        few different pairs to measure it)."""
        ev = self.info.evaluation or {}
        stored = ev.get("far_thresholds") or {}
        key = f"{far:g}"
        if key not in stored:
            have = ", ".join(stored) or "none"
            raise CosfaceError(f"{self.path} holds no threshold for FAR {key} (it has: {have}); evaluate your "
                               f"own pairs and use cosface.evaluation.threshold_at_far")
        value = stored[key]
        # null (written for a FAR its pairs could not measure) and NaN (a checkpoint of a degenerate
        # evaluation) alike: no threshold, never one that calls every pair "different".
        if value is None:
            raise CosfaceError(f"{self.path}: FAR {key} could not be measured on its evaluation's pairs "
                               f"(too few different-person pairs); pick a larger FAR")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CosfaceError(f"{self.path}: FAR {key} could not be measured on its evaluation's pairs (its stored "
                               f"threshold is {value!r}, not a number); pick another FAR or give a threshold")
        return float(value)

    def default_threshold(self) -> tuple[float, str]:
        """(threshold, where it came from).

        A checkpoint evaluated during training carries the best threshold for exactly this similarity
        (plain flip-concatenated cosine) over all pairs of its LFW evaluation. Older evaluations only
        have the reference protocol's fold thresholds, chosen on features with the validation folds'
        mean subtracted, which a single pair does not have: their mean is then an approximation
        (exact only when the mean feature is near zero).
        """
        ev = self.info.evaluation
        where = "the checkpoint" if self.kind == "checkpoint" else "the model metadata"
        if self.info.threshold is not None and ev and ev.get("verify_threshold") is not None:
            data = f" on {ev['dataset']}" if ev.get("dataset") else ""
            acc = f" (reference-protocol mean accuracy {100 * ev['mean']:.2f} %)" if ev.get("mean") is not None else ""
            return self.info.threshold, (f"{where}: best threshold for this similarity over all pairs of its "
                                         f"LFW evaluation{data}{acc}")
        if self.info.threshold is not None:
            folds = len(ev["thresholds"]) if ev and ev.get("thresholds") else "the"
            acc = f", mean accuracy {100 * ev['mean']:.2f} %" if ev and ev.get("mean") is not None else ""   # null: NaN
            data = f" on {ev['dataset']}" if ev and ev.get("dataset") else ""
            return self.info.threshold, (f"{where}: mean of {folds} fold thresholds of its LFW evaluation "
                                         f"(reference protocol{acc}{data})")
        return FALLBACK_THRESHOLD, (f"fallback {FALLBACK_THRESHOLD}: {where} holds no evaluation; "
                                    f"calibrate with `cosface eval` or pass --threshold")

    def verify(self, a, b, threshold: float | None = None) -> Verification:
        """Compare two images; `threshold` None takes `default_threshold()`."""
        if threshold is not None:
            check_cosine_threshold(threshold)
        value, source = (threshold, "given") if threshold is not None else self.default_threshold()
        pa, pb = self.prepare(a, 0), self.prepare(b, 1)
        return Verification(float(self.similarity(pa.image, pb.image)), value, source, (pa.how, pb.how))

    def prepare(self, item, index: int = 0) -> Prepared:
        """One image -> the model's input and how it was made (aligned input, detected face, or resized)."""
        return self._faces(item, index, keep="largest")[0]

    def prepare_all(self, item, index: int = 0) -> list[Prepared]:
        """Like `prepare`, but one entry per face found in a photo (best score first)."""
        return self._faces(item, index, keep="all")

    def _faces(self, item, index: int, keep: str) -> list[Prepared]:
        size = self.info.preprocessing.size
        name = str(item) if isinstance(item, (str, os.PathLike)) else f"image #{index}"
        if isinstance(item, (str, os.PathLike)):
            try:
                data = Path(item).read_bytes()
            except OSError as e:
                raise CosfaceError(f"cannot read image {item}: {e.strerror or e}") from None
            native = image_size(data)
            if self.detect and native != (size, size):
                from cosface.faces import read_photo

                return self._align(read_photo(item, data), name, keep)
            try:
                img = decode_image(data, size)
            except ValueError as e:
                raise CosfaceError(f"{item}: {e}") from None
        else:
            item = self._array(item, index)
            if self.detect and item.shape[:2] != (size, size):
                return self._align(item, name, keep)
            native = (item.shape[1], item.shape[0])
            img = resize(np.ascontiguousarray(item), size) if native != (size, size) else np.ascontiguousarray(item)
        if native is not None and native != (size, size):
            was = f"{name} ({native[0]}x{native[1]})"
            return [Prepared(img, f"{was} resized to {size}x{size} (no face detection)", resized_from=was)]
        return [Prepared(img, f"{name}: {size}x{size}, taken as already aligned")]

    def _align(self, photo: np.ndarray, name: str, keep: str) -> list[Prepared]:
        from cosface.faces import align_face, choose_faces, detect_faces, template_points

        size = self.info.preprocessing.size
        template = self.info.alignment_template
        _, w, h = template_points(template, size)
        if (w, h) != (size, size):
            raise CosfaceError(f"the model was trained on {template}-template crops ({w}x{h}), which photos cannot be "
                               f"aligned to for its {size}x{size} input; align them yourself and pass --no-detect")
        faces = detect_faces(photo, self.detector, self.max_side)
        if not faces:
            raise CosfaceError(f"{name}: no face found in the {photo.shape[1]}x{photo.shape[0]} photo "
                               f"(detector {self.detector}); pass an aligned {size}x{size} crop, or --no-detect to "
                               f"resize the whole picture")
        chosen = choose_faces(faces, keep, photo.shape[1], photo.shape[0])
        which = "largest of " + str(len(faces)) + " faces" if len(faces) > 1 and keep != "all" else "face"
        out = []
        for f in chosen:
            box = ", ".join(f"{v:.0f}" for v in f.box)
            how = (f"{name}: {which} (score {f.score:.3f}, box {box}) in the {photo.shape[1]}x{photo.shape[0]} "
                   f"photo, aligned to the {template} {size}x{size} template (five-point similarity)")
            out.append(Prepared(align_face(photo, f.landmarks, size, template), how, face=f))
        return out

    def _array(self, item, index: int) -> np.ndarray:
        if _is_pil(item):
            item = to_rgb8(item)   # as the file decoder: 16-bit scaled, transparency on black
        if not isinstance(item, np.ndarray):
            raise CosfaceError(f"image #{index}: expected a file path, a (H, W, 3) uint8 RGB array or a PIL image, "
                               f"got {type(item).__name__}")
        if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] == 3)):
            raise CosfaceError(f"image #{index}: arrays must be (H, W, 3) RGB or (H, W) gray uint8, "
                               f"got {item.dtype} {item.shape}")
        if item.ndim == 2:
            item = np.repeat(item[:, :, None], 3, axis=2)
        return item


def embed_to_file(model: str | os.PathLike, inputs, out: str | os.PathLike, *, flip: bool = True,
                  batch_size: int = 64, device: str = "auto", detect: bool = True, all_faces: bool = False,
                  detector: str = "retinaface") -> tuple[Path, Path, tuple[int, int]]:
    """Embed files and directories into OUT.npy, and list the files, one per line in row order, in OUT.txt.

    `all_faces`: one row per face found in each photo; OUT.txt then has three tab-separated columns per
    row: the file, the face's box "x1 y1 x2 y2" in the photo's pixels, and the detector's score (an
    already aligned input has the box "-" and score "-").
    """
    files = list_images(inputs)
    emb = Embedder(model, device=device, batch_size=batch_size, detect=detect, detector=detector)
    if all_faces:
        if not detect:
            raise CosfaceError("--all-faces needs face detection; it cannot be combined with --no-detect")
        rows, lines = [], []
        for i, f in enumerate(files):
            for p in emb.prepare_all(str(f), i):
                rows.append(p.image)
                box = " ".join(f"{v:.1f}" for v in p.face.box) if p.face is not None else "-"
                score = f"{p.face.score:.4f}" if p.face is not None else "-"
                lines.append(f"{f}\t{box}\t{score}\n")
        vectors = emb.embed(np.stack(rows), flip=flip) if rows else emb.embed([], flip=flip)
    else:
        vectors = emb.embed([str(f) for f in files], flip=flip)
        lines = [f"{f}\n" for f in files]
    npy = Path(out)
    if npy.suffix != ".npy":
        npy = npy.with_name(npy.name + ".npy")
    listing = npy.with_suffix(".txt")
    atomic_write(npy, lambda f: np.save(f, vectors), "embeddings file")
    write_text(listing, "".join(lines), "file list")
    return npy, listing, vectors.shape


def infer_lfw(model: str | os.PathLike, lfw_dir: str | os.PathLike, *, batch_size: int = 64, progress: bool = True,
              features_out: str | os.PathLike | None = None, workers: int | None = None, device: str = "auto",
              preprocessing: Preprocessing | None = None):
    """The deployment path: an ONNX export under ONNX Runtime through the same LFW protocol as `cosface eval`."""
    from cosface.evaluation import evaluate_lfw

    require_kind(model, "onnx", "`cosface infer` runs ONNX exports (make one with `cosface export --ckpt CKPT "
                                "-o model.onnx`; a checkpoint is evaluated with `cosface eval`)")
    emb = Embedder(model, device=device, batch_size=batch_size, preprocessing=preprocessing)
    return evaluate_lfw(emb.features, lfw_dir, batch_size=batch_size, progress=progress, features_out=features_out,
                        workers=workers, size=emb.preprocessing.size)
