"""What the IJB report prints: every `-` it shows is explained."""
import numpy as np

from cosface.evaluation.ijb import IJBReport


def report(tar_at_far, tpir_at_fpir):
    gallery = {"gallery_templates": 20, "mated_probes": 40, "non_mated_probes": 40,
               "rank": {1: 0.9, 5: 1.0, 10: 1.0}, "tpir_at_fpir": tpir_at_fpir}
    ident = {"G1": gallery, "G2": gallery, "mean": {"rank": gallery["rank"], "tpir_at_fpir": tpir_at_fpir}}
    return IJBReport("ijb", "set", "IJBC", "N1D1F1", 10, 4, tar_at_far, ident,
                     np.array([0.9, 0.1]), np.array([True, False]))


def test_insightfaces_reading_is_printed_under_the_exact_tar():
    # 1 same pair at 0.9, 9 different ones below 0.5 and 1 at 0.95: at FAR 0.1 one false accept is allowed,
    # the same pair is the 2nd highest score, so TAR 100 %; at FAR 0.01 (not measurable) insightface reads
    # the nearest ROC point, FPR 0 at TPR 0.
    scores = np.r_[0.9, 0.95, np.linspace(0.1, 0.4, 9)]
    issame = np.r_[True, np.zeros(10, bool)]
    ident = None
    r = IJBReport("ijb", "set", "IJBC", "N1D1F1", 11, 11, {1e-2: None, 1e-1: 1.0}, ident, scores, issame)
    assert r.tar_at_far_insightface == {1e-2: 0.0, 1e-1: 1.0}
    lines = r.format().splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("TAR %"))
    assert [c.strip() for c in lines[row].split("|")] == ["TAR %", "-", "100.00"]
    assert [c.strip() for c in lines[row + 1].split("|")] == ["insightface's reading", "0.00", "100.00"]
    assert r.to_json_dict()["tar_at_far_insightface"] == {"0.01": 0.0, "0.1": 1.0}


def test_an_unmeasurable_tpir_is_explained_even_when_every_tar_is_measured():
    # 40 non-mated probes cannot measure FPIR 1e-2 (it needs 100); every TAR here is a number.
    text = report({1e-2: 0.5, 1e-1: 0.75}, {1e-2: None, 1e-1: 0.6}).format()
    assert "|              - |" in text
    assert "-: not measurable" in text


def test_no_note_when_every_figure_is_measured():
    text = report({1e-2: 0.5, 1e-1: 0.75}, {1e-2: 0.4, 1e-1: 0.6}).format()
    assert " - " not in text and "not measurable" not in text
