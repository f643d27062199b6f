"""cosface: train, evaluate, export and serve CosFace face-recognition models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import cosface` (and the CLI's start-up) does not pay for numpy/onnxruntime/torch.
    if name == "Embedder":
        from cosface.inference import Embedder

        return Embedder
    raise AttributeError(f"module 'cosface' has no attribute {name!r}")
