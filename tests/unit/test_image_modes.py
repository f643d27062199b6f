"""The one image decoder: every Pillow mode against a hand-made 8-bit RGB reference, and the pixel
limit read from the header before any pixel is decoded."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cosface.data.dataset import BatchDataset
from cosface.preprocess import decode_image, image_size

S = 16  # decode at the native size: no resize between the file and the comparison


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_raw(width, height, color_type, depth, rows: np.ndarray) -> bytes:
    """A PNG written byte by byte (Pillow cannot write 16-bit RGB or 16-bit gray+alpha)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def img(mode: str, arr: np.ndarray) -> Image.Image:
    return Image.frombytes(mode, (S, S), np.ascontiguousarray(arr).tobytes())


def gray3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2).astype(np.uint8)


rng = np.random.default_rng(0)
G16 = rng.integers(0, 65536, (S, S)).astype(np.uint16)
RGB16 = rng.integers(0, 65536, (S, S, 3)).astype(np.uint16)
RGBA8 = rng.integers(0, 256, (S, S, 4)).astype(np.uint8)
LA8 = rng.integers(0, 256, (S, S, 2)).astype(np.uint8)
CMYK8 = rng.integers(0, 256, (S, S, 4)).astype(np.uint8)
L8 = rng.integers(0, 256, (S, S)).astype(np.uint8)
IDX = rng.integers(0, 4, (S, S)).astype(np.uint8)
PALETTE = np.array([[200, 30, 40], [10, 250, 90], [60, 70, 220], [255, 255, 0]], dtype=np.uint16)
PALETTE_ALPHA = np.array([255, 0, 128, 64], dtype=np.uint16)


