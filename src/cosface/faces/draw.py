"""An annotated copy of a photo: each face's box, score and five points, so a person can check a detection."""
from __future__ import annotations

import numpy as np

# One colour per landmark, in template order: left eye, right eye, nose, left mouth corner, right mouth corner.
POINT_COLOURS = [(255, 64, 64), (64, 160, 255), (255, 220, 0), (0, 220, 90), (220, 60, 255)]
BOX_COLOUR = (0, 255, 0)


def annotate(image: np.ndarray, faces) -> np.ndarray:
    """(H, W, 3) uint8 RGB and a list of Face -> a new (H, W, 3) uint8 image with the faces drawn on it."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    for face in faces:
        x1, y1, x2, y2 = face.box
        line = max(1, round(min(face.width, face.height) / 60))
        r = max(2.0, min(face.width, face.height) / 40)
        draw.rectangle([x1, y1, x2, y2], outline=BOX_COLOUR, width=line)
        draw.text((x1 + 2, max(0.0, y1 - 12)), f"{face.score:.3f}", fill=BOX_COLOUR)
        for (x, y), colour in zip(face.landmarks, POINT_COLOURS):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
    return np.asarray(im)
