"""Model files, metadata and the Embedder, on hand-built ONNX graphs whose outputs are known exactly.

The graph is GlobalAveragePool + Flatten: it returns each channel's mean of the *normalised* input,
so a constant-colour image (r, g, b) must embed to ((r - mean) / std, ...) in the channel order the
metadata names. That pins down that images are prepared as the metadata says.
"""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cosface.errors import CosfaceError
from cosface.export import export_model
from cosface.inference import FALLBACK_THRESHOLD, Embedder, ModelInfo, infer_lfw, list_images, model_kind
from cosface.preprocess import Preprocessing, resize

INFO = ModelInfo(Preprocessing(), embedding_size=3, backbone="channel-means", num_classes=7, cosface_version="0.1.0")


def pooling_onnx(path, meta: dict | None, batch="batch", size=112, width=3):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["embedding"])],
        "pool",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, width])],   # width: as declared
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def solid(rgb, h=112, w=112):
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def write_png(path, img):
    from PIL import Image

    Image.fromarray(img).save(path)
    return path


def test_features_follow_the_metadata_mean_std_and_channel_order(tmp_path):
    rgb = (200, 100, 40)
    plain = Embedder(pooling_onnx(tmp_path / "a.onnx", INFO.to_metadata()))
    # (float32 pooling over 12,544 pixels: ~1e-5 of rounding)
    np.testing.assert_allclose(plain.features(solid(rgb)[None]), [[72 / 128, -28 / 128, -88 / 128]], atol=1e-4)

    meta = {**INFO.to_metadata(), "channel_order": "BGR", "mean": "100.0", "std": "50.0"}
    bgr = Embedder(pooling_onnx(tmp_path / "b.onnx", meta))
    assert bgr.preprocessing == Preprocessing(channel_order="BGR", mean=100.0, std=50.0)
    np.testing.assert_allclose(bgr.features(solid(rgb)[None]), [[-60 / 50, 0.0, 100 / 50]], atol=1e-4)


def test_embed_is_normalised_flip_concatenation_and_accepts_paths_arrays_pil(tmp_path):
    from PIL import Image

    emb = Embedder(pooling_onnx(tmp_path / "m.onnx", INFO.to_metadata()), batch_size=2)
    img = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    f = (img.reshape(-1, 3).mean(0) - 128) / 128   # channel means: the mirror gives the same f
    want = np.concatenate([f, f]) / np.linalg.norm(np.concatenate([f, f]))
    png = write_png(tmp_path / "x.png", img)
    rows = emb.embed([str(png), img, Image.fromarray(img), png])
    assert rows.shape == (4, 6) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, np.tile(want, (4, 1)), atol=1e-6)
    assert emb.embed(img, flip=False).shape == (1, 3)
    np.testing.assert_allclose(np.linalg.norm(emb.embed(img, flip=False)), 1.0, atol=1e-6)
    assert emb.embed(np.stack([img, img])).shape == (2, 6)              # an NHWC array is a batch


def test_similarity_of_known_colours(tmp_path):
    emb = Embedder(pooling_onnx(tmp_path / "m.onnx", INFO.to_metadata()))
    a, b = solid((255, 128, 128)), solid((128, 255, 128))    # features (127/128, 0, 0) and (0, 127/128, 0)
    assert emb.similarity(a, a) == pytest.approx(1.0, abs=1e-6)
    assert emb.similarity(a, b) == pytest.approx(0.0, abs=1e-6)
    c = solid((255, 255, 128))
    assert emb.similarity(a, c) == pytest.approx(2 ** -0.5, abs=1e-6)
    np.testing.assert_allclose(emb.similarity([a, a], [b, c]), [0.0, 2 ** -0.5], atol=1e-6)
    with pytest.raises(CosfaceError, match="as many images on each side"):
        emb.similarity([a, a], [b])


