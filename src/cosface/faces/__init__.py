"""Photos in, aligned crops out: face detection, five landmarks, and alignment to the template.

Nothing of training imports this package; it is the way from a user's photos to the 112x112 crops the
models expect (`cosface detect`, `cosface align`, and photos in `embed` / `verify` / `Embedder`).
"""
from cosface.faces.align import (
    ALIGNMENT_METHOD,
    ARCFACE_112,
    COSFACE_96x112,
    TEMPLATES,
    align_face,
    alignment_matrix,
    invert_affine,
    template_points,
    transform_points,
    umeyama,
    warp,
)

__all__ = [
    "ALIGNMENT_METHOD", "ARCFACE_112", "COSFACE_96x112", "TEMPLATES", "align_face", "alignment_matrix",
    "invert_affine", "template_points", "transform_points", "umeyama", "warp",
]
