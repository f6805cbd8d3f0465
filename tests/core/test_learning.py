"""A tiny UWM trained from scratch on the synthetic world learns all four modes (issue 2).

One CPU training run (uwm-train's Python API, tiny preset) is shared by the tests below. The
synthetic world (uwm_core.synthetic): a disc moved by exactly the commanded displacement, a
bimodal expert (up or down with equal probability) starting every episode from the same frame.
All evaluations use held-out episodes (another seed) at their start, where the two current
frames are identical and say nothing about the mode, and measure the disc's position in decoded
frames (``disc_position``), in world units (1 unit = 1 pixel of the 32x32 frame).
"""
import numpy as np
import pytest
import torch

from uwm_core import WorldModel
from uwm_core.synthetic import SPEED_RANGE, disc_position, generate_episodes, write_synthetic_dataset
from uwm_core.train import load_train_config, train

EPISODE_STEPS = 12
NUM_TEST = 32


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    write_synthetic_dataset(root / "synthetic", 300, seed=0, max_steps=EPISODE_STEPS, cameras=["top"])
    cfg = load_train_config("pretrain", [
        f"datasets=[{root / 'synthetic'}]", "model_preset=tiny", f"out_dir={root}", "run_name=synthetic",
        "num_steps=1500", "batch_size=16", "num_workers=1", "lr=1e-3", "warmup_steps=100", "ema_decay=0.999",
        "color_jitter=null", "val_ratio=0", "eval_every=0", "save_every=1500", "model.vae.fit_steps=200", "seed=0",
    ])
    torch.manual_seed(0)
    run = train(cfg)
    return WorldModel.from_checkpoint(run / "checkpoint")


@pytest.fixture(scope="module")
def test_episodes():
    return generate_episodes(NUM_TEST, seed=123, max_steps=EPISODE_STEPS)


def start_observation(episodes):
    """Batch of start observations: both current frames are each episode's first frame."""
    return {"top": np.stack([ep.frames["top"][[0, 0]] for ep in episodes])}


def chunk(episodes, horizon):
    return np.stack([ep.actions[:horizon] for ep in episodes])


def positions(frames):
    return np.array([disc_position(f) for f in frames])


def test_forward_dynamics_uses_the_actions(world_model, test_episodes):
    Ta = world_model.action_horizon
    obs = start_observation(test_episodes)
    truth = np.array([ep.positions[Ta] for ep in test_episodes])  # disc after the chunk
    predicted = positions(world_model.predict_next_frames(obs, chunk(test_episodes, Ta), seed=0)["top"][:, 0])
    video = positions(world_model.predict_video(obs, seed=0)["top"][:, 0])
    copy = np.array([ep.positions[0] for ep in test_episodes])  # baseline: nothing moves
    err = lambda p: np.nan_to_num(np.linalg.norm(p - truth, axis=1), nan=32.0)  # noqa: E731  (no disc: worst)
    fd, vid, cp = np.median(err(predicted)), np.median(err(video)), np.median(err(copy))
    print(f"median disc error: forward dynamics {fd:.2f}, copy current frame {cp:.2f}, video mode {vid:.2f}")
    assert fd < 0.35 * cp and fd < 0.35 * vid


def test_inverse_dynamics_recovers_the_actions(world_model, test_episodes):
    Ta = world_model.action_horizon
    true_actions = chunk(test_episodes, Ta)
    next_frames = {"top": np.stack([ep.frames["top"][[Ta, Ta + 1]] for ep in test_episodes])}
    inferred = world_model.infer_actions(start_observation(test_episodes), next_frames, seed=0)
    error = np.abs(inferred - true_actions).mean(axis=(0, 1))  # per action dimension
    spread = true_actions.reshape(-1, 2).std(axis=0)
    print(f"inverse dynamics mean abs error {error}, action spread (std) {spread}")
    assert (error < 0.35 * spread).all()


def test_policy_samples_both_modes_without_averaging(world_model):
    n = 48
    obs = start_observation(generate_episodes(1, seed=7, max_steps=EPISODE_STEPS) * n)
    mean_dy = world_model.predict_actions(obs, seed=0)[:, :, 1].mean(axis=1)  # per sample
    down = np.mean(mean_dy > 0)
    committed = np.mean(np.abs(mean_dy) > 0.6 * SPEED_RANGE[0])
    print(f"policy: {down:.2f} of samples go down, {committed:.2f} commit to a mode, mean dy {np.round(mean_dy, 2)}")
    assert 0.25 <= down <= 0.75  # the expert's 50/50, with margin for 48 samples
    assert committed >= 0.85  # samples are one mode or the other, not the average of both (dy 0)


def test_video_frames_follow_some_expert_action(world_model, test_episodes):
    Ta = world_model.action_horizon
    obs = start_observation(test_episodes)
    start = np.array([ep.positions[0] for ep in test_episodes])
    moved = positions(world_model.predict_video(obs, seed=1)["top"][:, 0]) - start
    reach = max(abs(ep.positions[-1][1] - ep.positions[0][1]) for ep in test_episodes)  # the bars stop the disc
    low, high = 0.7 * Ta * SPEED_RANGE[0], 1.2 * reach
    consistent = (np.abs(moved[:, 1]) > low) & (np.abs(moved[:, 1]) < high) & (np.abs(moved[:, 0]) < 0.3 * Ta + 1.5)
    print(f"video: displacement dy {np.round(moved[:, 1], 1)}; consistent {consistent.mean():.2f}")
    assert consistent.mean() >= 0.8
    assert (moved[consistent, 1] > 0).any() and (moved[consistent, 1] < 0).any()  # both modes appear
