"""A small IJB-shaped synthetic set, in the layout of insightface's IJB release (see evaluation.ijb_data).

Each subject has several templates; each template one or more media (a still, or a "video" of a few
frames); each image is a loose crop larger than 112 px: a rendered face scaled up by a random factor,
with its five landmarks taken from the renderer's geometry (eye centres, nose tip, mouth corners moved
by the image's pose, then by the scaling) and a detector score. The 1:1 pairs are every same-subject
template pair and a sample of different-subject ones; the 1:N files split the subjects into two
disjoint galleries (one template each) and probe with every other template, so each probe is mated
in one gallery and non-mated in the other, as in IJB-C's mixed protocol.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

from cosface.data.synthetic.identity import sample_identity
from cosface.data.synthetic.render import SIZE, render_with_landmarks
from cosface.data.synthetic.writer import GENERATOR_VERSION, MANIFEST, _encode, identity_rngs
from cosface.errors import CosfaceError
from cosface.evaluation.ijb_data import GALLERIES, TARGETS, meta_files

IMAGE_DIR = "loose_crop"
_IJB = 13                      # spawn-key domain of the IJB subjects: none of the training / LFW people
_LAYOUT = 14                   # spawn-key domain of templates, media, crops and pairs


def _loose_crop(pixels: np.ndarray, landmarks: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale a rendered face up to a loose crop; landmarks follow (pixel centres at integers)."""
    from PIL import Image

    side = int(round(SIZE * scale))
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).resize((side, side), Image.Resampling.BILINEAR)
    out = np.asarray(img, dtype=np.uint8)
    out = out[:, :, None] if out.ndim == 2 else out
    k = side / SIZE
    return out, (landmarks + 0.5) * k - 0.5


def generate_ijb(
    out_dir: str | os.PathLike,
    *,
    subjects: int = 40,
    templates_per_subject: int = 3,
    negatives_per_positive: int = 10,
    target: str = "IJBC",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Write OUT/loose_crop/<n>.jpg and OUT/meta/<target>_*.txt|csv and OUT/manifest.json; returns the manifest."""
    target = target.upper()
    if target not in TARGETS:
        raise CosfaceError(f"unknown IJB target {target!r}; expected one of {', '.join(TARGETS)}")
    for name, value, low in (("subjects", subjects, 4), ("templates per subject", templates_per_subject, 2),
                             ("negatives per positive", negatives_per_positive, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise CosfaceError(f"{name} must be an integer >= {low}, got {value!r}")
    out = Path(out_dir)
    _prepare(out, overwrite)
    layout = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_LAYOUT,)))

    tid_mid, five_pts, template_subject = [], [], {}
    images_of: dict[int, list[str]] = {}
    template_id = media_id = image_no = 0

    from tqdm import tqdm

    for s in tqdm(range(subjects), desc="synth ijb", unit="subject", file=sys.stderr, disable=not progress):
        # Per template, media sizes: mostly stills, sometimes a video of 2-4 frames.
        plan = []
        for _ in range(templates_per_subject):
            n_media = int(layout.integers(1, 4))
            plan.append([1 if layout.random() < 0.6 else int(layout.integers(2, 5)) for _ in range(n_media)])
        count = sum(sum(p) for p in plan)
        param_rng, image_rng = identity_rngs(seed, _IJB, s)
        images, landmarks = render_with_landmarks(sample_identity(param_rng), image_rng, count)
        k = 0
        for media_sizes in plan:
            template_id += 1
            template_subject[template_id] = s + 1
            images_of[template_id] = []
            for size in media_sizes:
                media_id += 1
                for _ in range(size):
                    image_no += 1
                    name = f"{image_no}.jpg"
                    pixels, quality = images[k]
                    crop, pts = _loose_crop(pixels, landmarks[k], float(layout.uniform(1.2, 2.0)))
                    (out / IMAGE_DIR / name).write_bytes(_encode(crop, quality))
                    # Detector confidence: high for most faces, low for a few, as in the release's file.
                    score = layout.uniform(0.85, 1.0) if layout.random() < 0.9 else layout.uniform(0.1, 0.6)
                    tid_mid.append(f"{name} {template_id} {media_id}")
                    five_pts.append(" ".join([name, *(f"{v:.3f}" for v in pts.reshape(-1)), f"{score:.4f}"]))
                    images_of[template_id].append(name)
                    k += 1

    files = meta_files(out, target)
    _write(files["tid_mid"], tid_mid)
    _write(files["5pts"], five_pts)
    by_subject: dict[int, list[int]] = {}
    for t, s in template_subject.items():
        by_subject.setdefault(s, []).append(t)
    positives = [(a, b) for ts in by_subject.values() for a, b in combinations(ts, 2)]
    wanted = min(negatives_per_positive * len(positives),
                 len(template_subject) * (len(template_subject) - templates_per_subject) // 2)
    negatives: set[tuple[int, int]] = set()
    all_templates = np.array(sorted(template_subject))
    while len(negatives) < wanted:
        a, b = (int(x) for x in layout.choice(all_templates, 2, replace=False))
        if template_subject[a] != template_subject[b]:
            negatives.add((min(a, b), max(a, b)))
    pairs = [f"{a} {b} 1" for a, b in positives] + [f"{a} {b} 0" for a, b in sorted(negatives)]
    _write(files["pairs"], pairs)

    # 1:N: the first template of each subject goes to gallery 1 (first half of subjects) or 2; the rest probe.
    g1, g2 = GALLERIES[target]
    half = subjects // 2
    gallery: dict[str, list[int]] = {g1: [], g2: []}
    probe = []
    for s, ts in sorted(by_subject.items()):
        gallery[g1 if s <= half else g2].append(ts[0])
        probe += ts[1:]

    def csv_rows(templates):
        return ["TEMPLATE_ID,SUBJECT_ID,FILENAME"] + [f"{t},{template_subject[t]},img/{n}"
                                                      for t in templates for n in images_of[t]]
    _write(files[f"gallery_{g1}"], csv_rows(gallery[g1]))
    _write(files[f"gallery_{g2}"], csv_rows(gallery[g2]))
    _write(files["probe"], csv_rows(probe))

    manifest = {
        "generator": "cosface synthetic faces (IJB layout)",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "ijb": {
            "target": target,
            "dir": IMAGE_DIR,
            "subjects": subjects,
            "templates": len(template_subject),
            "media": media_id,
            "images": image_no,
            "pairs": len(pairs),
            "same_pairs": len(positives),
            "gallery_templates": {g: len(v) for g, v in gallery.items()},
            "probe_templates": len(probe),
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write(path: str, lines: list[str]) -> None:
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CosfaceError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise CosfaceError(f"output directory {out} is not empty (--overwrite replaces an earlier synthetic set)")
        if not (out / MANIFEST).is_file():
            raise CosfaceError(f"refusing to overwrite {out}: it has no {MANIFEST}, so it was not written by this generator")
        for entry in (IMAGE_DIR, "meta", MANIFEST):
            p = out / entry
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
