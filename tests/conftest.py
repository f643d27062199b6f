import pytest
import torch

from image_folders import write_image_folder


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "data")


@pytest.fixture(autouse=True)
def _few_threads():
    # The CI machine has 2 cores; keep each test to one so timings stay predictable.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
