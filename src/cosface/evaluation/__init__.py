"""Face verification: LFW pairs, insightface `.bin` sets, the k-fold protocols and reports.

    from cosface.evaluation import evaluate_lfw, torch_embed_fn
    report = evaluate_lfw(torch_embed_fn(backbone, device), "data/LFW_112", progress=False)
    print(report.format()); log(report.mean)
"""
from cosface.evaluation.binset import BinSet, load_bin
from cosface.evaluation.evaluate import BIN_PROTOCOLS, evaluate_bin, evaluate_features, evaluate_lfw, evaluate_mat
from cosface.evaluation.extract import EmbedFn, checkpoint_embed_fn, embed_images, torch_embed_fn
from cosface.evaluation.matio import PairFeatures, load_features, save_features
from cosface.evaluation.metrics import far_measurable, plot_roc, threshold_at_far
from cosface.evaluation.pairs import PairList, read_lfw
from cosface.evaluation.protocol import FoldResult, insightface_kfold, reference_kfold
from cosface.evaluation.report import PROTOCOLS, Report

__all__ = [
    "BIN_PROTOCOLS",
    "BinSet",
    "EmbedFn",
    "FoldResult",
    "PROTOCOLS",
    "PairFeatures",
    "PairList",
    "Report",
    "checkpoint_embed_fn",
    "embed_images",
    "evaluate_bin",
    "evaluate_features",
    "evaluate_lfw",
    "evaluate_mat",
    "far_measurable",
    "insightface_kfold",
    "load_bin",
    "load_features",
    "plot_roc",
    "read_lfw",
    "reference_kfold",
    "save_features",
    "threshold_at_far",
    "torch_embed_fn",
]
