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


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    import re

    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_docs_links_and_references_resolve():
    """Links between README and docs/ resolve (file and #section), and every docs/ page that src/ cites exists
    with the section it names. No reference to a document outside the repository (the old "SPEC §n")."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    anchors = {p.resolve(): {_anchor(h) for h in re.findall(r"^#+ (.+)$", p.read_text(), re.M)} for p in pages}
    for page in pages:
        for target, frag in re.findall(r"\]\(([^)#\s]+\.md)(?:#([^)]+))?\)", page.read_text()):
            if target.startswith("http"):
                continue
            dest = (page.parent / target).resolve()
            assert dest.exists(), f"{page.name} links to missing {target}"
            if frag:
                assert frag in anchors[dest], f"{page.name} links to {target}#{frag}, no such section"
    for src in (ROOT / "src").rglob("*"):
        if src.suffix not in (".py", ".toml") or not src.is_file():
            continue
        text = src.read_text()
        assert "SPEC" not in text, f"{src} cites SPEC, which users cannot open"
        for doc, section in re.findall(r'(docs/\w+\.md)(?:, "([^"]+)")?', text):
            assert (ROOT / doc).exists(), f"{src} cites missing {doc}"
            if section:
                assert _anchor(section) in anchors[(ROOT / doc).resolve()], f"{src} cites {doc} section {section!r}"
    assert "SPEC" not in (ROOT / "README.md").read_text()
