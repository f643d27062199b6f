"""Five-point alignment: a least-squares similarity transform to a template, and the bilinear warp.

Coordinates are pixel coordinates with pixel (x, y)'s centre at the integer point (x, y), the convention
of the detectors' landmarks and of the templates below (and of OpenCV's warpAffine, which produced the
reference's aligned data sets). Points are ordered as the templates are: eye on the image's left, eye on
the image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right.
"""
from __future__ import annotations

import numpy as np

from cosface.errors import CosfaceError

# ArcFace / insightface 112x112 template (the one `faces_webface_112x112` and `lfw_align_112` were made with).
ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)

# The CosFace / SphereFace papers' 96x112 crops: the same points 8 px to the left (112 - 96 = 2 x 8).
COSFACE_96x112 = ARCFACE_112 - np.array([8.0, 0.0])

# name -> (points, width, height) at the template's native size; height 112 is the scale reference.
TEMPLATES: dict[str, tuple[np.ndarray, int, int]] = {
    "arcface": (ARCFACE_112, 112, 112),
    "cosface": (COSFACE_96x112, 96, 112),
}

ALIGNMENT_METHOD = "umeyama-similarity-5pt+bilinear"


def template_points(template: str = "arcface", size: int = 112) -> tuple[np.ndarray, int, int]:
    """(points (5, 2) float64, out_w, out_h) of a template scaled so its height is `size` pixels.

    "arcface" is square (size x size); "cosface" is 96:112 (width round(96 * size / 112)).
    """
    if template not in TEMPLATES:
        raise CosfaceError(f"unknown alignment template {template!r}; expected one of {sorted(TEMPLATES)}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise CosfaceError(f"alignment size must be an integer >= 8 pixels, got {size!r}")
    pts, w, h = TEMPLATES[template]
    scale = size / h
    return pts * scale, int(round(w * scale)), int(size)


def umeyama(src, dst) -> np.ndarray:
    """The (2, 3) float64 similarity transform M (rotation, uniform scale, shift; no reflection) minimising
    sum_i |M @ [src_i, 1] - dst_i|^2 (Umeyama 1991, closed form). src, dst: (N, 2) with N >= 2.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise CosfaceError(f"umeyama needs two (N, 2) point sets of the same shape with N >= 2, "
                           f"got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise CosfaceError("umeyama: points must be finite")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise CosfaceError("umeyama: the source points all coincide; no transform is defined")
    cov = d_c.T @ s_c / len(src)                      # (2, 2)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:    # keep a rotation, never a mirror
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def invert_affine(matrix) -> np.ndarray:
    """Inverse of a (2, 3) affine map, as a (2, 3) matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    a = m[:, :2]
    det = np.linalg.det(a)
    if abs(det) < 1e-12:
        raise CosfaceError("the alignment transform is singular (the landmarks collapse to a point or a line)")
    inv = np.linalg.inv(a)
    return np.concatenate([inv, -inv @ m[:, 2:]], axis=1)


def transform_points(matrix, points) -> np.ndarray:
    """Apply a (2, 3) affine map to (N, 2) points."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def warp(image: np.ndarray, matrix, out_w: int, out_h: int) -> np.ndarray:
    """Warp an (H, W, C) or (H, W) uint8 image by the affine map `matrix` (source pixel -> output pixel)
    into an (out_h, out_w[, C]) uint8 image: bilinear, and black where the source lies outside the image
    (a sample between the last pixel and the outside mixes with black, as a constant border does).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise CosfaceError(f"warp expects an (H, W, C) or (H, W) uint8 array, got "
                           f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    if out_w < 1 or out_h < 1:
        raise CosfaceError(f"warp output size must be positive, got {out_w}x{out_h}")
    gray = image.ndim == 2
    img = image[:, :, None] if gray else image
    h, w, c = img.shape
    inv = invert_affine(matrix)
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = (sx - x0).astype(np.float32).reshape(-1, 1)
    fy = (sy - y0).astype(np.float32).reshape(-1, 1)
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    # Only the source window the output reaches is copied, with a one-pixel black frame: every neighbour is
    # then gathered without per-pixel bounds checks (indices clipped into the frame read black).
    wx0, wx1 = int(np.clip(x0.min(), 0, w)), int(np.clip(x0.max() + 2, 0, w))
    wy0, wy1 = int(np.clip(y0.min(), 0, h)), int(np.clip(y0.max() + 2, 0, h))
    ww, wh = wx1 - wx0, wy1 - wy0
    pad = np.zeros((wh + 2, ww + 2, c), dtype=np.float32)
    pad[1:-1, 1:-1] = img[wy0:wy1, wx0:wx1]
    flat = pad.reshape(-1, c)
    xa = np.clip(x0 - wx0 + 1, 0, ww + 1).reshape(-1)
    xb = np.clip(x0 - wx0 + 2, 0, ww + 1).reshape(-1)
    ya = np.clip(y0 - wy0 + 1, 0, wh + 1).reshape(-1) * (ww + 2)
    yb = np.clip(y0 - wy0 + 2, 0, wh + 1).reshape(-1) * (ww + 2)
    top = flat[ya + xa] * (1 - fx) + flat[ya + xb] * fx
    bottom = flat[yb + xa] * (1 - fx) + flat[yb + xb] * fx
    out = top * (1 - fy) + bottom * fy
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(out_h, out_w, c)
    return out[:, :, 0] if gray else out


def alignment_matrix(landmarks5, size: int = 112, template: str = "arcface") -> np.ndarray:
    """The (2, 3) similarity taking five image landmarks onto the scaled template."""
    pts = np.asarray(landmarks5, dtype=np.float64)
    if pts.shape != (5, 2):
        raise CosfaceError(f"alignment needs five (x, y) landmarks, got an array of shape {pts.shape}")
    dst, _, _ = template_points(template, size)
    return umeyama(pts, dst)


def align_face(image: np.ndarray, landmarks5, size: int = 112, template: str = "arcface") -> np.ndarray:
    """Crop one face: (H, W, 3) uint8 RGB and its five landmarks -> (size, size, 3) uint8 for "arcface",
    (size, round(96 * size / 112), 3) for "cosface".
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CosfaceError(f"align_face expects an (H, W, 3) uint8 RGB array, got "
                           f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    _, out_w, out_h = template_points(template, size)
    return warp(image, alignment_matrix(landmarks5, size, template), out_w, out_h)
