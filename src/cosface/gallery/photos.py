"""Photos to aligned face crops, and photos to embeddings: the one path the gallery CLI and the service share.

`face_crops` is the seam to face detection and alignment (cosface.faces): a photo of the model's
input size is taken as an aligned crop (what `cosface synth` writes, and LFW's aligned sets); any
other is searched for faces with the Embedder's detector and aligned to the model's template.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cosface.errors import CosfaceError
from cosface.faces.detect import NotAnImageError, TooManyPixelsError, decode_photo, read_photo  # re-exported for the service

MAX_PIXELS = 40_000_000   # decoded images larger than this are refused before decoding (decompression bombs)


class NoFaceError(CosfaceError):
    """The photo decoded, but holds no face the gallery can use."""


@dataclass
class Crop:
    image: np.ndarray                      # (S, S, 3) uint8 RGB, aligned to the model's template
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo's pixels
    score: float | None = None              # detector confidence (None: the photo was taken as a crop)
    landmarks: list = field(default_factory=list)


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
