"""Face detection: a registry of detectors, each returning boxes, scores and five landmarks per face.

    from cosface.faces import read_photo, detect_faces, aligned_faces
    image = read_photo("group.jpg")                 # (H, W, 3) uint8 RGB, EXIF orientation applied
    faces = detect_faces(image)                     # [Face(box, score, landmarks)], best score first
    [(face, crop)] = aligned_faces(image)           # the largest face, aligned to 112x112

Detectors run on a copy of the photo whose long side is capped (`max_side`, default 640) and every
result is mapped back to the original pixels. Landmarks are in template order: eye on the image's left,
eye on the image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right.
"""
from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cosface.errors import CosfaceError
from cosface.faces.align import align_face
from cosface.preprocess import MAX_PIXELS, image_size, pillow_formats, to_rgb8
from cosface.registry import Registry

DETECTORS: Registry[Callable] = Registry("face detector")
KEEP = ("largest", "center", "all")


@dataclass(frozen=True, eq=False)
class Face:
    box: tuple[float, float, float, float]     # x1, y1, x2, y2 in the photo's pixels
    score: float
    landmarks: np.ndarray                      # (5, 2) float64 (x, y), template order

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


@DETECTORS.register("retinaface")
def _retinaface(**options):
    from cosface.faces.retinaface import RetinaFace

    return RetinaFace(**options)


@DETECTORS.register("mtcnn")
def _mtcnn(**options):
    from cosface.faces.mtcnn import MTCNN

    return MTCNN(**options)


_cache: dict[tuple, Callable] = {}
_cache_lock = threading.Lock()


def get_detector(name: str = "retinaface", **options) -> Callable:
    """A detector instance, built once per process for each (name, options)."""
    key = (name, tuple(sorted(options.items())))
    with _cache_lock:
        det = _cache.get(key)
        if det is None:
            det = _cache[key] = DETECTORS.get(name)(**options)
    return det


class NotAnImageError(CosfaceError):
    """The bytes are empty or do not decode as an image."""


class TooManyPixelsError(CosfaceError):
    """The image's header declares more pixels than the limit (refused before decoding)."""


def decode_photo(data: bytes, *, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded photo bytes -> (H, W, 3) uint8 RGB at full resolution, turned upright as its EXIF
    orientation says. The content decides the format, never a file name; the size is read from the header
    and checked against `max_pixels` before any pixel is decoded (the guard of cosface.preprocess), and
    every mode is brought to 8-bit RGB as training's decoder does."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise NotAnImageError(f"{name}: empty file")
    dims = image_size(data)
    if dims is not None and dims[0] * dims[1] > max_pixels:
        w, h = dims
        raise TooManyPixelsError(f"{name}: {w}x{h} pixels ({w * h} pixels) is more than the limit of {max_pixels:,} "
                                 f"pixels; not decoded")
    try:
        with Image.open(io.BytesIO(data), formats=pillow_formats()) as im:
            orientation = im.getexif().get(0x0112, 1)
            if im.format == "JPEG" and orientation == 1:
                img = _jpeg(data)
                if img is not None:
                    return img
            im.load()
            upright = ImageOps.exif_transpose(im) if orientation != 1 else im
            return to_rgb8(upright)
    except CosfaceError:
        raise
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name}: not an image in a known format") from None
    except Image.DecompressionBombError as e:   # Pillow's own check, for formats whose header we do not read
        raise TooManyPixelsError(f"{name}: more pixels than the limit of {max_pixels:,} (Pillow: {e})") from None
    except Exception as e:   # Pillow raises many types for broken files; all mean "not a usable image"
        raise NotAnImageError(f"{name}: not a decodable image ({type(e).__name__}: {e})") from None


