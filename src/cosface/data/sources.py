"""Sources: where encoded training images and their labels come from.

A source is a sequence of samples: `len(src)`, `src.labels` (int64 array, one class index per
sample), `src.read(i)` -> encoded image bytes, `src.describe(i)` -> a human name for sample i (a path,
or a record number) used in warnings, and `src.class_names` (list of str, index = class). The
dataset decodes; sources only fetch bytes, so a packed file and a folder behave the same.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}


class ImageFolderSource:
    """`root/<class>/<image>`; class index = position of the folder name in the sorted list (string sort).

    Every regular file in a class folder is a sample (hidden files excepted): a file that turns out
    not to be an image is skipped and reported at decode time, like a corrupt JPEG, rather than
    silently ignored here.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.exists():
            raise CosfaceError(f"data directory {self.root} does not exist")
        if not self.root.is_dir():
            raise CosfaceError(f"data path {self.root} is not a directory")
        classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise CosfaceError(f"data directory {self.root} has no class folders (expected {self.root}/<class>/<image>)")
        paths: list[str] = []
        labels: list[int] = []
        for idx, name in enumerate(classes):
            files = sorted(
                e.name for e in os.scandir(self.root / name) if e.is_file() and not e.name.startswith(".")
            )
            if not files:
                raise CosfaceError(f"class folder {self.root / name} has no images")
            paths.extend(f"{name}/{f}" for f in files)
            labels.extend([idx] * len(files))
        self.class_names = classes
        self._paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._paths)

    def read(self, i: int) -> bytes:
        with open(self.root / self._paths[i], "rb") as f:
            return f.read()

    def describe(self, i: int) -> str:
        return str(self.root / self._paths[i])


def open_source(path: str | os.PathLike):
    """Pick the source for a data directory: packed RecordIO (train.rec + train.idx) or an image folder."""
    p = Path(path)
    if (p / "train.rec").exists() or (p / "train.idx").exists():
        from cosface.data.recordio import RecordSource

        return RecordSource(p)
    return ImageFolderSource(p)
