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
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Largest image decoded (width x height); the default of data.max_pixels. Generous for faces, but a
# decompression bomb, or a JPEG whose header claims 20000 x 20000, is refused before any pixel is decoded.
MAX_PIXELS = 64_000_000
# Icon containers decode more than their header declares: ICO decodes its largest embedded PNG or BMP while
# *opening* (whatever size it really is), ICNS an embedded PNG of any size on load. Neither can be checked
# against the pixel limit before decoding, so Pillow never opens them here. Nor EPS: Pillow renders it by
# running Ghostscript (where installed) on the file's PostScript, a program from whoever sent the file.
_UNBOUNDED_FORMATS = frozenset({"ICO", "ICNS", "EPS"})


def pillow_formats() -> list[str]:
    """The formats Pillow may open for cosface: every one it reads but the icon containers and EPS above."""
    from PIL import Image

    Image.init()
    return [f for f in Image.OPEN if f not in _UNBOUNDED_FORMATS]


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header alone (JPEG, PNG, then any format Pillow knows); None when
    no header can be read (decoding then says why)."""
    try:
        if data[:2] == _JPEG_MAGIC:
            import simplejpeg

            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            return w, h
        if data[:8] == _PNG_MAGIC and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    except Exception:
        pass  # simplejpeg rejects some JPEG variants; Pillow may still read them
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data), formats=pillow_formats()) as im:  # lazy: reads the header only
            return im.size
    except Exception:
        return None


def decode_image(data: bytes, size: int = DEFAULT.size, out: np.ndarray | None = None,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> (size, size, 3) uint8 RGB: THE decoder of every command.

    The header is read first: an image above `max_pixels` is refused like a corrupt file. JPEGs go
    through libjpeg-turbo (simplejpeg); anything else, or a JPEG it rejects (CMYK, progressive
    oddities), through Pillow, with every mode brought to 8-bit RGB (see `to_rgb8`).
    With `out` (a writable (size, size, 3) uint8 array), an aligned JPEG is decoded straight into
    it, saving a copy per image in the training loader. Raises ValueError for undecodable bytes.
    """
    dims = _checked_size(data, max_pixels)
    if out is not None and dims == (size, size) and data[:2] == _JPEG_MAGIC:
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
        except Exception:
            pass          # decode_full tries again through Pillow
    img = decode_full(data, max_pixels, checked=True)
    if img.shape[0] != size or img.shape[1] != size:
        img = resize(img, size)
    if out is not None:
        out[...] = img
        return out
    return np.ascontiguousarray(img)


def _checked_size(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """The guard of every decoder: (width, height) from the header, refused above `max_pixels`."""
    if not data:
        raise ValueError("empty file")
    dims = image_size(data)
    if dims is not None and dims[0] * dims[1] > max_pixels:
        raise ValueError(f"{dims[0]}x{dims[1]} image ({dims[0] * dims[1] / 1e6:.1f} megapixels) is above the limit of "
                         f"{max_pixels / 1e6:g} megapixels (data.max_pixels); not decoded")
    return dims


def decode_full(data: bytes, max_pixels: int = MAX_PIXELS, checked: bool = False) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB at the image's own size, with decode_image's size
    guard and mode conversions (for photos and loose crops that are aligned afterwards)."""
    if not checked:
        _checked_size(data, max_pixels)
    if data[:2] == _JPEG_MAGIC:
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except Exception:
            pass          # CMYK and other JPEGs libjpeg-turbo rejects: Pillow
    return _decode_pillow(data, max_pixels)


def _decode_pillow(data: bytes, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=pillow_formats()) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ValueError(f"{w}x{h} image is above the limit of {max_pixels / 1e6:g} megapixels (data.max_pixels)")
            im.load()
            return to_rgb8(im)
    except UnidentifiedImageError:
        raise ValueError("not an image in a known format") from None
    except ValueError:
        raise
    except Exception as e:  # a malformed file can make a decoder raise almost anything; it is still one bad file
        raise ValueError(f"not a decodable image ({type(e).__name__}: {e})") from None


def to_rgb8(im) -> np.ndarray:
    """A loaded PIL image of any mode -> (H, W, 3) uint8 RGB.

    16-bit samples keep their high byte (65535 -> 255; Pillow itself does this for 16-bit RGB);
    32-bit integer gray ("I") is read as 16-bit; float gray ("F") as 0..255. Transparent pixels
    (RGBA, LA, PA, palette with transparency) are composited on black: rgb x alpha / 255. CMYK
    ((255 - C)(255 - K) / 255), YCbCr, bilevel and plain palettes use Pillow's conversions; LAB and
    HSV are refused (ValueError) rather than given wrong colours.
    """
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        gray = (np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        rgb = (rgba[:, :, :3] * rgba[:, :, 3:] + 127) // 255      # on black, rounded
        return rgb.astype(np.uint8)
    if mode in ("LAB", "HSV"):
        # Pillow converts these without their colour science (LAB would come out as wrong colours).
        raise ValueError(f"{mode} images are not supported; save it as RGB")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


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


def model_input(images, prep: Preprocessing = DEFAULT, mirror: bool = False):
    """(N, S, S, 3) uint8 RGB (torch tensor, any device) -> the model's (N, 3, S, S) float32 input, in
    the model's channel order; with `mirror`, (2N, ...): the images, then their mirrors (flipped along
    the width), the pair the LFW protocol embeds. The same arithmetic as normalize_numpy."""
    import torch

    if prep.channel_order == "BGR":
        images = images.flip(-1)
    if mirror:
        images = torch.cat([images, images.flip(2)])
    return normalize(images, prep)


def normalize_numpy(batch: np.ndarray, prep: Preprocessing = DEFAULT) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, for runtimes without torch (ONNX Runtime)."""
    x = batch.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - prep.mean) / prep.std)
