"""Test data helpers importable by any test module (conftest.py files share one module name, so tests
import helpers from here rather than from `conftest`)."""
import numpy as np


def write_image_folder(root, classes=4, per_class=6, size=112, seed=0):
    """Class-coloured noise JPEGs: root/<class>/<i>.jpg. Each class has its own mean colour so a model can learn it."""
    import simplejpeg

    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"c{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, size=3)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
            (d / f"{i:03d}.jpg").write_bytes(simplejpeg.encode_jpeg(img, quality=90))
    return root
