"""Artefacts that leave the machine carry no absolute paths; files get the user's umask."""
import os
import stat

import pytest
import torch

from cosface.checkpoint import atomic_save, user_umask
from cosface.portable import portable_config, portable_path


def test_portable_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path("data/lfw") == "data/lfw"                              # relative: as given
    assert portable_path(tmp_path / "data" / "lfw") == os.path.join("data", "lfw")   # under the working directory
    assert portable_path("/home/alice/datasets/faces_webface_112x112") == "faces_webface_112x112"
    assert portable_path("") == ""
    cfg = {"data": {"path": "/srv/x/casia", "workers": 2}, "eval": {"lfw": "/srv/x/LFW_112"}, "head": {"s": 32.0}}
    out = portable_config(cfg)
    assert out == {"data": {"path": "casia", "workers": 2}, "eval": {"lfw": "LFW_112"}, "head": {"s": 32.0}}
    assert cfg["data"]["path"] == "/srv/x/casia"                                  # the input is not changed


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_checkpoint_gets_the_users_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert user_umask() == mask
        atomic_save({"x": torch.zeros(1)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o666 & ~mask
