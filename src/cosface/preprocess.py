"""THE one definition of model input: size, channel order, normalisation, layout.

Training, evaluation, export metadata and ONNX inference all read these values from here (or from
the copy a checkpoint / exported model carries), so they cannot drift apart.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np

from cosface.errors import CosfaceError


@dataclass(frozen=True)
class Preprocessing:
    size: int = 112              # square input, pixels
    channel_order: str = "RGB"
    mean: float = 128.0          # on 0..255 values, every channel
    std: float = 128.0
    layout: str = "NCHW"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        missing = set(cls.__dataclass_fields__) - set(known)
        if missing:
            raise CosfaceError(f"preprocessing metadata lacks {sorted(missing)}")
        return cls(**known)


DEFAULT = Preprocessing()
# insightface's models (arcface_torch backbones and their ONNX exports): RGB, (x − 127.5) / 127.5.
INSIGHTFACE = Preprocessing(size=112, channel_order="RGB", mean=127.5, std=127.5)

_JPEG_MAGIC = b"\xff\xd8"


def decode_image(data: bytes, size: int = DEFAULT.size, out: np.ndarray | None = None) -> np.ndarray:
    """Encoded image bytes -> (size, size, 3) uint8 RGB.

    JPEGs go through libjpeg-turbo (simplejpeg); anything else, or a JPEG it rejects (CMYK,
    progressive oddities), through Pillow. Grayscale, palette and alpha images become RGB.
    With `out` (a writable (size, size, 3) uint8 array), an aligned JPEG is decoded straight into
    it, saving a copy per image in the training loader. Raises ValueError for undecodable bytes.
    """
    if not data:
        raise ValueError("empty file")
    img = None
    if data[:2] == _JPEG_MAGIC:
        import simplejpeg

        try:
            if out is not None and simplejpeg.decode_jpeg_header(data)[:2] == (size, size):
                return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
            img = simplejpeg.decode_jpeg(data, colorspace="RGB")
        except Exception:
            img = None
    if img is None:
        img = _decode_pillow(data)
    if img.shape[0] != size or img.shape[1] != size:
        img = resize(img, size)
    if out is not None:
        out[...] = img
        return out
    return np.ascontiguousarray(img)


def _decode_pillow(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "LA", "PA") else im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image in a known format") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"not a decodable image ({e})") from None


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 image to (size, size, 3)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def normalize(batch, prep: Preprocessing = DEFAULT):
    """(N, H, W, 3) uint8 images (torch tensor) -> (N, 3, H, W) float32 in the model's range.

    The result is a channels_last view of NHWC memory, which is what MobileFaceNet runs fastest on.
    Works on whatever device the tensor is on, so normalisation happens on the GPU when training there.
    """
    x = batch.permute(0, 3, 1, 2).float()
    return (x - prep.mean) / prep.std


def normalize_numpy(batch: np.ndarray, prep: Preprocessing = DEFAULT) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, for runtimes without torch (ONNX Runtime)."""
    x = batch.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - prep.mean) / prep.std)
