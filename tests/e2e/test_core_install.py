"""A core install (no extras) runs every command fully or stops at once with a one-line "install the extra" error.

The optional packages are made unimportable in a child interpreter by a `sitecustomize` on its PYTHONPATH
that puts a finder first on `sys.meta_path`, as if they had never been installed. One child runs every
case in-process through `cosface.cli.main`, so the test costs one torch import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cosface.optional import EXTRAS

SRC = Path(__file__).resolve().parents[2] / "src"
# Top-level packages to hide; an extra reached through a core package (torch.utils.tensorboard) is hidden
# by hiding what it imports (tensorboard), never the core package itself.
CORE = {"torch", "numpy", "simplejpeg", "PIL", "scipy", "tqdm"}
BLOCKED = sorted({m.split(".")[0] for m in EXTRAS} - CORE)

BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = {blocked!r}

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
""")

DRIVER = textwrap.dedent("""
    import contextlib, importlib, io, json, pkgutil, sys
    from pathlib import Path
    import numpy as np, simplejpeg
    import cosface
    from cosface.cli import main

    work = Path(sys.argv[1])
    # Every module of the package imports without the extras (heavy optional imports live in functions).
    failed = []
    for m in pkgutil.walk_packages(cosface.__path__, "cosface."):
        if m.name == "cosface.__main__":   # runs the CLI
            continue
        try:
            importlib.import_module(m.name)
        except ImportError as e:
            failed.append(f"{m.name}: {e}")
    img = work / "face.jpg"
    img.write_bytes(simplejpeg.encode_jpeg(np.full((112, 112, 3), 128, np.uint8)))
    from PIL import Image
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(work / "photo.png")
    (work / "run").mkdir()
    (work / "run" / "metrics.jsonl").write_text('{"type": "step", "global_step": 1, "loss": 1.0}\\n')
    fake_onnx = work / "model.onnx"
    fake_onnx.write_bytes(b"\\x08\\x07")
    cases = {
        "demo": ["demo", "--out", str(work / "demo"), "--no-progress"],
        "export": ["export", "--ckpt", str(work / "missing.pt"), "-o", str(work / "m.onnx")],
        "eval --plot": ["eval", "--features", str(work / "f.mat"), "--plot", str(work / "roc.png")],
        "infer": ["infer", "--model", str(fake_onnx), "--lfw", str(work), "--no-progress"],
        "embed": ["embed", "--model", str(fake_onnx), str(img), "-o", str(work / "e.npy")],
        "verify": ["verify", "--model", str(fake_onnx), str(img), str(img)],
        "detect": ["detect", str(work / "photo.png")],
        "serve": ["serve", "--model", str(fake_onnx), "--port", "0"],
        "plot": ["plot", str(work / "run"), "-o", str(work / "curves.png")],
        "config": ["config", "demo"],
        "synth": ["synth", str(work / "synth"), "--identities", "2", "--images-per-identity", "2",
                  "--lfw-identities", "20", "--lfw-images-per-identity", "2", "--pairs-per-fold", "1",
                  "--workers", "1", "--quiet"],
    }
    cases["train --tensorboard"] = ["train", "--data", str(work / "synth" / "train"), "--out", str(work / "tbrun"),
                                    "--tensorboard", "--no-progress", "--set", "data.workers=0"]
    results = {}
    for name, argv in cases.items():
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except SystemExit as e:   # argparse's own usage errors
                rc = e.code
        results[name] = {"rc": rc, "stderr": err.getvalue()}
    results["demo made files"] = (work / "demo").exists()
    results["train made files"] = (work / "tbrun").exists()
    print(json.dumps({"import_failures": failed, "results": results}))
""")


def test_core_install_runs_or_names_the_extra(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=BLOCKED))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)])}
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["import_failures"] == []
    r = found["results"]
    needs = {"demo": "onnx", "export": "onnx", "eval --plot": "plot", "infer": "onnx", "embed": "onnx", "verify": "onnx",
             "detect": "detect", "serve": "serve", "plot": "plot", "train --tensorboard": "tensorboard"}
    for case, extra in needs.items():
        rc, err = r[case]["rc"], r[case]["stderr"]
        assert rc == 2, (case, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, (case, err)
        assert f"pip install 'cosface[{extra}]'" in lines[0], (case, err)
        assert "Traceback" not in err
    assert r["demo made files"] is False   # checked before any work
    assert r["train made files"] is False
    for case in ("config", "synth"):       # commands that need no extra run to the end
        assert r[case]["rc"] == 0, (case, r[case]["stderr"])


def test_blocker_really_blocks(tmp_path):
    """The test above means something only if the extras are really unimportable in the child."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=BLOCKED))
    env = {**os.environ, "PYTHONPATH": str(site)}
    for module in BLOCKED:
        child = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert child.returncode != 0 and f"No module named '{module}'" in child.stderr, module
    plain = subprocess.run([sys.executable, "-c", "import onnx, matplotlib, torch"], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr    # installed here: only the blocker hides them
