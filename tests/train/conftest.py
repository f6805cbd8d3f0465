"""Fixtures of the training tests: the synthetic world as datasets, tiny-preset configurations."""
import os

import pytest
import torch

from doubles.synthetic_world import write_synthetic_dataset
from uwm_core.train import load_train_config, train


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 test cores are shared: one thread is faster and deterministic
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Robot demonstrations and action-free videos of the synthetic world (cameras top/wrist, 2-D actions)."""
    root = tmp_path_factory.mktemp("world")
    return {"robot": str(write_synthetic_dataset(root / "robot", 8, seed=0, max_steps=16)),
            "video": str(write_synthetic_dataset(root / "video", 4, seed=1, action_free=True, max_steps=16))}


@pytest.fixture(scope="session")
def tiny_args(world):
    """tiny_args(out_dir, run_name, **overrides) -> key=value list for a fast CPU run of the tiny preset."""
    def make(out_dir, run_name, **extra) -> list[str]:
        values = dict(model_preset="tiny", datasets=f"[{world['robot']}]", batch_size=4, num_workers=0, num_steps=3,
                      log_every=1, eval_every=0, save_every=1000, color_jitter="null", out_dir=str(out_dir),
                      run_name=run_name, eval_samples=4, val_ratio=0.2)
        values.update(extra)
        return [f"{k}={v}" for k, v in values.items()]
    return make


@pytest.fixture(scope="session")
def tiny_config(tiny_args):
    def make(out_dir, run_name, recipe="pretrain", **extra):
        return load_train_config(recipe, tiny_args(out_dir, run_name, **extra))
    return make


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, tiny_config):
    """A checkpoint of two tiny pretraining steps on the synthetic robot data."""
    torch.set_num_threads(1)
    run = train(tiny_config(tmp_path_factory.mktemp("pretrain"), "pre", num_steps=2))
    return run / "checkpoint"


@pytest.fixture
def env():
    """Environment of training subprocesses: one thread each (deterministic, no oversubscription)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