def test_threshold_from_metadata_else_documented_fallback(tmp_path):
    ev = {"protocol": "reference", "mean": 0.95, "std": 0.01, "thresholds": [0.2, 0.3], "dataset": "lfw"}
    info = ModelInfo(Preprocessing(), 3, "channel-means", 7, "0.1.0", threshold=0.25, evaluation=ev)
    emb = Embedder(pooling_onnx(tmp_path / "t.onnx", info.to_metadata()))
    assert emb.info == info                                   # the evaluation survives as JSON
    value, source = emb.default_threshold()
    assert value == 0.25 and "model metadata" in source and "2 fold thresholds" in source and "95.00 %" in source
    a, b = solid((255, 128, 128)), solid((255, 255, 128))     # similarity 0.707
    v = emb.verify(a, b)
    assert v.same and v.threshold == 0.25
    assert not emb.verify(a, b, threshold=0.8).same

    bare = Embedder(pooling_onnx(tmp_path / "f.onnx", INFO.to_metadata()))
    value, source = bare.default_threshold()
    assert value == FALLBACK_THRESHOLD and source.startswith("fallback") and "no evaluation" in source


def test_fixed_batch_graph_is_fed_in_chunks(tmp_path):
    emb = Embedder(pooling_onnx(tmp_path / "one.onnx", INFO.to_metadata(), batch=1))
    colours = [(i * 40, 255 - i * 40, 128) for i in range(5)]
    got = emb.features(np.stack([solid(c) for c in colours]))
    np.testing.assert_allclose(got, (np.array(colours) - 128) / 128, atol=1e-6)


def test_wrong_size_image_is_resized_with_a_note(tmp_path, capsys):
    # without face detection (photos are detected and aligned by default: tests/unit/test_faces_embed.py)
    emb = Embedder(pooling_onnx(tmp_path / "m.onnx", INFO.to_metadata()), detect=False)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (150, 130, 3), dtype=np.uint8)
    path = write_png(tmp_path / "big.png", big)
    got = emb.embed([path, big])
    err = capsys.readouterr().err
    assert "2 of 2 image(s) are not 112x112" in err and "big.png (130x150)" in err and "image #1 (130x150)" in err
    np.testing.assert_allclose(got, np.repeat(emb.embed(resize(big, 112)), 2, axis=0), atol=1e-6)
    assert capsys.readouterr().err == ""                       # a right-sized image: no note


def test_bad_images_name_the_file(tmp_path):
    emb = Embedder(pooling_onnx(tmp_path / "m.onnx", INFO.to_metadata()))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    with pytest.raises(CosfaceError, match=r"notes\.jpg: not an image"):
        emb.embed([solid((1, 2, 3)), text])
    with pytest.raises(CosfaceError, match="cannot read image .*missing.png"):
        emb.embed(str(tmp_path / "missing.png"))
    with pytest.raises(CosfaceError, match=r"image #0: arrays must be .* got float32 \(112, 112, 3\)"):
        emb.embed(np.zeros((112, 112, 3), np.float32))
    with pytest.raises(CosfaceError, match="image #0: expected a file path"):
        emb.embed([42])


