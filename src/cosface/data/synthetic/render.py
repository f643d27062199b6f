"""The renderer: identity parameters plus random nuisances -> 112 x 112 face images.

Each image adds nuisances that a face model must learn to ignore: pose and slight yaw, expression,
clothing, background, lighting, occlusion, blur, noise, grayscale and JPEG quality (`Nuisances`).
Shapes are anti-aliased signed-distance fields on coordinate grids. All images of one identity
are drawn together on (K, H, W) arrays: the identity's head is drawn once in face space, the parts
that move with expression are drawn per image in small boxes, then one gather-based warp applies
each image's pose, and the rest (background, light, noise) is whole-array arithmetic.

Face space is the 112 x 112 canvas with the origin at its centre, x right, y down, in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from cosface.data.synthetic.identity import BEARDS, HAIR_STYLES, Identity
from cosface.errors import CosfaceError

SIZE = 112
_HALF = SIZE / 2
_AXIS = np.arange(SIZE, dtype=np.float32) + 0.5 - _HALF     # pixel centres in face space
_GX = _AXIS[None, :]                                         # (1, W)
_GY = _AXIS[:, None]                                         # (H, 1)
_F32 = np.float32


@dataclass(frozen=True)
class Nuisances:
    """How much the images of one identity vary: (low, high) ranges, "either way" amplitudes and
    probabilities.

    The defaults are calibrated (figures in the package docstring): pose, background and lighting
    keep raw pixels near 72 % on the synthetic LFW set, while colours and shapes stay clear enough
    for a small network to pass 88 % after seeing 12,000 training images. Grayscale images are the
    hardest cases for a briefly trained network, which leans on colour.
    """

    zoom: float = 1.35                    # face size in the frame
    scale: tuple = (0.9, 1.1)             # per-image size change on top of zoom
    rotation: float = 20.0                # degrees either way
    shift: float = 10.0                   # pixels either way, along x and along y
    saturation: tuple = (0.0, 0.6)        # background colours: 0 gray, 1 any colour
    clutter: float = 0.5                  # strongest opacity of the background rectangle
    occlusion: float = 0.2                # probability of a bar in front of the face
    gain: tuple = (0.85, 1.15)            # overall brightness
    tint: float = 0.05                    # per-channel colour cast either way
    gradient: float = 0.4                 # strongest brightness change from centre to edge
    blur: float = 0.4                     # probability of a blurred image
    gray: float = 0.05                    # probability of a grayscale image
    quality: tuple = (40, 95)             # JPEG quality

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and not (len(v) == 2 and 0 <= v[0] <= v[1]):
                raise CosfaceError(f"nuisance {f.name} must be a range (low, high) with 0 <= low <= high, got {v!r}")
            if not isinstance(v, tuple) and not v >= 0:
                raise CosfaceError(f"nuisance {f.name} must be >= 0, got {v!r}")
        for name in ("occlusion", "blur", "gray", "clutter", "tint"):
            if getattr(self, name) > 1:
                raise CosfaceError(f"nuisance {name} is a probability or opacity in [0, 1], got {getattr(self, name)!r}")
        if self.zoom <= 0 or self.scale[0] <= 0:
            raise CosfaceError(f"nuisance zoom and scale must be positive, got {self.zoom!r} and {self.scale!r}")
        if not 1 <= self.quality[0] <= self.quality[1] <= 100:
            raise CosfaceError(f"nuisance quality must be a JPEG quality range within 1..100, got {self.quality!r}")


NUISANCES = Nuisances()


# ---------------------------------------------------------------- drawing primitives

def _cov(d):
    """Signed distance in pixels (negative inside) -> anti-aliased coverage in [0, 1]."""
    return np.clip(0.5 - d, 0.0, 1.0)


def _ellipse(x, y, cx, cy, a, b):
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    return (r - 1.0) * np.minimum(a, b)


def _box(x, y, x0, x1, y0, y1, radius=0.0):
    """Rounded axis-aligned rectangle."""
    qx = np.abs(x - (x0 + x1) / 2) - (x1 - x0) / 2 + radius
    qy = np.abs(y - (y0 + y1) / 2) - (y1 - y0) / 2 + radius
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - radius


def _stroke(t, y, centre, half_len, thick):
    """A stroke of length 2 * half_len along the curve y = centre(t), thinning towards its ends.

    t is the position along the stroke scaled to [-1, 1] between its ends.
    """
    half = thick * (1.0 - 0.55 * np.minimum(t * t, 1.0)) / 2
    return np.maximum(np.abs(y - centre) - half, (np.abs(t) - 1.0) * half_len)


def _over(canvas, cov, colour):
    """Composite a flat `colour` with coverage `cov` over a (K, 4, h, w) premultiplied RGBA canvas in place."""
    keep = 1.0 - cov
    for c in range(3):
        canvas[:, c] *= keep
        canvas[:, c] += cov * _F32(colour[c])
    canvas[:, 3] *= keep
    canvas[:, 3] += cov


# ---------------------------------------------------------------- identity layer (drawn once)

def _head_layer(idn: Identity) -> tuple[np.ndarray, np.ndarray]:
    """Everything that does not change from one image to the next.

    Returns the (1, 4, H, W) canvas and the (H, W) weight with which the shirt shows through: the
    shirt is the bottom layer and its colour changes per image.
    """
    x, y = _GX, _GY
    canvas = np.zeros((1, 4, SIZE, SIZE), _F32)
    fy, fa, fb = idn.face_y, idn.face_a, idn.face_b
    chin = fy + fb
    shirt = _cov(_ellipse(x, y, 0.0, chin + 34, fa * 2.0, 30.0))
    canvas[0, 3] = shirt

    def paint(cov, colour):
        _over(canvas, cov, colour)
        shirt[...] *= 1.0 - cov

    style = HAIR_STYLES[idn.hair_style]
    outer = _ellipse(x, y, 0.0, fy - idn.hair_volume * 0.4, fa + idn.hair_volume, fb + idn.hair_volume * 0.7)
    if style == "long":
        back = _box(x, y, -fa - idn.hair_volume - 2, fa + idn.hair_volume + 2, fy - fb * 0.3, chin + 14, 8.0)
        paint(_cov(np.minimum(back, outer)), idn.hair)
    paint(_cov(_box(x, y, -idn.neck_w, idn.neck_w, fy, chin + 30, 3.0)), np.asarray(idn.skin) * 0.85)
    for side in (-1.0, 1.0):
        paint(_cov(_ellipse(x, y, side * fa * 0.97, idn.eye_y + 4, idn.ear_a, idn.ear_b)), idn.skin)

    # Superellipse head whose lower half narrows towards the chin by `jaw`.
    dy = (y - fy) / fb
    width = fa * (1.0 - idn.jaw * np.clip(dy, 0.0, 1.0))
    r = (np.abs(x / width) ** idn.face_p + np.abs(dy) ** idn.face_p) ** (1.0 / idn.face_p)
    face = (r - 1.0) * fa
    paint(_cov(face), idn.skin)

    if BEARDS[idn.beard] == "full":
        paint(_cov(np.maximum(face + 1.0, idn.mouth_y - 5.0 - y)) * idn.beard_density, idn.hair)
    elif BEARDS[idn.beard] == "goatee":
        chin_patch = _ellipse(x, y, 0.0, chin - fb * 0.12, fa * 0.38, fb * 0.28)
        paint(_cov(np.maximum(chin_patch, face + 1.0)) * idn.beard_density, idn.hair)

    if idn.mole:
        paint(_cov(_ellipse(x, y, idn.mole_x, idn.mole_y, 1.4, 1.4)), (60, 35, 25))

    if style != "bald":
        top = fy - fb * idn.hairline
        t = x / fa
        if style == "side":
            line = top + idn.hair_shape * 6.0 * t
        elif style == "fringe":
            line = top + 1.5 * np.sin(x * (0.5 + 0.3 * idn.hair_shape))
        else:
            line = top + (3.0 + 3.0 * idn.hair_shape) * t * t      # receding temples
        cut = chin + 6.0 if style in ("long", "volume") else idn.eye_y + 2.0
        # Inside the outer outline, except the face below the hairline, and not below `cut`.
        hair = _cov(np.maximum(np.maximum(outer, -np.maximum(face, line - y)), y - cut))
        paint(hair, idn.hair)
        along = (x * np.cos(idn.hair_angle) + y * np.sin(idn.hair_angle)) * idn.hair_freq
        across = (y * np.cos(idn.hair_angle) - x * np.sin(idn.hair_angle)) * idn.hair_freq
        strands = np.sin(along) * np.sin(across) if idn.hair_curl else np.sin(along + 0.8 * np.sin(across * 0.3))
        paint(hair * (idn.hair_contrast * (0.5 + 0.5 * strands)), np.asarray(idn.hair) * 0.45)
    return canvas, shirt


# ---------------------------------------------------------------- per-image parts (expression, yaw)

_MAX_SHIFT = 3.0          # the yaw shift of the inner face, pixels either way


def _region(canvas, x0, x1, y0, y1):
    """A view of the canvas covering face-space [x0, x1] x [y0, y1], and its pixel-centre grids."""
    c0 = int(max(np.floor(x0 + _HALF), 0))
    c1 = int(min(np.ceil(x1 + _HALF), SIZE))
    r0 = int(max(np.floor(y0 + _HALF), 0))
    r1 = int(min(np.ceil(y1 + _HALF), SIZE))
    return canvas[:, :, r0:r1, c0:c1], _AXIS[None, None, c0:c1], _AXIS[None, r0:r1, None]


def _draw_eyes(canvas, idn: Identity, shift, gaze, openness):
    """Eyes, brows and glasses; shift, gaze and openness are (K, 1, 1) per-image values."""
    ey = idn.eye_y
    lens = idn.glass_r + idn.glass_thick if idn.glasses else 0.0
    reach = max(idn.eye_w + 1, idn.brow_len + idn.brow_thick, lens) + _MAX_SHIFT + 1
    brow_top = ey - idn.brow_dy - idn.brow_thick - max(idn.brow_arch, 0) - idn.brow_len * abs(idn.brow_tilt)
    top = min(brow_top, ey - lens) - 2
    bottom = ey + max(idn.eye_h, lens) + 2
    for side in (-1.0, 1.0):
        cx = side * idn.eye_dx
        sub, gx, y = _region(canvas, cx - reach, cx + reach, top, bottom)
        x = gx - shift
        # Rotate about the eye centre, mirrored, so the outer corners tilt symmetrically.
        c, s = np.cos(idn.eye_tilt * side), np.sin(idn.eye_tilt * side)
        lx = (x - cx) * c + (y - ey) * s
        ly = (y - ey) * c - (x - cx) * s
        h = idn.eye_h * openness
        # First-order distance (q - 1) / |grad q|: stays a true pixel distance for a blink's thin slit.
        ax = lx / idn.eye_w ** 2
        ay = ly / (h * h)
        sclera = (lx * ax + ly * ay - 1.0) / (2.0 * np.sqrt(ax * ax + ay * ay) + 1e-3)
        inside = _cov(sclera)
        _over(sub, _cov(np.abs(sclera) - 0.6) * 0.8, (40, 28, 24))
        _over(sub, inside, (238, 234, 228))
        iris_r = idn.eye_h * 0.95
        iris = np.sqrt((lx - gaze) ** 2 + ly * ly) - iris_r
        _over(sub, _cov(iris) * inside, idn.iris)
        _over(sub, _cov(iris + iris_r * 0.55) * inside, (15, 12, 12))
        t = (x - cx) * side / idn.brow_len
        centre = ey - idn.brow_dy - idn.brow_tilt * idn.brow_len * t - idn.brow_arch * (1.0 - np.minimum(t * t, 1.0))
        _over(sub, _cov(_stroke(t, y, centre, idn.brow_len, idn.brow_thick)), idn.brow)
        if idn.glasses:
            ring = np.sqrt((x - cx) ** 2 + (y - ey) ** 2) - idn.glass_r
            if idn.lens_tint:
                _over(sub, _cov(ring) * idn.lens_tint, (30, 30, 35))
            _over(sub, _cov(np.abs(ring) - idn.glass_thick / 2), idn.frame)
    if idn.glasses:
        inner = idn.eye_dx - idn.glass_r
        sub, gx, y = _region(canvas, -inner - _MAX_SHIFT - 1, inner + _MAX_SHIFT + 1, ey - 4, ey + idn.glass_thick)
        bridge = _box(gx - shift, y, -inner, inner, ey - 2.5, ey - 2.5 + idn.glass_thick)
        _over(sub, _cov(bridge), idn.frame)


def _draw_mouth(canvas, idn: Identity, shift, smile, mouth_open):
    """Nose and mouth; shift, smile and mouth_open are (K, 1, 1) per-image values."""
    half = max(idn.mouth_w, idn.nose_w) + _MAX_SHIFT + 2
    sub, gx, y = _region(canvas, -half, half, idn.nose_y - idn.nose_len - 1, idn.mouth_y + idn.lip_thick + 7)
    x = gx - shift
    dark = np.asarray(idn.skin) * 0.55
    ridge = _ellipse(x, y, 0.0, idn.nose_y - idn.nose_len * 0.45, idn.nose_w * 0.7, idn.nose_len * 0.6)
    _over(sub, _cov(ridge) * (idn.nose_shade * 0.6), dark)
    for side in (-1.0, 1.0):
        nostril = _ellipse(x, y, side * idn.nose_w * 0.55, idn.nose_y, idn.nose_w * 0.35, 1.2)
        _over(sub, _cov(nostril) * (idn.nose_shade + 0.3), dark)
    bend = idn.smile + smile                     # positive raises the corners
    t = x / idn.mouth_w
    lips = _stroke(t, y, idn.mouth_y - bend * t * t, idn.mouth_w, idn.lip_thick + mouth_open)
    _over(sub, _cov(lips), idn.lips)
    gap = _ellipse(x, y, 0.0, idn.mouth_y - bend * 0.3, idn.mouth_w * 0.7, np.maximum(mouth_open * 0.5, 0.05))
    _over(sub, _cov(gap) * (mouth_open > 0.2), (45, 18, 20))


# ---------------------------------------------------------------- the whole image

def _warp(canvas, angle, scale, tx, ty):
    """Rotate, scale and shift (K, 4, H, W) face-space canvases (premultiplied RGB 0..255, alpha
    0..1) into image space with bilinear sampling; returns (K, 4, H, W) float32, all on 0..255.
    The canvas is used up (modified in place).

    Each pixel's four channels travel as the four 16-bit lanes of one uint64, holding 8-bit values;
    the bilinear weights are in 1/16 pixel and sum to 256, so weighted sums never carry from one
    lane into the next. A tap is then one gather, one multiply and one add for all four channels.
    Outside the canvas is transparent.
    """
    k = canvas.shape[0]
    # A transparent border: one pixel before, two after, so that a position clamped to the border
    # still has both of its bilinear neighbours inside the array.
    side = SIZE + 3
    canvas[:, 3] *= 255.0
    canvas += 0.5                                             # colours are <= 255 by construction
    lanes = np.zeros((k, side, side, 4), np.uint16)
    lanes[:, 1:SIZE + 1, 1:SIZE + 1] = canvas.transpose(0, 2, 3, 1)  # truncating cast: round half up
    flat = lanes.view(np.uint64).reshape(-1)

    c = (np.cos(angle) / scale).astype(_F32)[:, None, None]
    s = (np.sin(angle) / scale).astype(_F32)[:, None, None]
    ox = _GX - tx.astype(_F32)[:, None, None]
    oy = _GY - ty.astype(_F32)[:, None, None]
    # Source position in sixteenths of a padded-array pixel (pixel i's centre is at i + 0.5 - 1).
    sx = (np.clip(c * ox + s * oy + (_HALF + 0.5), 0.0, SIZE + 1.0) * 16).astype(np.int64)
    sy = (np.clip(c * oy - s * ox + (_HALF + 0.5), 0.0, SIZE + 1.0) * 16).astype(np.int64)
    fx = (sx & 15).astype(np.uint64)
    fy = (sy & 15).astype(np.uint64)
    base = (sy >> 4) * side
    base += sx >> 4
    base += (np.arange(k) * side * side)[:, None, None]
    w11 = fx * fy
    fx <<= 4
    fy <<= 4
    acc = np.take(flat, base) * (256 - fx - fy + w11)
    acc += np.take(flat, base + 1) * (fx - w11)
    acc += np.take(flat, base + side) * (fy - w11)
    acc += np.take(flat, base + (side + 1)) * w11
    out = np.empty((k, 4, SIZE, SIZE), _F32)
    out[:] = acc.view(np.uint16).reshape(k, SIZE, SIZE, 4).transpose(0, 3, 1, 2)
    out *= 1.0 / 256
    return out


_NOISE_LEVELS = np.linspace(1.0, 8.0, 8, dtype=_F32)     # noise standard deviations, 0..255 units
_noise_bank = None


def _noise(rng, img):
    """Add Gaussian noise of a random level to each (3, H, W) image, plus the 0.5 that makes the
    final truncating cast round: random crops of a fixed bank, far cheaper than fresh draws."""
    global _noise_bank
    if _noise_bank is None:
        unit = np.random.default_rng(20240601).standard_normal((3, 2 * SIZE, 2 * SIZE), dtype=_F32)
        _noise_bank = _NOISE_LEVELS[:, None, None, None] * unit + 0.5
    levels = rng.integers(0, len(_NOISE_LEVELS), len(img))
    offsets = rng.integers(0, SIZE, (len(img), 2))
    for im, level, (y, x) in zip(img, levels, offsets):
        im += _noise_bank[level, :, y:y + SIZE, x:x + SIZE]


def _blur(img, w):
    """One pass of the 3-tap kernel [w, 1-2w, w] along both image axes; w is (n, 1, 1, 1)."""
    p = np.concatenate([img[..., :1], img, img[..., -1:]], axis=-1)
    img = p[..., 1:-1] * (1 - 2 * w) + (p[..., :-2] + p[..., 2:]) * w
    p = np.concatenate([img[..., :1, :], img, img[..., -1:, :]], axis=-2)
    return p[..., 1:-1, :] * (1 - 2 * w) + (p[..., :-2, :] + p[..., 2:, :]) * w


def _soft_span(axis, centre, half, soft):
    """1-D coverage of |axis - centre| <= half with edges `soft` pixels wide; centre, half, soft (n, 1, 1)."""
    return np.clip((half - np.abs(axis - centre)) / soft + 0.5, 0.0, 1.0)


def render(idn: Identity, rng: np.random.Generator, count: int,
           nz: Nuisances = NUISANCES) -> list[tuple[np.ndarray, int]]:
    """`count` images of one identity, drawing every random choice from `rng`.

    Returns (uint8 pixels, JPEG quality) pairs; pixels are (112, 112, 3) RGB, or (112, 112, 1) for
    the grayscale images.
    """
    return render_with_landmarks(idn, rng, count, nz)[0]


def face_landmarks(idn: Identity, shift, bend) -> np.ndarray:
    """(K, 5, 2) face-space points of the five alignment landmarks: eye centres, the nose tip between
    the nostrils, the mouth corners (the lip stroke's ends), with each image's yaw shift and smile bend."""
    k = len(shift)
    pts = np.empty((k, 5, 2), np.float64)
    pts[:, :, 0] = np.array([-idn.eye_dx, idn.eye_dx, 0.0, -idn.mouth_w, idn.mouth_w]) + shift[:, None]
    pts[:, :2, 1] = idn.eye_y
    pts[:, 2, 1] = idn.nose_y
    pts[:, 3:, 1] = (idn.mouth_y - bend)[:, None]
    return pts


def render_with_landmarks(idn: Identity, rng: np.random.Generator, count: int,
                          nz: Nuisances = NUISANCES) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
    """`render`, plus the (count, 5, 2) float64 landmarks of each image in pixel coordinates with pixel
    centres at integers (the alignment convention): the face-space points moved by the image's pose.
    The random draws are render's, so the pixels are the same."""
    k = count

    def u(lo=0.0, hi=1.0, shape=None):
        # float32 throughout: a float64 array here would silently double the cost of every image op
        return rng.uniform(lo, hi, shape).astype(_F32)

    def per_image(lo, hi, channels=None):
        return u(lo, hi, (k, 1, 1) if channels is None else (k, channels, 1, 1))

    head, shirt_weight = _head_layer(idn)
    canvas = np.empty((k, 4, SIZE, SIZE), _F32)
    canvas[:] = head
    canvas[:, :3] += shirt_weight * per_image(20, 235, 3)           # clothes change every picture

    shift = per_image(-_MAX_SHIFT, _MAX_SHIFT)                      # slight yaw of the inner face
    gaze = per_image(-1.2, 1.2)
    openness = np.where(u(0, 1, (k, 1, 1)) < 0.06, _F32(0.15), per_image(0.45, 1.15))
    smile = per_image(-1.5, 1.5)
    mouth_open = np.where(u(0, 1, (k, 1, 1)) < 0.25, per_image(1.0, 4.0), _F32(0.0))
    _draw_eyes(canvas, idn, shift, gaze, openness)
    _draw_mouth(canvas, idn, shift, smile, mouth_open)

    angle = np.radians(u(-nz.rotation, nz.rotation, k))
    scale = nz.zoom * u(nz.scale[0], nz.scale[1], k)
    tx, ty = u(-nz.shift, nz.shift, k), u(-nz.shift, nz.shift, k)
    face = _warp(canvas, angle, scale, tx, ty)
    # _warp samples face space at R(-angle) (g - t) / scale, so a face-space point p lands at g = t + scale R(angle) p.
    pts = face_landmarks(idn, shift[:, 0, 0].astype(np.float64), (idn.smile + smile[:, 0, 0]).astype(np.float64))
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    sc = scale[:, None].astype(np.float64)
    landmarks = np.stack([tx[:, None] + sc * (c * pts[..., 0] - s * pts[..., 1]),
                          ty[:, None] + sc * (s * pts[..., 0] + c * pts[..., 1])], axis=-1) + (_HALF - 0.5)

    # Background: a two-colour linear gradient in a random direction and a soft rectangle of
    # clutter, both separable in x and y, so built from (K, 3, 1, W) and (K, 3, H, 1) pieces.
    grey = per_image(40, 215)[:, None]
    c0 = grey + (per_image(0, 255, 3) - grey) * per_image(*nz.saturation)[:, None]
    c1 = grey + (per_image(0, 255, 3) - grey) * per_image(*nz.saturation)[:, None]
    phi = u(0, 2 * np.pi, (k, 1, 1, 1))
    slope = (c1 - c0) * (u(0.5, 1.2, (k, 1, 1, 1)) / SIZE)
    img = ((c0 + c1) / 2 + slope * np.cos(phi) * _GX) + slope * np.sin(phi) * _GY
    clutter = (_soft_span(_GX, *(u(-60, 60, (k, 1, 1)), u(8, 40, (k, 1, 1)), u(1, 8, (k, 1, 1))))
               * _soft_span(_GY, *(u(-60, 60, (k, 1, 1)), u(8, 40, (k, 1, 1)), u(1, 8, (k, 1, 1))))
               * per_image(0, nz.clutter))[:, None]
    img += (per_image(0, 255, 3) - img) * clutter
    img *= 1.0 - face[:, 3:4] / 255.0
    img += face[:, :3]

    # Occluders: a bar or block in front of some images.
    occluded = np.flatnonzero(u(0, 1, k) < nz.occlusion)
    n = len(occluded)
    if n:
        a = u(0, np.pi, (n, 1, 1))
        c, s = np.cos(a), np.sin(a)
        dx = _GX - u(-30, 30, (n, 1, 1))
        dy = _GY - u(-30, 30, (n, 1, 1))
        bar = np.maximum(np.abs(dx * c + dy * s) - u(10, 40, (n, 1, 1)), np.abs(dy * c - dx * s) - u(3, 10, (n, 1, 1)))
        img[occluded] += (u(0, 255, (n, 3, 1, 1)) - img[occluded]) * _cov(bar)[:, None]

    # Lighting: brightness, a colour cast and a directional gradient across the frame.
    theta = u(0, 2 * np.pi, (k, 1, 1))
    strength = u(0.0, nz.gradient, (k, 1, 1)) / _HALF
    light = (1.0 + strength * np.cos(theta) * _GX) + strength * np.sin(theta) * _GY
    img *= light[:, None]
    img *= per_image(*nz.gain)[:, None] * per_image(1 - nz.tint, 1 + nz.tint, 3)

    passes = np.where(u(0, 1, k) < nz.blur, rng.integers(1, 4, k), 0)
    for p in range(1, 4):
        blurred = np.flatnonzero(passes >= p)
        if len(blurred):
            img[blurred] = _blur(img[blurred], u(0.12, 0.25, (len(blurred), 1, 1, 1)))
    _noise(rng, img)
    np.clip(img, 0, 255, out=img)
    gray = u(0, 1, k) < nz.gray
    quality = rng.integers(nz.quality[0], nz.quality[1] + 1, k)
    pixels = np.empty((k, SIZE, SIZE, 3), np.uint8)
    pixels[:] = img.transpose(0, 2, 3, 1)                           # truncating cast; noise added the 0.5
    out = []
    for i in range(k):
        if gray[i]:
            luma = img[i, 0] * 0.299 + img[i, 1] * 0.587 + img[i, 2] * 0.114
            out.append((luma.astype(np.uint8)[:, :, None], int(quality[i])))
        else:
            out.append((pixels[i], int(quality[i])))
    return out, landmarks
