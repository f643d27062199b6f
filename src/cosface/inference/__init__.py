"""Running a model for users: model files and their metadata, and the Embedder API.

    from cosface import Embedder
    emb = Embedder("model.onnx")            # or a TorchScript export, or a training checkpoint
    e = emb.embed(["a.jpg", "b.jpg"])       # (2, 256) float32, rows L2-normalised
    emb.verify("a.jpg", "b.jpg")            # similarity, threshold and where it came from
"""
from cosface.inference.embedder import (FALLBACK_THRESHOLD, IMAGE_SUFFIXES, Embedder, Verification, embed_to_file,
                                        infer_lfw, list_images)
from cosface.inference.models import (KINDS, METADATA_FORMAT, TORCHSCRIPT_METADATA_FILE, ModelInfo, model_kind,
                                      open_model, require_kind)

__all__ = [
    "FALLBACK_THRESHOLD",
    "IMAGE_SUFFIXES",
    "KINDS",
    "METADATA_FORMAT",
    "TORCHSCRIPT_METADATA_FILE",
    "Embedder",
    "ModelInfo",
    "Verification",
    "embed_to_file",
    "infer_lfw",
    "list_images",
    "model_kind",
    "open_model",
    "require_kind",
]