def test_list_images_walks_directories_and_keeps_order(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.png", "d/a.jpg", "d/sub/c.PNG"):
        write_png(tmp_path / name, solid((1, 2, 3)))
    (tmp_path / "d" / "readme.txt").write_text("skip me")
    single = write_png(tmp_path / "z.png", solid((1, 2, 3)))
    got = list_images([single, tmp_path / "d"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["z.png", "d/a.jpg", "d/b.png", "d/sub/c.PNG"]
    with pytest.raises(CosfaceError, match="does not exist"):
        list_images([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CosfaceError, match="holds no image files"):
        list_images([tmp_path / "empty"])


def test_foreign_onnx_names_the_missing_metadata(tmp_path):
    with pytest.raises(CosfaceError, match="is not a cosface model: its metadata has none of the keys cosface_format"):
        Embedder(pooling_onnx(tmp_path / "foreign.onnx", {"producer": "someone"}))
    partial = {k: v for k, v in INFO.to_metadata().items() if k not in ("mean", "layout")}
    with pytest.raises(CosfaceError, match="model metadata lacks mean, layout$"):
        Embedder(pooling_onnx(tmp_path / "partial.onnx", partial))
    with pytest.raises(CosfaceError, match="metadata std = 'wide' is not a number"):
        Embedder(pooling_onnx(tmp_path / "bad.onnx", {**INFO.to_metadata(), "std": "wide"}))
    with pytest.raises(CosfaceError, match="graph's input input has shape .* metadata says \\(N, 3, 96, 96\\)"):
        Embedder(pooling_onnx(tmp_path / "size.onnx", {**INFO.to_metadata(), "input_size": "96"}))


def test_files_are_told_apart_by_content_not_extension(tmp_path):
    onnx_as_pt = pooling_onnx(tmp_path / "model.pt", INFO.to_metadata())
    assert model_kind(onnx_as_pt) == "onnx"
    ckpt = tmp_path / "model.onnx"
    torch.save({"format": "cosface-checkpoint"}, ckpt)
    assert model_kind(ckpt) == "checkpoint"
    script = tmp_path / "script.onnx"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(script))
    assert model_kind(script) == "torchscript"

    with pytest.raises(CosfaceError, match=r"model\.onnx is a cosface training checkpoint, not an ONNX model; "
                                           r"`cosface infer` runs ONNX exports"):
        infer_lfw(ckpt, tmp_path)
    with pytest.raises(CosfaceError, match=r"model\.pt is an ONNX model, not a cosface training checkpoint"):
        export_model(onnx_as_pt, tmp_path / "out.onnx")
    with pytest.raises(CosfaceError, match="script.onnx is not a cosface model: its metadata has none"):
        Embedder(script)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(CosfaceError, match="junk.bin is not a model file: .*ONNX Runtime cannot load it"):
        Embedder(junk)
    with pytest.raises(CosfaceError, match="does not exist"):
        Embedder(tmp_path / "absent.onnx")


class Halves(torch.nn.Module):
    """(N, 3, H, W) -> (N, 2): mean red of the left half and of the right half; sees a mirror."""

    def forward(self, x):
        w = x.shape[3] // 2
        return torch.stack([x[:, 0, :, :w].mean((1, 2)), x[:, 0, :, w:].mean((1, 2))], 1)


def test_embed_row_is_image_then_mirror(tmp_path):
    path = tmp_path / "halves.ts"
    meta = {**INFO.to_metadata(), "embedding_size": "2", "backbone": "halves"}
    torch.jit.save(torch.jit.script(Halves()), str(path), _extra_files={"cosface.json": json.dumps(meta)})
    emb = Embedder(path, device="cpu")
    img = solid((250, 0, 0))
    img[:, 56:, 0] = 10
    f, m = np.array([122, -118]) / 128, np.array([-118, 122]) / 128
    want = np.concatenate([f, m]) / np.linalg.norm(np.concatenate([f, m]))
    np.testing.assert_allclose(emb.embed(img)[0], want, atol=1e-6)
    np.testing.assert_allclose(emb.embed(img, flip=False)[0], f / np.linalg.norm(f), atol=1e-6)


def test_torchscript_metadata_is_read_from_its_extra_file(tmp_path):
    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(ChannelMeans()), str(path),
                   _extra_files={"cosface.json": json.dumps({**INFO.to_metadata(), "channel_order": "BGR"})})
    emb = Embedder(path, device="cpu")
    assert emb.kind == "torchscript" and emb.info.num_classes == 7
    np.testing.assert_allclose(emb.features(solid((200, 100, 40))[None]), [[-88 / 128, -28 / 128, 72 / 128]], atol=1e-6)


def test_importing_cosface_is_light_and_onnx_runs_without_torch(tmp_path):
    model = pooling_onnx(tmp_path / "m.onnx", INFO.to_metadata())
    code = ("import sys, numpy as np, cosface; "
            "heavy = [m for m in ('torch', 'onnxruntime') if m in sys.modules]; assert not heavy, heavy; "
            f"e = cosface.Embedder({str(model)!r}).embed(np.zeros((112, 112, 3), np.uint8)); "
            "assert e.shape == (1, 6); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def tiny_checkpoint(path, evaluation: dict | None = None):
    """A cosface checkpoint of an untrained 16x16 MobileFaceNet: cheap to export."""
    from cosface.backbones import build_backbone
    from cosface.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, versions
    from cosface.config import Config

    model = build_backbone("mobilefacenet", input_size=16)
    cfg = Config().replace(**{"model.backbone": "mobilefacenet", "model.input_size": 16})
    atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), "config": cfg.to_dict(),
                 "num_classes": 0, "class_names": [], "preprocessing": Preprocessing(size=16).to_dict(),
                 "backbone": model.state_dict(), "head": {}, **({"evaluation": evaluation} if evaluation else {})}, path)
    return path


