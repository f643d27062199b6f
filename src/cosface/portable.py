"""What artefacts that leave this machine (checkpoints, exports) may say about where their data was.

A checkpoint or an ONNX file is shared, published and opened elsewhere; an absolute path such as
/home/alice/datasets/faces_webface_112x112 means nothing there and tells who made it and how their disk
is laid out. So artefacts keep paths relative to the working directory when the data lies under it, and
otherwise only the dataset's folder name. The run directory's own config.toml keeps the paths as given:
it stays with the run and is what a rerun on the same machine reads.
"""
from __future__ import annotations

import os
from pathlib import Path

# config keys that name data locations
PATH_KEYS = (("data", "path"), ("eval", "lfw"))


def portable_path(path: str | os.PathLike) -> str:
    """A relative path as given; an absolute one relative to the working directory when under it, else
    its last component (the dataset's folder name). "" stays ""."""
    text = str(path)
    if not text:
        return text
    p = Path(text).expanduser()
    if not p.is_absolute():
        return text
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def portable_config(config: dict) -> dict:
    """A config dict (Config.to_dict()) with its data locations made portable; other values untouched."""
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in config.items()}
    for section, key in PATH_KEYS:
        if isinstance(out.get(section), dict) and out[section].get(key):
            out[section][key] = portable_path(out[section][key])
    return out