def read_photo(path: str | os.PathLike, data: bytes | None = None, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A photo file (or its bytes, already read) -> `decode_photo` of it, errors naming the file."""
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise CosfaceError(f"cannot read image {path}: {e.strerror or e}") from None
    return decode_photo(data, name=str(path), max_pixels=max_pixels)


def _jpeg(data: bytes) -> np.ndarray | None:
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    except Exception:
        return None          # CMYK and other oddities: Pillow decodes them


def as_rgb(image) -> np.ndarray:
    """(H, W, 3) / (H, W) / (H, W, 1) uint8 array or PIL image -> contiguous (H, W, 3) uint8 RGB.

    A PIL image is converted as the file decoder converts it (`to_rgb8`: 16-bit scaled, transparency on
    black), so a photo gives the same faces whether passed as a file or as an opened image."""
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        try:
            image = to_rgb8(image)
        except ValueError as e:
            raise CosfaceError(str(e)) from None
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise CosfaceError(f"expected a uint8 image array, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise CosfaceError(f"expected an (H, W, 3) RGB or (H, W) gray image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def fit_long_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """(image with its long side at most max_side, x factor, y factor); factors are new / old sizes."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0, 1.0
    s = max_side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    from PIL import Image

    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.uint8)
    return small, nw / w, nh / h


def detect_faces(image, detector: str = "retinaface", max_side: int = 640, *, min_face: float = 0.0,
                 score_threshold: float | None = None, threads: int | None = None) -> list[Face]:
    """Every face in an RGB photo, best score first, in the photo's own pixel coordinates.

    `max_side`: the detector sees the photo shrunk so its long side is at most this (never enlarged);
    `min_face`: faces whose box is narrower or shorter than this many (original) pixels are left out;
    `score_threshold`: None keeps the detector's default; `threads`: ONNX Runtime threads (None: its default).
    """
    if max_side < 32:
        raise CosfaceError(f"max_side must be at least 32 pixels, got {max_side}")
    options: dict[str, float | int | None] = {"threads": threads}
    if score_threshold is not None:
        options["score_threshold"] = float(score_threshold)
    det = get_detector(detector, **options)
    image = as_rgb(image)
    small, fx, fy = fit_long_side(image, max_side)
    boxes, scores, points = det(small)
    # Pixel centres: x_small + 0.5 = (x + 0.5) * fx, so x = (x_small + 0.5) / fx - 0.5 (exact for fx = 1).
    if fx != 1.0 or fy != 1.0:
        f = np.array([fx, fy])
        boxes = (boxes.reshape(-1, 2, 2) + 0.5) / f - 0.5
        boxes = boxes.reshape(-1, 4)
        points = (points + 0.5) / f - 0.5
    faces = [Face((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s), p)
             for b, s, p in zip(boxes, scores, points)]
    if min_face > 0:
        faces = [f for f in faces if min(f.width, f.height) >= min_face]
    return faces


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box (ties: the higher score, as `faces` is ordered), or None."""
    return max(faces, key=lambda f: f.area, default=None)


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The face whose box centre is nearest the photo's centre (the LFW convention), or None."""
    cx, cy = (width - 1) / 2, (height - 1) / 2

    def dist(f: Face) -> float:
        return ((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2

    return min(faces, key=dist, default=None)


def choose_faces(faces: list[Face], keep: str, width: int, height: int) -> list[Face]:
    """The faces to use: "largest" or "center" one, or "all" (best score first)."""
    if keep not in KEEP:
        raise CosfaceError(f"keep must be one of {', '.join(KEEP)}, got {keep!r}")
    if keep == "all" or not faces:
        return list(faces)
    one = largest_face(faces) if keep == "largest" else central_face(faces, width, height)
    return [one] if one is not None else []


def aligned_faces(image, keep: str = "largest", size: int = 112, *, template: str = "arcface",
                  detector: str = "retinaface", max_side: int = 640, min_face: float = 0.0,
                  score_threshold: float | None = None, threads: int | None = None) -> list[tuple[Face, np.ndarray]]:
    """Detect, choose (`keep`: largest | center | all) and align: [(Face, (size, size, 3) uint8 crop)]."""
    image = as_rgb(image)
    faces = detect_faces(image, detector, max_side, min_face=min_face, score_threshold=score_threshold,
                         threads=threads)
    chosen = choose_faces(faces, keep, image.shape[1], image.shape[0])
    return [(f, align_face(image, f.landmarks, size, template)) for f in chosen]