def test_export_onto_its_own_checkpoint_is_refused_and_the_checkpoint_survives(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "epoch_001.pt")
    before = ckpt.read_bytes()
    (tmp_path / "link.pt").symlink_to(ckpt)
    for out in (ckpt, tmp_path / "link.pt", tmp_path / "." / "epoch_001.pt"):
        with pytest.raises(CosfaceError, match=f"output {out} is the checkpoint being exported"):
            export_model(ckpt, out, fmt="torchscript")
    assert ckpt.read_bytes() == before and model_kind(ckpt) == "checkpoint"
    assert export_model(ckpt, tmp_path / "model.pt", fmt="torchscript").max_abs_diff == 0



def test_export_of_a_file_that_is_no_model_does_not_call_it_an_onnx_model(tmp_path):
    for name, data in (("page.pt", b"<html><body>404 Not Found</body></html>"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CosfaceError) as e:
            export_model(tmp_path / name, tmp_path / "out.onnx")
        assert str(tmp_path / name) in str(e.value) and "is an ONNX model" not in str(e.value)
        assert "not a cosface training checkpoint" in str(e.value)
    assert not (tmp_path / "out.onnx").exists()


def test_verify_refuses_a_threshold_that_is_not_a_cosine(tmp_path):
    from cosface.cli import main

    model = pooling_onnx(tmp_path / "m.onnx", INFO.to_metadata())
    emb = Embedder(model)
    a, b = solid((255, 128, 128)), solid((128, 255, 128))    # similarity 0: 'different' at any threshold >= 0
    for bad in (float("nan"), float("inf"), 1.5, -2.0):
        with pytest.raises(CosfaceError, match=f"threshold is a cosine, in -1..1; got {bad}"):
            emb.verify(a, b, threshold=bad)
    assert emb.verify(a, b, threshold=-1.0).same and not emb.verify(a, b, threshold=1.0).same
    pa, pb = write_png(tmp_path / "a.png", a), write_png(tmp_path / "b.png", b)
    assert main(["verify", "--model", str(model), str(pa), str(pb), "--threshold", "nan"]) == 2   # an error, not a verdict


def test_files_from_before_the_alignment_and_far_keys_load_with_the_documented_defaults(tmp_path):
    # The first key set (cosface_format 1): no alignment_template / alignment_method, and an evaluation
    # without verify_threshold / far_thresholds (its threshold the mean of the fold thresholds).
    ev = {"protocol": "reference", "mean": 0.9, "std": 0.02, "thresholds": [0.2, 0.4], "dataset": "lfw"}
    meta = {k: v for k, v in ModelInfo(Preprocessing(), 3, "channel-means", 7, "0.1.0", threshold=0.3000000000000001,
                                       evaluation=ev).to_metadata().items() if not k.startswith("alignment_")}

    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    script = tmp_path / "old.ts"
    torch.jit.save(torch.jit.script(ChannelMeans()), str(script), _extra_files={"cosface.json": json.dumps(meta)})
    for path in (pooling_onnx(tmp_path / "old.onnx", meta), script):
        emb = Embedder(path, device="cpu")
        assert (emb.info.alignment_template, emb.info.alignment_method) == ("arcface", "umeyama-similarity-5pt+bilinear")
        value, source = emb.default_threshold()
        assert value == 0.3000000000000001 and "mean of 2 fold thresholds" in source
        with pytest.raises(CosfaceError, match="holds no threshold for FAR 0.001 \\(it has: none\\)"):
            emb.threshold_at_far(0.001)


def test_metadata_embedding_size_that_is_not_the_output_width_is_refused_naming_the_file(tmp_path):
    wrong = {**INFO.to_metadata(), "embedding_size": "4"}          # the models output 3 values per image
    # ONNX: refused on load, from the output shape the graph declares (ONNX Runtime infers a symbolic one)
    for name, width in (("declared.onnx", 3), ("symbolic.onnx", "width")):
        with pytest.raises(CosfaceError, match=f"{name}: the model outputs 3 values per image, but its "
                                               f"metadata says embedding_size = 4$"):
            Embedder(pooling_onnx(tmp_path / name, wrong, width=width))

    class ChannelMeans(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    script = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(ChannelMeans()), str(script), _extra_files={"cosface.json": json.dumps(wrong)})
    emb = Embedder(script, device="cpu")                                # TorchScript: known only on a run
    for run in (lambda: emb.embed(solid((1, 2, 3))), lambda: emb.features(solid((1, 2, 3))[None])):
        with pytest.raises(CosfaceError, match=r"m\.ts: the model outputs 3 values per image, but its "
                                               r"metadata says embedding_size = 4$"):
            run()


def test_export_refuses_metadata_whose_embedding_size_is_not_the_graphs_output(tmp_path, monkeypatch, capsys):
    from cosface.cli import main

    ckpt = tiny_checkpoint(tmp_path / "epoch_001.pt")            # MobileFaceNet: 128 values per image
    real = ModelInfo.from_checkpoint
    monkeypatch.setattr(ModelInfo, "from_checkpoint",
                        classmethod(lambda cls, c: dataclasses.replace(real(c), embedding_size=64)))
    out = tmp_path / "model.pt"
    assert main(["export", "--ckpt", str(ckpt), "-o", str(out), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outputs shape (3, 128) for 3 images" in err, err
    assert "embedding_size = 64" in err and f"{out} not written" in err
    assert not out.exists() and not list(tmp_path.glob(".model.pt.*"))


def cast_pooling_onnx(path, meta: dict | None, input_type, output_type, batch="batch"):
    """The pooling graph behind Casts: input and output of the given element types, float32 inside.
    It flattens with a Reshape to a computed (N, -1), so ONNX Runtime cannot infer the output width."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array([v], np.int64), name) for name, v in (("zero", 0), ("one", 1), ("all", -1))]
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
         helper.make_node("Shape", ["pooled"], ["shape"]),
         helper.make_node("Slice", ["shape", "zero", "one"], ["n"]),
         helper.make_node("Concat", ["n", "all"], ["n_by_all"], axis=0),
         helper.make_node("Reshape", ["pooled", "n_by_all"], ["flat"]),
         helper.make_node("Cast", ["flat"], ["embedding"], to=output_type)],
        "cast-pool",
        [helper.make_tensor_value_info("input", input_type, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", output_type, [batch, "width"])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def test_a_float16_model_is_fed_float16_and_its_outputs_come_back_float32(tmp_path):
    from onnx import TensorProto

    rgb = (200, 100, 40)
    want = [[72 / 128, -28 / 128, -88 / 128]]      # float16 keeps ~3 decimal digits of these
    half = TensorProto.FLOAT16
    # a dynamic batch, and a fixed batch of 2 fed in chunks (3 images: the last chunk padded)
    for batch, name in (("batch", "half.onnx"), (2, "half2.onnx")):
        emb = Embedder(cast_pooling_onnx(tmp_path / name, INFO.to_metadata(), half, half, batch=batch))
        got = emb.features(np.stack([solid(rgb)] * 3))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want * 3, atol=2e-3)
    # without cosface metadata (an insightface-style model): its width is found by running it, in float16
    foreign = Embedder(cast_pooling_onnx(tmp_path / "foreign.onnx", None, half, half),
                       preprocessing=Preprocessing(mean=128.0, std=128.0))
    assert foreign.info.embedding_size == 3
    np.testing.assert_allclose(foreign.features(solid(rgb)[None]), want, atol=2e-3)
    assert foreign.embed(solid(rgb)).dtype == np.float32


def test_a_model_whose_input_is_not_a_float_is_refused_in_one_line(tmp_path):
    from onnx import TensorProto

    path = cast_pooling_onnx(tmp_path / "quant.onnx", INFO.to_metadata(), TensorProto.UINT8, TensorProto.FLOAT)
    with pytest.raises(CosfaceError, match=r"quant\.onnx: the graph's input input is tensor\(uint8\); cosface feeds "
                                           r"normalised images to tensor\(float\), tensor\(float16\), tensor\(double\) inputs only$"):
        Embedder(path)


def test_an_evaluation_with_nan_figures_exports_as_strict_json_with_nulls(tmp_path):
    nan = float("nan")
    ev = {"protocol": "reference", "mean": nan, "std": nan, "thresholds": [0.2, nan], "dataset": "lfw",
          "verify_threshold": 0.25, "far_thresholds": {"0.1": nan, "0.01": float("inf"), "0.001": None}}
    ckpt = tiny_checkpoint(tmp_path / "degenerate.pt", evaluation=ev)
    out = export_model(ckpt, tmp_path / "model.pt", fmt="torchscript").path     # the round-trip check passes

    extra = {"cosface.json": ""}
    torch.jit.load(str(out), _extra_files=extra)

    def strict(token):
        raise AssertionError(f"{token} is not JSON")

    written = json.loads(json.loads(extra["cosface.json"])["evaluation"], parse_constant=strict)
    assert written == {**ev, "mean": None, "std": None, "thresholds": [0.2, None],
                       "far_thresholds": {"0.1": None, "0.01": None, "0.001": None}}
    emb = Embedder(out, device="cpu")
    assert emb.info.evaluation == written
    value, source = emb.default_threshold()
    assert value == 0.25 and source.endswith("over all pairs of its LFW evaluation on lfw")
    with pytest.raises(CosfaceError, match="FAR 0.1 could not be measured"):
        emb.threshold_at_far(0.1)


def test_a_nan_far_threshold_in_a_checkpoint_is_refused_naming_the_far_and_the_file(tmp_path, capsys):
    """A NaN in `far_thresholds` (a degenerate evaluation) is not measurable, as null is: refused in one line
    naming the FAR and the file, never a NaN threshold that calls every pair "different"."""
    from cosface.cli import main

    ev = {"protocol": "reference", "mean": 0.5, "std": 0.0, "thresholds": [0.2], "dataset": "lfw",
          "verify_threshold": 0.25, "far_thresholds": {"0.1": float("nan"), "0.01": 0.3, "0.001": None}}
    ckpt = tiny_checkpoint(tmp_path / "epoch_001.pt", evaluation=ev)
    emb = Embedder(ckpt, device="cpu", detect=False)
    with pytest.raises(CosfaceError, match=f"^{ckpt}: FAR 0.1 could not be measured on its evaluation's pairs "
                                           f"\\(its stored threshold is nan, not a number\\)"):
        emb.threshold_at_far(0.1)
    assert emb.threshold_at_far(0.01) == 0.3
    a, b = (write_png(tmp_path / f"{n}.png", solid(c, 16, 16)) for n, c in (("a", (255, 128, 128)), ("b", (250, 130, 128))))
    capsys.readouterr()
    assert main(["verify", "--model", str(ckpt), str(a), str(b), "--far", "0.1", "--no-detect"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{ckpt}: FAR 0.1 could not be measured" in err[0]


@pytest.mark.parametrize("device", ["gpu", "cuda:", "CPU", "cuda:x"])
def test_embedder_refuses_a_device_it_does_not_know_in_one_line(tmp_path, device):
    """As --device does: torch would raise its own RuntimeError and ONNX Runtime would run the word as "auto"."""
    onnx_path = pooling_onnx(tmp_path / "m.onnx", INFO.to_metadata())
    ckpt_path = tiny_checkpoint(tmp_path / "m.pt")
    for path in (onnx_path, ckpt_path):
        with pytest.raises(CosfaceError, match="device must be auto, cpu, cuda or cuda:N"):
            Embedder(path, device=device)


@pytest.mark.parametrize("device, want", [("cuda:1", [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]),
                                          ("cuda", [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]),
                                          ("auto", [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]),
                                          ("cpu", ["CPUExecutionProvider"])])
def test_an_onnx_model_runs_on_the_gpu_the_device_names(tmp_path, monkeypatch, device, want):
    # ONNX Runtime with a CUDA provider is stood in for: what matters is which providers the session is given.
    import cosface.optional
    from cosface.inference import models

    seen = []

    class Stop(Exception):
        pass

    class FakeOrt:
        SessionOptions = type("SessionOptions", (), {})

        @staticmethod
        def get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        @staticmethod
        def InferenceSession(path, opts, providers):
            seen.append(providers)
            raise Stop("stop here")

    monkeypatch.setattr(cosface.optional, "require", lambda module, extra=None, purpose="": FakeOrt)
    with pytest.raises(CosfaceError):
        models._open_onnx(tmp_path / "m.onnx", device)
    assert seen == [want]
