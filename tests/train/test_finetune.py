"""Finetuning from a pretrained checkpoint: its weights and normaliser, cosine warmup, and mismatches."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from uwm_core.data import DatasetWriter
from doubles.synthetic_world import generate_episodes
from uwm_core.train import train


def task_dataset(path, cameras=("top", "wrist"), action_dim=2, scale=3.0):
    """Synthetic episodes with actions in other units than the pretraining data."""
    with DatasetWriter(path, cameras=list(cameras), fps=10, action_dim=action_dim) as w:
        for ep in generate_episodes(3, seed=7, max_steps=14):
            actions = np.concatenate([ep.actions * scale] + [ep.actions[:, :1]] * (action_dim - 2), axis=1)
            w.add_episode({c: ep.frames[c] for c in cameras}, actions)
    return path


def test_finetune_starts_from_the_checkpoint(tmp_path, pretrained, tiny_config):
    data = task_dataset(tmp_path / "task")
    cfg = tiny_config(tmp_path, "fine", recipe="finetune", init_from=pretrained, datasets=f"[{data}]",
                      num_steps=3, warmup_steps=1, model_preset="paper")  # the architecture comes from init_from
    run = train(cfg)
    assert json.loads((run / "checkpoint" / "normalizer.json").read_text()) == \
        json.loads((pretrained / "normalizer.json").read_text())  # reused, as the reference does
    before, after = load_file(pretrained / "model.safetensors"), load_file(run / "checkpoint" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vae."))  # frozen VAE
    name = "obs_encoder.resnet.layer1.0.conv1.weight"
    assert 0 < float((after[name] - before[name]).norm() / before[name].norm()) < 0.05  # small steps from it
    lr = [e.value for e in EventAccumulator(str(run / "tb")).Reload().Scalars("train/lr")]
    np.testing.assert_allclose(lr, [1e-4, 0.5e-4, 0.0], atol=1e-9)  # warmup 1 step, then cosine to 0


@pytest.mark.parametrize("cameras, action_dim, mismatch", [
    (("top",), 2, r"has cameras \['top', 'wrist'\] and action_dim 2, but .*task has cameras \['top'\] and action_dim 2"),
    (("top", "wrist"), 3, r"has cameras \['top', 'wrist'\] and action_dim 2, but .*task has cameras \['top', 'wrist'\] "
                          r"and action_dim 3"),
])
def test_finetune_mismatch_fails_before_training(tmp_path, pretrained, tiny_config, cameras, action_dim, mismatch):
    data = task_dataset(tmp_path / "task", cameras, action_dim)
    cfg = tiny_config(tmp_path / "runs", "fine", recipe="finetune", init_from=pretrained, datasets=f"[{data}]",
                      warmup_steps=0)
    with pytest.raises(ValueError, match=rf"^init_from: the checkpoint {pretrained} {mismatch}$"):
        train(cfg)
    assert not (tmp_path / "runs").exists() and not (data / "latent_cache").exists()
