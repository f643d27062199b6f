"""What a user outside this repository gets: presets that are real files, a typed package, the declared licence."""
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from cosface.config import PRESET_DIR, available_presets, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_presets_are_real_files_that_load():
    files = sorted(PRESET_DIR.glob("*.toml"))
    assert {p.stem for p in files} >= {"casia_mobilefacenet_cosface", "demo"}
    for p in files:
        # A symlink breaks on Windows clones and in some sdists; a dangling one would not even load.
        assert not p.is_symlink(), f"{p} is a symlink; presets must be real files in the package"
        load_config(p.stem)
    assert available_presets() == [p.stem for p in files]


def test_package_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0"                  # an SPDX expression
    assert "LICENSE" in meta["license-files"]
    assert (ROOT / "LICENSE").read_text().startswith("\n                                 Apache License")
    assert (ROOT / "src" / "cosface" / "py.typed").exists()
    assert all(u.startswith("https://") for u in meta["urls"].values())
    assert not any(c.startswith("License ::") for c in meta["classifiers"])   # SPDX `license` replaces these
    assert (ROOT / "CHANGELOG.md").exists()
