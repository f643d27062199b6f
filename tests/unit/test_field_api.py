"""The API users expect from the field: threshold at a target FAR, FARs the pairs cannot measure, a
similarity matrix, the ROC plot's AUC and range."""
import json

import numpy as np
import pytest

from cosface.errors import CosfaceError
from cosface.evaluation import evaluate_features, threshold_at_far
from cosface.evaluation import metrics
from cosface.inference import Embedder, ModelInfo
from cosface.preprocess import Preprocessing


def scores_by_hand():
    diff = np.random.default_rng(0).permutation(np.arange(1000) / 1000.0)   # 1000 different pairs, 0.000 .. 0.999
    same = np.array([0.9995, 0.9985, 0.9905, 0.95, 0.5])
    return np.concatenate([same, diff]), np.arange(1005) < 5


def test_threshold_at_far_by_hand():
    scores, issame = scores_by_hand()
    # FAR 1e-3 lets 1 of 1000 different pairs through: accept above the 2nd highest, 0.998
    assert threshold_at_far(scores, issame, 1e-3) == 0.998
    assert threshold_at_far(scores, issame, 1e-2) == 0.989
    assert threshold_at_far(scores, np.where(issame, 1, -1), 0.1) == 0.899     # +-1 labels too
    for far in (1e-3, 1e-2, 0.1, 0.25):
        t = threshold_at_far(scores, issame, far)
        assert np.sum(scores[~issame] > t) <= far * 1000 < np.sum(scores[~issame] >= t)   # lowest such threshold


def test_unmeasurable_far_is_said_not_computed():
    rng = np.random.default_rng(1)
    scores, issame = rng.random(240), np.arange(240) < 120                 # 120 different pairs
    with pytest.raises(CosfaceError, match=r"FAR 0.001 cannot be measured with 120 different-person pairs .*needs at least 1000"):
        threshold_at_far(scores, issame, 1e-3)
    with pytest.raises(CosfaceError, match="must be in"):
        threshold_at_far(scores, issame, 1.0)
    tar = {far: pytest.approx(np.mean(scores[issame] > threshold_at_far(scores, issame, far))) for far in (0.1, 0.01)}
    assert metrics.tar_at_far(scores, issame) == {**tar, 0.001: None}     # 0.01 of 120 allows 1 false accept
    assert metrics.thresholds_at_fars(scores, issame)["0.001"] is None

    flag = np.where(issame, 1, -1)
    fl = rng.standard_normal((240, 4))
    report = evaluate_features(fl, fl + rng.standard_normal((240, 4)), np.arange(240) // 24, flag, source="x")
    text = report.format()
    assert "TAR @ FAR=0.001: not measurable with 120 different-person pairs (needs 1000)" in text
    d = json.loads(json.dumps(report.to_json_dict()))
    assert d["tar_at_far"]["0.001"] is None and d["tar_at_far"]["0.1"] is not None
    assert d["min_measurable_far"] == pytest.approx(1 / 120)


def test_curve_auc_equals_roc_auc_with_ties():
    rng = np.random.default_rng(2)
    scores = np.round(rng.random(300), 1)           # many ties
    issame = rng.random(300) < 0.4
    far, tar = metrics.roc_curve(scores, issame)
    assert metrics.curve_auc(far, tar) == pytest.approx(metrics.roc_auc(scores, issame), abs=1e-12)


def test_roc_plot_shows_auc_and_starts_at_smallest_measurable_far(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved = {}
    real_savefig = Figure.savefig

    def spy(fig, path, **kw):
        ax = fig.axes[0]
        saved["xlim"] = ax.get_xlim()
        saved["labels"] = [t.get_text() for t in ax.get_legend().get_texts()]
        return real_savefig(fig, path, **kw)

    monkeypatch.setattr(Figure, "savefig", spy)
    rng = np.random.default_rng(3)
    scores, issame = rng.random(300), np.arange(300) < 100                 # 200 different pairs
    metrics.plot_roc({"set": metrics.roc_curve(scores, issame)}, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert saved["xlim"][0] == pytest.approx(1 / 200)
    assert saved["labels"] == [f"set, AUC {metrics.roc_auc(scores, issame):.4f}"]


def channel_means_onnx(path, meta):
    """An ONNX graph that returns each channel's mean of the normalised input: known embeddings."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["embedding"])],
        "pool", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def test_similarity_matrix_and_pairwise_similarity(tmp_path):
    pytest.importorskip("onnxruntime")
    info = ModelInfo(Preprocessing(), embedding_size=3, backbone="channel-means", num_classes=2, cosface_version="0")
    emb = Embedder(channel_means_onnx(tmp_path / "m.onnx", info.to_metadata()), quiet=True)
    colours = [(200, 100, 40), (40, 100, 200), (250, 30, 30)]
    a = [np.broadcast_to(np.array(c, np.uint8), (112, 112, 3)).copy() for c in colours]
    v = np.array([(np.array(c) - 128) / 128 for c in colours])
    v /= np.linalg.norm(v, axis=1, keepdims=True)             # a solid image equals its mirror: cosine of the means
    m = emb.similarity_matrix(a, a[:2])
    assert m.shape == (3, 2)
    np.testing.assert_allclose(m, v @ v[:2].T, atol=1e-4)
    np.testing.assert_allclose(emb.similarity(a[:2], a[1:]), [m[0, 1], m[2, 1]], atol=1e-6)   # pairwise: a[i] vs b[i]
    assert emb.similarity(a[0], a[1]) == pytest.approx(m[0, 1], abs=1e-6)


def test_threshold_at_far_from_model_metadata(tmp_path):
    pytest.importorskip("onnxruntime")
    ev = {"protocol": "reference", "mean": 0.9, "std": 0.01, "thresholds": [0.3], "verify_threshold": 0.3,
          "far_thresholds": {"0.1": 0.25, "0.01": 0.41, "0.001": None}}
    info = ModelInfo(Preprocessing(), embedding_size=3, backbone="channel-means", num_classes=2, cosface_version="0",
                     threshold=0.3, evaluation=ev)
    emb = Embedder(channel_means_onnx(tmp_path / "m.onnx", info.to_metadata()), quiet=True)
    assert emb.threshold_at_far(0.01) == 0.41
    with pytest.raises(CosfaceError, match="FAR 0.001 could not be measured"):
        emb.threshold_at_far(1e-3)
    with pytest.raises(CosfaceError, match=r"no threshold for FAR 0.05 \(it has: 0.1, 0.01, 0.001\)"):
        emb.threshold_at_far(0.05)


def test_verify_help_states_what_the_code_does(capsys):
    from cosface.cli import main
    from cosface.inference import FALLBACK_THRESHOLD

    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"{FALLBACK_THRESHOLD} a fallback" in text
    assert "exit status: 0 same person, 1 different people, 2 error" in text
    for option in ("--threshold T", "--far F", "--json"):
        assert option in text
