"""The tiny preset, trained from scratch by uwm-train on the synthetic world, learns all four modes.

Every episode of the synthetic world starts from the same frame, where the expert heads for the
top or the bottom bar with equal probability: at that start the observation says nothing about
where the disc goes. So the policy must be bimodal, video prediction must pick one of the two
futures, and only the actions (forward dynamics) or the next frames (inverse dynamics) tell which.
Evaluated on held-out episodes through the public WorldModel API; disc positions are read from
the decoded frames, and a frame without a visible disc counts as a miss.

Thresholds sit well below what this run measured (seed 0, 1000 steps; figures in the issue notes):
policy 91% of samples committed to a mode, 62% down; inverse dynamics direction right in 64/64,
chunk error 2.1 against a spread of 6.2; forward dynamics last-frame pixel MSE 0.0014 against
0.0048 copying the current frame and 0.0028 for video samples, median disc error 1.4 px against
5.2, direction right in 88% (91% for the mirrored chunks); video samples 83% within 2 px of a
frame some expert chunk produces, 52% down; action influence on the image noise prediction
0.155 at action timestep 0 and 0.029 at T.
"""
import numpy as np
import pytest
import torch

from uwm_core import WorldModel
from uwm_core.processing import model_view
from doubles.synthetic_world import DRIFT_RANGE, SPEED_RANGE, START_Y, WORLD, disc_position, generate_episodes, write_synthetic_dataset
from uwm_core.train import load_train_config, train

TRAIN_EPISODES, TEST_EPISODES, MAX_STEPS = 400, 64, 6
# The module fixture trains for about 9 minutes on one CPU thread (the suite's default limit is 420 s).
pytestmark = pytest.mark.timeout(900)
MOVES = MAX_STEPS - 1  # actions reflected in the episode's last frame, the next frame of every start sample


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    data = write_synthetic_dataset(root / "world", TRAIN_EPISODES, seed=0, max_steps=MAX_STEPS, cameras=("top",))
    torch.set_num_threads(1)
    cfg = load_train_config("pretrain", [
        "model_preset=tiny", f"datasets=[{data}]", "model.resize_shape=[32,32]", "batch_size=32", "num_workers=1",
        "num_steps=1000", "lr=1e-3", "model.vae.fit_steps=300", "color_jitter=null", "val_ratio=0", "eval_every=0",
        "save_every=100000", "log_every=100", f"out_dir={root}", "run_name=learn", "seed=0"])
    wm = WorldModel.from_checkpoint(train(cfg) / "checkpoint")
    episodes = generate_episodes(TEST_EPISODES, seed=1000, max_steps=MAX_STEPS)
    Ta = wm.action_horizon
    # Samples at t = 0 built as training builds them: the episode's last frame repeats after its
    # end, and the chunk's actions after the end are holds (0).
    start = {"top": np.stack([ep.frames["top"][[0, 0]] for ep in episodes])}  # (B, To, H, W, 3)
    following = {"top": np.stack([ep.frames["top"][np.minimum([Ta, Ta + 1], MAX_STEPS - 1)] for ep in episodes])}
    actions = np.zeros((TEST_EPISODES, Ta, 2), np.float32)
    for chunk, ep in zip(actions, episodes):
        chunk[:MAX_STEPS] = ep.actions[:Ta]
    return wm, start, following, actions


def chunk_dy(actions: np.ndarray) -> np.ndarray:
    """Vertical displacement of each chunk: > 0 heads down, < 0 up."""
    return actions[..., 1].sum(axis=-1)


def mirrored(actions: np.ndarray) -> np.ndarray:
    """The same chunks towards the other bar."""
    return actions * np.array([1.0, -1.0], np.float32)


def disc_positions(frames: dict) -> np.ndarray:
    """(B, 2) disc centre in the last next frame of each sample; NaN where no disc is visible."""
    return np.stack([disc_position(f[-1]) for f in frames["top"]])


def pixel_mse(frames: dict, truth: dict) -> float:
    """Mean squared error of the last next frame, pixels in [0, 1]."""
    return float(np.mean((frames["top"][:, -1] / 255.0 - truth["top"][:, -1] / 255.0) ** 2))


