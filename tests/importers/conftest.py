"""Fixtures of the importer tests: source datasets written once per module (see importer_fixtures)."""
import pytest
import torch

from importer_fixtures import write_droid_like, write_libero_like


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 test cores are shared
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    """A DROID-like LeRobot v3.0 dataset: 4 episodes at 15 fps, 2 per data file and per mp4."""
    return write_droid_like(tmp_path_factory.mktemp("lerobot") / "droid_like")


@pytest.fixture(scope="module")
def libero(tmp_path_factory):
    """Two LIBERO-like HDF5 files (3 + 2 demos) and the arrays stored in them."""
    folder = tmp_path_factory.mktemp("libero") / "libero_90"
    return folder, write_libero_like(folder)
