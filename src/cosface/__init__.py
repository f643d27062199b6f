"""cosface: train, evaluate, export and serve CosFace face-recognition models.

The Python API (see cosface.api): cosface.train(...), cosface.load_config(...), cosface.evaluate(...).
"""

__version__ = "0.1.0"

# name -> module that defines it. Loaded on first use, so `import cosface` (and the CLI's start-up) does not
# pay for numpy/onnxruntime/torch. `train` is a function here; the training loop lives in cosface.trainer,
# so no submodule import can ever replace the attribute.
_LAZY = {
    "Embedder": "cosface.inference",
    "train": "cosface.api",
    "load_config": "cosface.api",
    "evaluate": "cosface.api",
    "Config": "cosface.config",
    "TrainResult": "cosface.trainer",
    "Report": "cosface.evaluation",
    "CosfaceError": "cosface.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cosface' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
