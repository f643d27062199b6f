"""Photos to aligned face crops, and photos to embeddings: the one path the gallery CLI and the service share.

`face_crops` is the seam to face detection and alignment (cosface.faces): a photo of the model's
input size is taken as an aligned crop (what `cosface synth` writes, and LFW's aligned sets); any
other is searched for faces with the Embedder's detector and aligned to the model's template.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError

MAX_PIXELS = 40_000_000   # decoded images larger than this are refused before decoding (decompression bombs)


class NoFaceError(CosfaceError):
    """The photo decoded, but holds no face the gallery can use."""


class NotAnImageError(CosfaceError):
    """The bytes are empty or do not decode as an image."""


class TooManyPixelsError(CosfaceError):
    """The image's header declares more pixels than the limit (refused before decoding)."""


@dataclass
class Crop:
    image: np.ndarray                      # (S, S, 3) uint8 RGB, aligned to the model's template
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo's pixels
    score: float | None = None              # detector confidence (None: the photo was taken as a crop)
    landmarks: list = field(default_factory=list)


def decode_photo(data: bytes, *, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB at full size. The content decides the format, never a file name;
    the pixel count is checked from the header before any pixel is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise NotAnImageError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise TooManyPixelsError(f"{name}: {w}x{h} pixels is more than the limit of {max_pixels:,} pixels")
            img: Image.Image = ImageOps.exif_transpose(im)
            img.load()
            if img.mode != "RGB":
                img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "LA", "PA", "RGBA") else img.convert("RGB")
            return np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name}: not an image in a known format") from None
    except Image.DecompressionBombError as e:   # Pillow's own, stricter check in Image.open
        raise TooManyPixelsError(f"{name}: more pixels than the limit of {max_pixels:,} (Pillow: {e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise NotAnImageError(f"{name}: not a decodable image ({e})") from None


def read_photo(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CosfaceError(f"cannot read image {path}: {e.strerror or e}") from None
    return decode_photo(data, name=str(path), max_pixels=max_pixels)


def face_crops(image: np.ndarray, embedder, *, name: str = "image", keep: str = "largest") -> list[Crop]:
    """(H, W, 3) uint8 photo -> aligned crops of its faces for `embedder`'s model (keep: largest | center | all).

    As the Embedder does: an image of exactly the model's input size is taken as an aligned crop; any
    other is searched with the embedder's detector and each chosen face aligned to the model's template.
    NoFaceError when the detector finds none.
    """
    from cosface.faces import align_face, choose_faces, detect_faces, template_points

    size = embedder.preprocessing.size
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return [Crop(np.ascontiguousarray(image), (0.0, 0.0, float(w), float(h)))]
    template = embedder.info.alignment_template
    if template_points(template, size)[1:] != (size, size):
        raise CosfaceError(f"the model was trained on {template}-template crops, which photos cannot be aligned to "
                           f"for its {size}x{size} input; give aligned {size}x{size} crops")
    faces = detect_faces(image, embedder.detector, embedder.max_side)
    if not faces:
        raise NoFaceError(f"{name}: no face found in the {w}x{h} photo (detector {embedder.detector})")
    crops = []
    for f in choose_faces(faces, keep, w, h):
        x0, y0, x1, y1 = (float(v) for v in f.box)
        crops.append(Crop(align_face(image, f.landmarks, size, template), (x0, y0, x1, y1), float(f.score),
                          [[float(x), float(y)] for x, y in f.landmarks]))
    return crops


def thumbnail_jpeg(crop: np.ndarray, quality: int = 85) -> bytes:
    import simplejpeg

    return simplejpeg.encode_jpeg(np.ascontiguousarray(crop), quality=quality, colorspace="RGB")


def embed_crops(embedder, crops: list[np.ndarray]) -> np.ndarray:
    """Aligned crops -> (N, 2D) flip-concatenated L2-normalised embeddings, the features `verify` compares."""
    if not crops:
        return np.empty((0, 2 * embedder.info.embedding_size), np.float32)
    return embedder.embed(np.stack(crops))


@dataclass
class PhotoFaces:
    """The faces of a batch of photos: one crop each for those that have one, and why the others have none."""

    sources: list[str]
    crops: list[np.ndarray]
    embeddings: np.ndarray
    failures: list[tuple[str, str]]   # (photo, reason)


def photo_faces(embedder, photos, *, max_pixels: int = MAX_PIXELS) -> PhotoFaces:
    """File paths -> the largest face of each, embedded. Photos without a usable face are reported, not fatal;
    unreadable files and non-images are reported the same way."""
    sources, crops, failures = [], [], []
    for p in photos:
        try:
            crop = face_crops(read_photo(p, max_pixels=max_pixels), embedder, name=str(p))[0]
        except CosfaceError as e:
            failures.append((str(p), str(e)))
            continue
        sources.append(str(p))
        crops.append(crop.image)
    return PhotoFaces(sources, crops, embed_crops(embedder, crops), failures)
