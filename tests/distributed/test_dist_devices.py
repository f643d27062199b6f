"""Which GPU each process of a torchrun job takes, and the clear errors for device settings that cannot work
with several processes per machine (checked with a stand-in for CUDA, so on any machine)."""
import pytest
import torch

from cosface.errors import CosfaceError
from cosface.parallel import resolve_device


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_each_local_rank_takes_its_own_gpu(two_gpus):
    assert [resolve_device("cuda", r, 2) for r in (0, 1)] == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert resolve_device("cuda:1") == torch.device("cuda", 1)       # one process: any GPU it names


def test_one_named_gpu_for_several_processes_is_refused(two_gpus):
    # Else every rank of the machine lands on cuda:0 and NCCL fails later with "Duplicate GPU detected".
    with pytest.raises(CosfaceError, match=r"train.device='cuda:0' puts all 2 processes .* use train.device='cuda'"):
        resolve_device("cuda:0", 1, 2)


def test_more_processes_than_gpus_is_refused(two_gpus):
    # Else torch.cuda.set_device fails with "invalid device ordinal" and a traceback.
    with pytest.raises(CosfaceError, match=r"LOCAL_RANK 2 .* 2 GPU\(s\)"):
        resolve_device("cuda", 2, 3)
