import io

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from cosface.data.dataset import BatchDataset, EpochSampler, Plan, epoch_order, make_loader
from cosface.data.sources import ImageFolderSource, open_source
from cosface.errors import CosfaceError
from cosface.preprocess import decode_image, normalize


def _jpeg(value, size=112):
    return simplejpeg.encode_jpeg(np.full((size, size, 3), value, np.uint8), quality=95)


def test_labels_follow_string_sort_of_folder_names(tmp_path):
    for name in ["0", "1", "10", "100", "2"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.jpg").write_bytes(_jpeg(10))
    src = open_source(tmp_path)
    assert src.class_names == ["0", "1", "10", "100", "2"]
    assert src.labels.tolist() == [0, 1, 2, 3, 4]
    assert src.describe(3).endswith("100/a.jpg")


def test_missing_empty_and_classless_directories_are_clear_errors(tmp_path):
    with pytest.raises(CosfaceError, match="does not exist"):
        ImageFolderSource(tmp_path / "nope")
    with pytest.raises(CosfaceError, match="has no class folders"):
        ImageFolderSource(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(_jpeg(1))
    (tmp_path / "b").mkdir()
    with pytest.raises(CosfaceError, match=r"class folder .*/b has no images"):
        ImageFolderSource(tmp_path)


def test_decoder_converts_modes_and_resizes():
    gray = simplejpeg.encode_jpeg(np.full((112, 112, 1), 77, np.uint8), colorspace="GRAY")
    out = decode_image(gray)
    assert out.shape == (112, 112, 3) and abs(int(out[50, 50, 0]) - 77) <= 2 and (out[..., 0] == out[..., 2]).all()
    for mode in ("P", "RGBA", "L", "LA"):
        buf = io.BytesIO()
        Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).convert(mode).save(buf, "PNG")
        assert decode_image(buf.getvalue()).shape == (112, 112, 3)
    rgb = np.zeros((112, 112, 3), np.uint8)
    rgb[..., 0] = 255  # pure red must stay in channel 0 (RGB order)
    out = decode_image(simplejpeg.encode_jpeg(rgb, quality=100))
    assert out[..., 0].min() > 240 and out[..., 2].max() < 15
    for bad in (b"", b"not an image", _jpeg(5)[:200]):
        with pytest.raises(ValueError):
            decode_image(bad)


def test_normalize_is_minus_128_over_128_in_nchw():
    x = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # (1, 1, 1, 3) NHWC
    y = normalize(x)
    assert y.shape == (1, 3, 1, 1)
    assert y.flatten().tolist() == [-1.0, 0.0, 127 / 128]


def test_sampler_is_deterministic_drops_last_and_shards_like_accumulation():
    plan1 = Plan(num_samples=50, batch_size=4, world_size=1, accumulate=2)
    single = [(i.tolist(), f.tolist()) for i, f in EpochSampler(plan1, rank=0, seed=3, flip=True)]
    assert len(single) == 6 * 2  # 50 // 8 steps, 2 micro-batches each; the last 2 images are dropped
    plan2 = Plan(num_samples=50, batch_size=4, world_size=2, accumulate=1)
    r0 = [(i.tolist(), f.tolist()) for i, f in EpochSampler(plan2, rank=0, seed=3, flip=True)]
    r1 = [(i.tolist(), f.tolist()) for i, f in EpochSampler(plan2, rank=1, seed=3, flip=True)]
    assert single[0::2] == r0 and single[1::2] == r1
    seen = [i for b, _ in single for i in b]
    assert len(set(seen)) == 48
    other = EpochSampler(plan1, rank=0, seed=3, flip=True)
    other.set_epoch(1)
    assert [i.tolist() for i, _ in other] != [b for b, _ in single]  # reshuffled every epoch
    other.set_epoch(0, start_step=4)
    assert [(i.tolist(), f.tolist()) for i, f in other] == single[8:]
    noflip = EpochSampler(plan1, rank=0, seed=3, flip=False)
    assert not any(any(f) for _, f in noflip)
    perm, flips = epoch_order(10000, 0, 0)
    assert 0.45 < flips.float().mean().item() < 0.55


def test_unreadable_files_are_replaced_and_reported(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.jpg").write_bytes(_jpeg(10))
    (tmp_path / "a" / "1.jpg").write_bytes(b"")                    # zero bytes
    (tmp_path / "a" / "2.txt").write_text("notes")                  # not an image
    (tmp_path / "a" / "3.jpg").write_bytes(_jpeg(30)[:100])         # truncated JPEG
    (tmp_path / "a" / "4.jpg").write_bytes(_jpeg(40))
    ds = BatchDataset(ImageFolderSource(tmp_path), 112)
    batch = ds[(np.arange(5), np.zeros(5, bool))]
    assert batch["images"].shape == (5, 112, 112, 3) and batch["images"].dtype == torch.uint8
    means = batch["images"].float().mean(dim=(1, 2, 3)).round().tolist()
    assert means[0] == pytest.approx(10, abs=2) and means[1:4] == [means[4]] * 3  # 1, 2, 3 replaced by 4
    names = " ".join(batch["bad"])
    assert "1.jpg" in names and "2.txt" in names and "3.jpg" in names and len(batch["bad"]) == 3


def test_loader_with_workers_gives_the_same_batches(image_folder):
    src = ImageFolderSource(image_folder)
    plan = Plan(len(src), batch_size=4)
    out = []
    for workers in (0, 2):
        loader = make_loader(src, plan, rank=0, seed=1, flip=True, image_size=112, workers=workers)
        loader.sampler.set_epoch(2)
        out.append([(b["images"].clone(), b["labels"].clone(), b["flips"].clone()) for b in loader])
    assert len(out[0]) == len(src) // 4
    for (a, b) in zip(*out):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