def on_black(rgb, alpha):
    return ((rgb.astype(np.uint16) * alpha.astype(np.uint16)[..., None] + 127) // 255).astype(np.uint8)


def palette_image(with_alpha: bool) -> bytes:
    im = img("P", IDX)
    im.putpalette(PALETTE.astype(np.uint8).flatten().tolist())
    if with_alpha:
        return encode(im, "PNG", transparency=bytes(PALETTE_ALPHA.astype(np.uint8)))
    return encode(im, "PNG")


# (id, encoded bytes, hand-made expected (S, S, 3) uint8)
CASES = [
    ("L", encode(img("L", L8), "PNG"), gray3(L8)),
    ("1", encode(img("L", (L8 > 127).astype(np.uint8) * 255).convert("1"), "PNG"), gray3(np.where(L8 > 127, 255, 0))),
    ("I;16 gray PNG", encode(img("I;16", G16), "PNG"), gray3(G16 >> 8)),
    ("I;16 gray 16-bit PNG by hand", png_raw(S, S, 0, 16, G16.astype(">u2")), gray3(G16 >> 8)),
    ("I;16B TIFF", encode(img("I;16B", G16.astype(">u2")), "TIFF"),
     gray3(G16 >> 8)),
    ("I 32-bit TIFF (16-bit values)", encode(img("I", G16.astype(np.int32)), "TIFF"), gray3(G16 >> 8)),
    ("F float TIFF", encode(img("F", L8.astype(np.float32)), "TIFF"), gray3(L8)),
    ("RGB 16-bit PNG", png_raw(S, S, 2, 16, RGB16.astype(">u2")), (RGB16 >> 8).astype(np.uint8)),
    ("RGBA 16-bit PNG", png_raw(S, S, 6, 16, np.concatenate([RGB16, G16[..., None]], 2).astype(">u2")),
     on_black((RGB16 >> 8).astype(np.uint8), (G16 >> 8).astype(np.uint8))),
    ("RGBA on black", encode(img("RGBA", RGBA8), "PNG"), on_black(RGBA8[..., :3], RGBA8[..., 3])),
    ("LA on black", encode(img("LA", LA8), "PNG"), on_black(gray3(LA8[..., 0]), LA8[..., 1])),
    ("P palette", palette_image(False), PALETTE[IDX].astype(np.uint8)),
    ("P palette with transparency", palette_image(True), on_black(PALETTE[IDX].astype(np.uint8), PALETTE_ALPHA[IDX])),
    ("CMYK TIFF", encode(img("CMYK", CMYK8), "TIFF"),
     np.rint((255 - CMYK8[..., :3].astype(float)) * (255 - CMYK8[..., 3:].astype(float)) / 255).astype(np.uint8)),
]


@pytest.mark.parametrize("data,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_mode_becomes_the_hand_made_8bit_rgb(data, expected):
    got = decode_image(data, S)
    assert got.shape == (S, S, 3) and got.dtype == np.uint8
    # Pillow's CMYK conversion rounds its product its own way: allow 1 level there, nowhere else.
    tol = 1 if Image.open(io.BytesIO(data)).mode == "CMYK" else 0
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= tol


def test_16bit_gray_is_not_white():
    """The reported bug: 16-bit grayscale used to clip to 255 everywhere."""
    dark = np.full((S, S), 1000, dtype=np.uint16)
    assert decode_image(encode(img("I;16", dark), "PNG"), S).max() == 1000 >> 8


def test_cmyk_jpeg_goes_through_pillow():
    cmyk = Image.new("CMYK", (S, S), (10, 20, 30, 40))
    got = decode_image(encode(cmyk, "JPEG", quality=100), S)
    ref = np.array([(255 - c) * (255 - 40) / 255 for c in (10, 20, 30)])
    assert np.abs(got[0, 0] - ref).max() <= 2    # JPEG is lossy


def test_lab_is_refused_not_miscoloured():
    with pytest.raises(ValueError, match="LAB images are not supported"):
        decode_image(encode(Image.new("LAB", (S, S), (50, 0, 0)), "TIFF"), S)


def jpeg_claiming(width, height):
    import simplejpeg

    data = bytearray(simplejpeg.encode_jpeg(np.zeros((16, 16, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_pixel_limit_is_read_from_the_header():
    big_jpeg = jpeg_claiming(20000, 20000)
    assert image_size(big_jpeg) == (20000, 20000)
    with pytest.raises(ValueError, match=r"20000x20000 image \(400.0 megapixels\) is above the limit of 64"):
        decode_image(big_jpeg)
    bomb = png_raw(1, 1, 0, 8, np.zeros((1, 1), np.uint8))
    bomb = bomb[:16] + struct.pack(">II", 100_000, 100_000) + bomb[24:]      # IHDR claims 10^10 pixels
    assert image_size(bomb) == (100_000, 100_000)
    with pytest.raises(ValueError, match="above the limit"):
        decode_image(bomb)
    small = encode(img("L", L8), "PNG")
    with pytest.raises(ValueError, match="above the limit of 0.0002 megapixels"):
        decode_image(small, S, max_pixels=200)
    assert decode_image(small, S, max_pixels=256).shape == (S, S, 3)


def test_training_skips_an_oversized_image_and_reports_it(tmp_path):
    from cosface.data.sources import ImageFolderSource

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0_big.jpg").write_bytes(jpeg_claiming(20000, 20000))
    (tmp_path / "a" / "1_ok.png").write_bytes(encode(img("L", L8), "PNG"))
    ds = BatchDataset(ImageFolderSource(tmp_path), S, max_pixels=1_000_000)
    batch = ds[(np.array([0]), np.array([False]))]
    assert np.array_equal(batch["images"][0].numpy(), gray3(L8))       # replaced by the next readable image
    assert len(batch["bad"]) == 1 and "0_big.jpg" in batch["bad"][0] and "above the limit" in batch["bad"][0]


def icon_files(inner: bytes) -> dict[str, bytes]:
    """An ICO and an ICNS whose headers declare 256x256 and 512x512 but which hold `inner` (a PNG of any size)."""
    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(inner), 22) + inner
    block = b"ic09" + struct.pack(">I", 8 + len(inner)) + inner
    return {"ICO": ico, "ICNS": b"icns" + struct.pack(">I", 8 + len(block)) + block}


@pytest.mark.parametrize("fmt", ["ICO", "ICNS"])
def test_icon_containers_are_refused_without_decoding_their_hidden_image(fmt, monkeypatch):
    """An icon's header does not bound what Pillow decodes (ICO decodes its embedded PNG while opening, at
    any size): a 2000x2000 PNG inside was decoded before the 1-megapixel limit could refuse it."""
    from PIL import ImageFile

    from cosface.faces.detect import NotAnImageError, decode_photo
    from cosface.preprocess import decode_full

    data = icon_files(png_raw(2000, 2000, 2, 8, np.zeros((2000, 2000, 3), np.uint8)))[fmt]
    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    assert image_size(data) is None
    for decode in (lambda: decode_image(data, S, max_pixels=1_000_000), lambda: decode_full(data, 1_000_000)):
        with pytest.raises(ValueError, match="not an image in a known format"):
            decode()
    with pytest.raises(NotAnImageError, match="not an image in a known format"):
        decode_photo(data, max_pixels=1_000_000)
    assert decoded == []


def test_eps_is_never_handed_to_ghostscript(monkeypatch):
    """Pillow renders EPS by running Ghostscript on the file's PostScript (a program from the sender); an
    EPS upload is not an image here, and Ghostscript is never started, installed or not."""
    from PIL import EpsImagePlugin

    from cosface.faces.detect import NotAnImageError, decode_photo
    from cosface.preprocess import decode_full, pillow_formats

    started = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: started.append(a))
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    data = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
            b"0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n")
    assert "EPS" not in pillow_formats() and "PNG" in pillow_formats()
    for decode in (lambda: decode_image(data, S), lambda: decode_full(data, 1_000_000)):
        with pytest.raises(ValueError, match="not an image in a known format"):
            decode()
    with pytest.raises(NotAnImageError, match="not an image in a known format"):
        decode_photo(data)
    assert started == []
