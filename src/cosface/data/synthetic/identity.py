"""Synthetic identities: the stable parameters of a person, and how they are drawn at random.

Identity lives here: head shape, skin, hair (style, colour, texture), eyes, brows, nose, mouth,
glasses, beard, a mole. Colours come from palettes with jitter, plus freely dyed hair, so that
people differ in large, learnable ways that survive lighting and pose. Lengths are in face-space
pixels (the 112 x 112 canvas, origin at its centre, y down), colours on 0..255.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np

_F32 = np.float32

# Palettes give identities categorical colours a network can pick up quickly; each draw adds jitter.
_HAIR = np.array([[25, 20, 20], [60, 40, 28], [105, 70, 40], [150, 75, 40], [205, 170, 100],
                  [150, 150, 150], [225, 222, 215], [185, 60, 30], [55, 75, 165], [190, 80, 140]], _F32)
_HAIR_P = np.array([20, 18, 15, 8, 10, 8, 5, 6, 5, 5], _F32)
_IRIS = np.array([[55, 32, 18], [110, 68, 32], [125, 110, 45], [60, 130, 70], [60, 115, 195],
                  [125, 135, 150]], _F32)
_FRAME = np.array([[20, 20, 20], [95, 55, 25], [200, 165, 60], [185, 185, 195], [190, 30, 40],
                   [30, 60, 170]], _F32)
_SKIN_LIGHT = np.array([245, 208, 182], _F32)
_SKIN_DARK = np.array([88, 55, 38], _F32)

HAIR_STYLES = ("bald", "short", "fringe", "side", "long", "volume")
BEARDS = ("none", "full", "goatee")


@dataclass(frozen=True)
class Identity:
    """The stable parameters of one synthetic person (face-space pixels, colours 0..255)."""

    face_y: float
    face_a: float          # half width
    face_b: float          # half height
    face_p: float          # superellipse exponent: 2 round, higher squarer
    jaw: float             # narrowing of the lower half
    skin: tuple
    ear_a: float
    ear_b: float
    neck_w: float
    hair_style: int
    hair: tuple
    hair_volume: float
    hairline: float        # hairline height as a fraction of face_b above the face centre
    hair_shape: float      # style-specific: temple recession, part slope or fringe waviness
    hair_curl: bool        # curls (a checker of blobs) rather than straight strands
    hair_freq: float       # strand spacing, radians per pixel
    hair_angle: float
    hair_contrast: float
    eye_y: float
    eye_dx: float          # half the distance between the eye centres
    eye_w: float
    eye_h: float
    eye_tilt: float
    iris: tuple
    brow_dy: float
    brow_len: float
    brow_thick: float
    brow_tilt: float
    brow_arch: float
    brow: tuple
    nose_y: float
    nose_len: float
    nose_w: float
    nose_shade: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    lips: tuple
    smile: float
    glasses: bool
    glass_r: float
    glass_thick: float
    frame: tuple
    lens_tint: float
    beard: int
    beard_density: float
    mole: bool
    mole_x: float
    mole_y: float

    def as_vector(self) -> np.ndarray:
        """Every parameter as one float vector (for comparing identities)."""
        flat: list[float] = []
        for v in astuple(self):
            flat.extend(v if isinstance(v, tuple) else (v,))
        return np.asarray(flat, dtype=np.float64)


def _colour(rng: np.random.Generator, base: np.ndarray, jitter: float) -> tuple:
    return tuple(float(c) for c in np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity's parameters. The draw order is part of the generator's version."""
    u = rng.uniform
    face_y = u(2, 8)
    face_a = u(26, 35)
    face_b = u(34, 43)
    tone = u(0, 1)
    skin = _colour(rng, _SKIN_LIGHT * (1 - tone) + _SKIN_DARK * tone, 18)
    style = int(rng.choice(len(HAIR_STYLES), p=[0.08, 0.24, 0.19, 0.19, 0.19, 0.11]))
    if u() < 0.5:
        hair = _colour(rng, _HAIR[rng.choice(len(_HAIR), p=_HAIR_P / _HAIR_P.sum())], 20)
    else:                                        # dyed: any hue, a wide range of lightness
        level = u(30, 220)
        hair = _colour(rng, level + (rng.uniform(0, 255, 3) - level) * u(0.4, 1.0), 0)
    eye_y = face_y - face_b * u(0.05, 0.22)
    eye_h = u(2.4, 4.2)
    nose_y = eye_y + u(10, 15)
    nose_len = u(7, 12)
    mouth_y = nose_y + u(7, 11)
    brow = np.asarray(hair) * 0.7 if style != 0 else np.array([45, 35, 30], _F32)
    lips = np.asarray(skin) * np.array([0.8, 0.55, 0.55]) + np.array([25, 0, 5])
    if u() < 0.15:
        lips = np.array([175, 30, 50], _F32)
    glasses = bool(u() < 0.3)
    beard = int(rng.choice(len(BEARDS), p=[0.72, 0.16, 0.12]))
    return Identity(
        face_y=face_y, face_a=face_a, face_b=face_b, face_p=u(1.8, 3.0), jaw=u(0.0, 0.32), skin=skin,
        ear_a=u(4, 7), ear_b=u(7, 11), neck_w=u(11, 19),
        hair_style=style, hair=hair, hair_volume=u(2, 8) if style != 5 else u(12, 18),
        hairline=u(0.55, 0.8) if style != 2 else u(0.3, 0.5), hair_shape=u(-1, 1),
        hair_curl=bool(u() < 0.3), hair_freq=u(0.5, 1.3), hair_angle=u(0, np.pi), hair_contrast=u(0.15, 0.6),
        eye_y=eye_y, eye_dx=face_a * u(0.3, 0.44), eye_w=u(4.5, 7.5), eye_h=eye_h, eye_tilt=u(-0.2, 0.2),
        iris=_colour(rng, _IRIS[rng.integers(len(_IRIS))], 12),
        brow_dy=u(4.5, 8.5) + eye_h, brow_len=u(5, 10), brow_thick=u(1.2, 3.6), brow_tilt=u(-0.25, 0.25),
        brow_arch=u(-0.5, 2.5), brow=_colour(rng, brow, 10),
        nose_y=nose_y, nose_len=nose_len, nose_w=u(3, 6.5), nose_shade=u(0.25, 0.5),
        mouth_y=mouth_y, mouth_w=u(7, 13), lip_thick=u(1.5, 4.0), lips=_colour(rng, lips, 10), smile=u(-1, 2),
        glasses=glasses, glass_r=u(7, 10), glass_thick=u(1.0, 2.2),
        frame=_colour(rng, _FRAME[rng.integers(len(_FRAME))], 10), lens_tint=u(0.25, 0.6) if u() < 0.3 else 0.0,
        beard=beard, beard_density=u(0.55, 0.95),
        mole=bool(u() < 0.3), mole_x=u(-0.6, 0.6) * face_a, mole_y=face_y + u(-0.1, 0.6) * face_b,
    )
