"""insightface verification sets (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`, ...), read without running code.

A `.bin` is a pickle of `(images, issame)`: a list of 2N encoded images (JPEG/PNG bytes) in pair
order (pair i = images 2i and 2i+1) and a list of N booleans. Files written by Python 2 hold the
images as byte strings; Python 3 writes bytes directly (protocol >= 3) or, with protocol 2, as a
call to `_codecs.encode(text, "latin1")`; some converters store numpy uint8 arrays or numpy
booleans, which protocol 5 (`pickle.HIGHEST_PROTOCOL`) writes as a call to numpy's `_frombuffer`.
A plain `pickle.load` would run whatever callable a crafted file names, so the file is
read by an unpickler that resolves only those few constructors and refuses every other global.
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

from cosface.errors import CosfaceError


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    # The only call Python 3's protocol-2 pickle of bytes makes: codecs.encode(str, "latin1").
    codec = encoding.replace("-", "").replace("_", "").lower() if isinstance(encoding, str) else None
    if not isinstance(text, str) or codec != "latin1" or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is accepted only as encode(<str>, 'latin1')")
    return text.encode("latin1")


def _safe_dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"numpy dtype {dt} holds Python objects")
    return dt


def _safe_frombuffer(buf, dtype, shape, order):
    # Protocol 5 pickles a contiguous array as numpy's _frombuffer(<in-band buffer>, dtype, shape, order).
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or order not in ("C", "F"):
        raise pickle.UnpicklingError("numpy _frombuffer is accepted only as (bytes, dtype, shape, 'C' or 'F')")
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy dtype {dtype} holds Python objects")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


# The installed numpy's own reconstructors, whatever module path (numpy.core / numpy._core) a file names.
_RECONSTRUCT = np.zeros(1, np.uint8).__reduce__()[0]
_SCALAR = np.bool_(True).__reduce__()[0]

_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


@dataclass(frozen=True)
class BinSet:
    """Encoded images (2N, pair order) and issame (N,); also a source for `embed_images`."""

    images: list[bytes]
    issame: np.ndarray   # (N,) bool
    path: str

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> bytes:
        return self.images[i]

    def describe(self, i: int) -> str:
        return f"{self.path} image {i} (pair {i // 2})"


def load_bin(path: str | os.PathLike) -> BinSet:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CosfaceError(f"verification set {path} not found") from None
    except OSError as e:
        raise CosfaceError(f"cannot read verification set {path}: {e}") from None
    try:
        # encoding="bytes": Python 2 byte strings stay bytes instead of being decoded as text.
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise CosfaceError(
            f"{path} tries to load a forbidden global ({e}); a verification .bin may hold only images and issame flags"
        ) from None
    except Exception as e:  # a truncated or foreign file can fail inside pickle in many ways
        reason = " ".join(str(e).split())    # some pickle errors span two lines; the CLI prints one
        raise CosfaceError(
            f"{path} is not a readable verification .bin pickle ({e.__class__.__name__}: {reason})"
        ) from None
    return _validate(path, obj)


def _validate(path: str, obj) -> BinSet:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise CosfaceError(f"{path} must hold a pair (images, issame), found {type(obj).__name__}")
    images, issame = obj
    if not isinstance(images, (list, tuple)):
        raise CosfaceError(f"{path}: images must be a list of encoded images, found {type(images).__name__}")
    out = []
    for i, img in enumerate(images):
        if isinstance(img, (bytes, bytearray)):
            out.append(bytes(img))
        elif isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 1:
            out.append(img.tobytes())
        else:
            raise CosfaceError(f"{path}: image {i} is {type(img).__name__}, expected encoded image bytes")
    if isinstance(issame, np.ndarray):
        issame = issame.tolist()
    if not isinstance(issame, (list, tuple)):
        raise CosfaceError(f"{path}: issame must be a list of booleans, found {type(issame).__name__}")
    flags = []
    for i, v in enumerate(issame):
        if isinstance(v, np.generic):
            v = v.item()
        if v not in (True, False) or not isinstance(v, (bool, int)):
            raise CosfaceError(f"{path}: issame[{i}] is {v!r}, expected a boolean")
        flags.append(bool(v))
    if len(out) != 2 * len(flags):
        raise CosfaceError(f"{path} holds {len(out)} images for {len(flags)} pairs; expected {2 * len(flags)}")
    if not flags:
        raise CosfaceError(f"{path} holds no pairs")
    return BinSet(out, np.array(flags, dtype=bool), path)
