"""Fixtures of the dataset tests: small random episodes; one torch thread (the 2 test cores are shared)."""
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def random_frames():
    """random_frames(rng, length, {camera: (H, W)}) -> camera -> uint8 (length, H, W, 3) noise."""
    def make(rng: np.random.Generator, length: int, shapes: dict) -> dict:
        return {cam: rng.integers(0, 256, (length, h, w, 3), dtype=np.uint8) for cam, (h, w) in shapes.items()}
    return make
