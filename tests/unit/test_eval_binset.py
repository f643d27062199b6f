import os
import pickle

import numpy as np
import pytest
import simplejpeg

from cosface.errors import CosfaceError
from cosface.evaluation import evaluate_bin, load_bin


def face(rng, base):
    """112x112 JPEG: a per-identity 4x4 colour pattern plus a little per-image noise."""
    img = np.kron(base, np.ones((28, 28, 1))) + rng.normal(0, 6, (112, 112, 3))
    return simplejpeg.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=90, colorspace="RGB")


def pooled_embed(batch):
    """(B, 112, 112, 3) -> (B, 48): the 4x4 block means, centred."""
    b = batch.shape[0]
    return (batch.reshape(b, 4, 28, 4, 28, 3).mean((2, 4)).reshape(b, -1) - 128).astype(np.float32)


def make_bin(n_pairs=40, seed=0):
    rng = np.random.default_rng(seed)
    images, issame = [], []
    for i in range(n_pairs):
        same = i % 2 == 0
        a = rng.integers(0, 256, (4, 4, 3))
        b = a if same else rng.integers(0, 256, (4, 4, 3))
        images += [face(rng, a), face(rng, b)]
        issame.append(same)
    return images, issame


@pytest.mark.parametrize("variant", ["py3-protocol4", "py3-protocol2", "numpy-arrays"])
def test_load_and_evaluate_bin(tmp_path, variant):
    images, issame = make_bin()
    if variant == "numpy-arrays":
        payload, proto = ([np.frombuffer(b, np.uint8) for b in images], np.array(issame)), 2
    else:
        payload, proto = (images, issame), int(variant[-1])
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(payload, protocol=proto))

    bs = load_bin(path)
    assert len(bs) == 80 and bs.issame.tolist() == issame and bs.read(3) == images[3]

    report = evaluate_bin(pooled_embed, path, progress=False, batch_size=16)
    assert report.protocol == "insightface" and report.pairs == 40 and len(report.folds) == 10
    assert report.mean == 1.0 and report.auc == 1.0
    assert set(report.thresholds) <= set(np.round(np.arange(0, 4, 0.01), 2).tolist())

    ref = evaluate_bin(pooled_embed, path, protocol_name="reference", progress=False)
    assert ref.protocol == "reference" and ref.mean == 1.0 and len(ref.folds) == 10


@pytest.mark.parametrize("proto", [2, 3, 4, 5])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_every_pickle_protocol_with_bytes_or_numpy_arrays(tmp_path, proto, as_numpy):
    # Protocol 5 (pickle.HIGHEST_PROTOCOL) writes a numpy array as numpy's _frombuffer(buffer, dtype, shape, order).
    images = [b"\xff\xd8one", b"\xff\xd8two!", b"\xff\xd8three", b"\xff\xd8four"]
    issame = [True, False]
    payload = ([np.frombuffer(b, np.uint8).copy() for b in images], np.array(issame)) if as_numpy else (images, issame)
    path = tmp_path / "set.bin"
    path.write_bytes(pickle.dumps(payload, protocol=proto))
    bs = load_bin(path)
    assert bs.images == images and bs.issame.tolist() == issame


def test_frombuffer_only_for_plain_arrays(tmp_path):
    path = tmp_path / "frombuffer.bin"
    # numpy.core.numeric._frombuffer(b"AAAAAAAA", "O", (1,), "C"): an object array made from raw pointer bytes.
    path.write_bytes(b"\x80\x02cnumpy.core.numeric\n_frombuffer\n(C\x08AAAAAAAAX\x01\x00\x00\x00OK\x01\x85"
                     b"X\x01\x00\x00\x00CtR.")
    with pytest.raises(CosfaceError, match="frombuffer.bin is not a readable .*_frombuffer is accepted only"):
        load_bin(path)


def test_python2_style_byte_strings(tmp_path):
    # Protocol-2 SHORT_BINSTRING opcodes, as Python 2 wrote str: they load as bytes with encoding="bytes".
    jpeg = make_bin(1)[0][0]
    assert len(jpeg) > 255
    body = b"\x80\x02(]q\x00(T" + len(jpeg).to_bytes(4, "little") + jpeg + b"T" + len(jpeg).to_bytes(4, "little") \
        + jpeg + b"e]q\x01\x88at."
    path = tmp_path / "py2.bin"
    path.write_bytes(body)
    bs = load_bin(path)
    assert bs.images == [jpeg, jpeg] and bs.issame.tolist() == [True]


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([Evil(marker), b"x"], [True])))
    with pytest.raises(CosfaceError, match=r"evil.bin tries to load a forbidden global \((posix|os)\.system\)"):
        load_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload,match",
    [
        ((np.array([b"a", 1], dtype=object), [True]), "holds Python objects|not a readable"),
        ([b"a", b"b", b"c"], "must hold a pair"),
        (([b"a", "text"], [True]), "image 1 is str"),
        (([b"a", b"b"], [0.5]), r"issame\[0\]"),
        (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
    ],
)
def test_malformed_bins_are_reported(tmp_path, payload, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CosfaceError, match=match):
        load_bin(path)


def test_codecs_encode_only_for_latin1(tmp_path):
    path = tmp_path / "codec.bin"
    # _codecs.encode("eJw...", "zlib_codec") would decompress arbitrary data; only latin1 is Python 3's bytes path.
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x06\x00\x00\x00base64\x86R.")
    with pytest.raises(CosfaceError, match="only as encode"):
        load_bin(path)
    path.write_bytes(b"truncated\x80")
    with pytest.raises(CosfaceError, match="not a readable verification .bin"):
        load_bin(path)


def test_insightface_protocol_sums_image_and_mirror_and_pairs_consecutive_images(tmp_path):
    # 43 pairs (folds of 5, 5, 5, 4, ...), a quarter of the flags flipped so thresholds and folds matter.
    images, issame = make_bin(43, seed=1)
    issame = [s != (i % 4 == 1) for i, s in enumerate(issame)]
    path = tmp_path / "set.bin"
    path.write_bytes(pickle.dumps((images, issame)))
    report = evaluate_bin(pooled_embed, path, progress=False, batch_size=7)

    # Independently: decode, embed image and mirror, sum in float64, L2-normalise, pair 2i with 2i+1.
    pixels = np.stack([simplejpeg.decode_jpeg(b, colorspace="RGB") for b in images])
    e = pooled_embed(pixels).astype(np.float64) + pooled_embed(pixels[:, :, ::-1]).astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    dist = np.sum((e[0::2] - e[1::2]) ** 2, axis=1)
    grid = np.arange(0, 4, 0.01)
    same = np.array(issame)
    bounds = np.cumsum([0] + [5] * 3 + [4] * 7)
    for k in range(10):
        test = np.zeros(43, bool)
        test[bounds[k]:bounds[k + 1]] = True
        train_acc = [np.mean((dist[~test] < t) == same[~test]) for t in grid]
        t = grid[int(np.argmax(train_acc))]
        assert report.thresholds[k] == t
        assert report.folds[k] == np.mean((dist[test] < t) == same[test])
    np.testing.assert_allclose(report.scores, 1 - dist / 2, atol=1e-12)
