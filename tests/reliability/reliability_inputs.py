"""Inputs for the reliability suite: small, valid files to spoil, and ways to spoil them.

(A module of its own, not conftest.py, so the tests can import it by a name no other test folder uses.)

`good_world` (built once per session, then only read) holds an image folder, a packed copy of it, an
LFW-style folder, a random-weight checkpoint and a config. Each bad-input case copies what it needs
into its own directory and breaks it there.
"""
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch

from cosface.backbones import build_backbone
from cosface.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, versions
from cosface.config import Config
from cosface.preprocess import Preprocessing


def jpeg(rng, size=112):
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return simplejpeg.encode_jpeg(img, quality=85, colorspace="RGB")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = bytearray(jpeg(np.random.default_rng(1), 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A decompression bomb's header: an 8-bit gray PNG claiming width x height, with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def checkpoint_dict(nan: bool = False) -> dict:
    torch.manual_seed(0)
    cfg = Config()
    model = build_backbone(cfg.model.backbone, embedding_size=cfg.model.embedding_size, input_size=cfg.model.input_size)
    state = model.state_dict()
    if nan:
        first = next(k for k, v in state.items() if v.is_floating_point())
        state[first] = state[first].clone().fill_(float("nan"))
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), "config": cfg.to_dict(),
            "num_classes": 2, "class_names": ["c00", "c01"], "preprocessing": Preprocessing().to_dict(),
            "backbone": state, "head": {"weight": torch.zeros(2, cfg.model.embedding_size)}}


class Evil:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


@dataclass(frozen=True)
class World:
    root: Path
    images: Path        # image folder: c00/, c01/, 4 JPEGs each
    packed: Path        # train.rec + train.idx + classes.txt of `images`
    lfw: Path           # pairs.txt + lfw_align_112/
    ckpt: Path          # random-weight checkpoint (valid)
    nan_ckpt: Path      # same, one weight tensor NaN
    evil_ckpt: Path     # pickled os.system call
    config: Path        # a valid TOML config
    image: Path         # one valid 112x112 JPEG


@pytest.fixture(scope="session")
def good_world(tmp_path_factory) -> World:
    from cosface.data.pack import pack_folder

    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    images = root / "images"
    for c in range(2):
        (images / f"c{c:02d}").mkdir(parents=True)
        for i in range(4):
            (images / f"c{c:02d}" / f"{i}.jpg").write_bytes(jpeg(rng))
    pack_folder(images, root / "packed", workers=0, progress=False)
    lfw = root / "lfw"
    lines = ["2\t1"]
    for f in range(2):
        a, b = f"P{2 * f}", f"P{2 * f + 1}"
        lines += [f"{a}\t1\t2", f"{a}\t1\t{b}\t1"]
    for p in range(4):
        (lfw / "lfw_align_112" / f"P{p}").mkdir(parents=True)
        for n in (1, 2):
            (lfw / "lfw_align_112" / f"P{p}" / f"P{p}_{n:04d}.jpg").write_bytes(jpeg(rng))
    (lfw / "pairs.txt").write_text("\n".join(lines) + "\n")
    atomic_save(checkpoint_dict(), root / "model.pt")
    atomic_save(checkpoint_dict(nan=True), root / "nan.pt")
    torch.save({"format": FORMAT, "x": Evil()}, root / "evil.pt")
    (root / "config.toml").write_text("[optim]\nlr = 0.05\n")
    return World(root, images, root / "packed", lfw, root / "model.pt", root / "nan.pt", root / "evil.pt",
                 root / "config.toml", images / "c00" / "0.jpg")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
