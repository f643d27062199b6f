"""The one way to import an optional dependency: a missing extra becomes a one-line CosfaceError.

Every import of a package that is not a core dependency goes through `require`, so the message is the same
everywhere and names the extra to install. `check` lets long work (training, the demo) fail at its start
when a later step will need an extra that is not installed.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from cosface.errors import CosfaceError

# module to import -> the pip extra that brings it
EXTRAS: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "matplotlib": "plot",
    "matplotlib.pyplot": "plot",
    "matplotlib.figure": "plot",
    "nvidia.nvimgcodec": "gpu-decode",
    "tensorboard": "tensorboard",
    "torch.utils.tensorboard": "tensorboard",
    "faiss": "faiss",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
}


def missing_extra_error(module: str, extra: str, purpose: str = "") -> CosfaceError:
    what = f" ({purpose})" if purpose else ""
    return CosfaceError(f"this needs the Python package '{module.split('.')[0]}'{what}, which is not installed: "
                        f"pip install 'cosface[{extra}]'")


def require(module: str, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import `module`; if it (or a package it needs) is missing, raise a CosfaceError naming the extra."""
    extra = extra or EXTRAS.get(module) or EXTRAS.get(module.split(".")[0])
    if extra is None:
        raise ValueError(f"{module!r} is not a known optional module; add it to cosface.optional.EXTRAS")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise missing_extra_error(module, extra, purpose) from e


def check(*modules: str, purpose: str = "") -> None:
    """Fail now, with the extra named, if any of `modules` cannot be imported (without keeping them imported)."""
    import importlib.util

    for module in modules:
        extra = EXTRAS.get(module) or EXTRAS.get(module.split(".")[0])
        if extra is None:
            raise ValueError(f"{module!r} is not a known optional module; add it to cosface.optional.EXTRAS")
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise missing_extra_error(module, extra, purpose)
