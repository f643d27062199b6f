"""Photos in, aligned crops out: face detection, five landmarks, and alignment to the template.

Nothing of training imports this package; it is the way from a user's photos to the 112x112 crops the
models expect (`cosface detect`, `cosface align`, and photos in `embed` / `verify` / `Embedder`).
ONNX Runtime (the `detect` extra) is imported only when a detector is first built.
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
from cosface.faces.detect import (
    DETECTORS,
    KEEP,
    Face,
    aligned_faces,
    as_rgb,
    central_face,
    choose_faces,
    detect_faces,
    get_detector,
    largest_face,
    read_photo,
)

__all__ = [
    "ALIGNMENT_METHOD", "ARCFACE_112", "COSFACE_96x112", "DETECTORS", "KEEP", "TEMPLATES", "Face",
    "align_face", "aligned_faces", "alignment_matrix", "as_rgb", "central_face", "choose_faces", "detect_faces",
    "get_detector", "invert_affine", "largest_face", "read_photo", "template_points", "transform_points",
    "umeyama", "warp",
]