def misses(positions: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Distance to the target; a frame without a disc is as far off as the table is wide."""
    return np.nan_to_num(np.linalg.norm(positions - target, axis=-1), nan=WORLD)


def test_policy_samples_both_expert_modes_without_averaging(learned):
    wm, start, _, actions = learned
    dy = chunk_dy(wm.predict_actions(start, seed=0))  # 64 samples of the same (start) observation
    shortest = SPEED_RANGE[0] * min(wm.action_horizon, MAX_STEPS)  # the slowest expert chunk moves this far
    committed = np.abs(dy) > shortest / 2  # an average of the two modes would move ~0
    down = float(np.mean(dy > 0))
    assert committed.mean() >= 0.7, np.round(dy, 1)
    assert 0.3 <= down <= 0.7, np.round(dy, 1)  # the expert: 50/50 (binomial sd 0.06 at 64 samples)
    assert np.mean(chunk_dy(actions) > 0) == pytest.approx(0.5, abs=0.2)  # the held-out truth is balanced


def test_inverse_dynamics_recovers_the_actions_from_the_next_frames(learned):
    wm, start, following, actions = learned
    inferred = chunk_dy(wm.infer_actions(start, following, seed=0))
    true = chunk_dy(actions)
    spread = np.abs(true - true.mean()).mean()  # ~6: the two modes are far apart
    error = np.abs(inferred - true).mean()
    assert np.mean(np.sign(inferred) == np.sign(true)) >= 0.85, (np.round(inferred, 1), np.round(true, 1))
    assert error < spread / 2, (error, spread)
    # Without the next frames (policy) the direction is a coin flip: the frames carry the information.
    policy = chunk_dy(wm.predict_actions(start, seed=1))
    assert np.abs(policy - true).mean() > 1.5 * error


def test_forward_dynamics_moves_the_disc_where_the_actions_take_it(learned):
    wm, start, following, actions = learned
    predicted = wm.predict_next_frames(start, actions, seed=0)
    video = wm.predict_video(start, seed=0)  # one of the two futures, at random
    # Pixel error of the last next frame against the truth: copying the current frame misses the
    # whole chunk's motion, a video sample the direction half of the time.
    error = {name: pixel_mse(frames, following) for name, frames in
             (("forward_dynamics", predicted), ("copy", start), ("video", video))}
    assert error["forward_dynamics"] < error["copy"] / 2, error
    assert error["forward_dynamics"] < 0.7 * error["video"], error
    true = disc_positions(following)
    disc_error = np.median(misses(disc_positions(predicted), true))
    copy_disc_error = np.median(misses(disc_positions(start), true))  # ~5 px: the chunk's displacement
    assert disc_error < copy_disc_error / 2, (disc_error, copy_disc_error)
    # From the same frames and image noise, the mirrored chunks send the disc to the other bar.
    flipped = mirrored(actions)
    for chunks, frames in ((actions, predicted), (flipped, wm.predict_next_frames(start, flipped, seed=0))):
        moved = disc_positions(frames)[:, 1] - START_Y
        assert np.mean(np.sign(moved) == np.sign(chunk_dy(chunks))) >= 0.7, np.round(moved, 1)


def test_video_samples_are_frames_some_expert_chunk_produces(learned):
    wm, start, _, _ = learned
    samples = disc_positions(wm.predict_video(start, seed=0))  # 64 futures of the same start frame
    # The expert's reachable set after MOVES steps: |dy| in MOVES * SPEED_RANGE, dx in MOVES * DRIFT_RANGE.
    dx = samples[:, 0] - WORLD / 2
    dy = samples[:, 1] - START_Y
    nearest = np.stack([np.clip(dx, *(MOVES * np.array(DRIFT_RANGE))),
                        np.sign(dy) * np.clip(np.abs(dy), *(MOVES * np.array(SPEED_RANGE)))], axis=-1)
    off = misses(np.stack([dx, dy], axis=-1), nearest)
    assert np.mean(off < 2.0) >= 0.55, np.round(off, 1)
    assert 0.2 <= np.mean(dy > 0) <= 0.8, np.round(dy, 1)  # both futures, not one mode only


def test_action_timestep_T_hides_the_actions_from_the_image_prediction_and_0_shows_them(learned):
    """Trained weights: at action timestep 0 the image noise prediction follows the given chunk;
    at T, where training only ever showed pure-noise actions, two action inputs give the same one."""
    wm, start, following, actions = learned
    model, B = wm.model, TEST_EPISODES
    obs = model_view(start["top"], wm.config.resize_shape, wm.image_size)[:, None]  # (B, V=1, To, 3, S, S)
    nxt = model_view(following["top"], wm.config.resize_shape, wm.image_size)[:, None]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cond = model.encode_condition(obs)
        latents = model.encode_frames(nxt)  # (B, V, C, To, h, w)

        def image_noise(action_input, t_act, noisy_latents, t_img):
            timesteps = (torch.full((B,), t_act), torch.full((B,), t_img))
            return model.net(action_input, noisy_latents, timesteps, cond.obs_parts)[1]

        def normalized(chunks):
            return torch.from_numpy(wm.normalizer.normalize(chunks)).float()

        def change(a, b):
            return float((a - b).norm() / a.norm())

        ratios = []
        for t_img in (30, 60):  # image noise levels at which the next frames are still open
            noisy = model.train_scheduler.add_noise(latents, torch.randn(latents.shape, generator=g), torch.tensor([t_img]))
            given = change(image_noise(normalized(actions), 0, noisy, t_img),
                           image_noise(normalized(mirrored(actions)), 0, noisy, t_img))
            draws = [torch.randn(B, wm.action_horizon, wm.action_dim, generator=g) for _ in range(2)]
            masked = change(image_noise(draws[0], model.T, noisy, t_img), image_noise(draws[1], model.T, noisy, t_img))
            ratios.append((given, masked))
    given, masked = np.mean(ratios, axis=0)
    assert given > 0.1, ratios  # the mirrored chunk moves the predicted disc
    assert masked < given / 3, ratios
