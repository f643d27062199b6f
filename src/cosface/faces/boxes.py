"""Detector arithmetic in numpy: anchor priors, box and landmark decoding, non-maximum suppression.

Boxes are (x1, y1, x2, y2) floats (continuous coordinates, no "+1" pixel convention); priors are
(cx, cy, w, h) as fractions of the network input's width and height.
"""
from __future__ import annotations

import math

import numpy as np


def priors(height: int, width: int, steps=(8, 16, 32), min_sizes=((16, 32), (64, 128), (256, 512))) -> np.ndarray:
    """(P, 4) float32 anchor priors for an input of height x width, in the order a RetinaFace head emits
    them: level by level, then feature-map row, then column, then anchor size.
    """
    out = []
    for step, sizes in zip(steps, min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * step / height, (np.arange(cols) + 0.5) * step / width,
                             indexing="ij")
        k = len(sizes)
        level = np.empty((rows, cols, k, 4), np.float32)
        level[..., 0] = cx[..., None]
        level[..., 1] = cy[..., None]
        level[..., 2] = np.asarray(sizes, np.float32) / width
        level[..., 3] = np.asarray(sizes, np.float32) / height
        out.append(level.reshape(-1, 4))
    return np.concatenate(out) if out else np.empty((0, 4), np.float32)


def decode_boxes(loc: np.ndarray, prior: np.ndarray, variances=(0.1, 0.2)) -> np.ndarray:
    """(P, 4) regression offsets -> (P, 4) (x1, y1, x2, y2) in fractions of the input size (SSD encoding:
    centre offset in units of variance[0] x prior size, log size ratio in units of variance[1])."""
    centre = prior[:, :2] + loc[:, :2] * variances[0] * prior[:, 2:]
    size = prior[:, 2:] * np.exp(loc[:, 2:] * variances[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def decode_landmarks(pre: np.ndarray, prior: np.ndarray, variance: float = 0.1) -> np.ndarray:
    """(P, 10) landmark offsets -> (P, 5, 2) points in fractions of the input size."""
    pts = pre.reshape(len(pre), 5, 2)
    return prior[:, None, :2] + pts * variance * prior[:, None, 2:]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (4,) box with each of (N, 4) boxes."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its overlap with an already kept, higher-scoring box exceeds `threshold`;
    overlap is intersection over union ("union") or over the smaller box ("min", MTCNN's last stage).
    Equal scores keep the earlier box.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    boxes = np.asarray(boxes, np.float64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        if mode == "union":
            overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        else:
            overlap = inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)
