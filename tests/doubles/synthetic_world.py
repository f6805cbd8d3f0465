"""A tiny procedurally rendered world for the training tests.

A red disc (the end effector) moves on a table by exactly the commanded displacement
``(dx, dy)`` each step, so the next frames can only be predicted by using the actions. The
table has a colour gradient and a goal bar at the top (green) and at the bottom (blue).

The expert is multimodal: from the centre of the table it heads to the top bar or to the bottom
bar with equal probability (two equally good ways to act), at a speed and sideways drift drawn per
episode, then stops on the bar. Every episode starts from the same frame, so at the start the
observation says nothing about the mode: only the actions decide where the disc goes next. Two cameras observe it: ``top`` sees the whole table, ``wrist``
is a 2x zoomed view centred on the disc (the world moves past it, like a wrist camera).

World units are top-camera pixels at the default 32 x 32 resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uwm_core.data import DatasetWriter

WORLD = 32.0  # table side length
RADIUS = 2.5
BAR = 3.0  # goal bar thickness at the top and bottom edges
START_Y = WORLD / 2
GOAL_Y = {+1: WORLD - BAR - RADIUS, -1: BAR + RADIUS}  # +1 heads down (image y grows), -1 up
SPEED_RANGE = (0.7, 1.4)  # |dy| per step
DRIFT_RANGE = (-0.3, 0.3)  # dx per step
CAMERAS = ("top", "wrist")
ACTION_DIM = 2


@dataclass
class Episode:
    frames: dict  # camera -> uint8 (T, H, W, 3)
    actions: np.ndarray | None  # float32 (T, 2); actions[t] moves frame t to frame t+1
    positions: np.ndarray  # float32 (T, 2) disc centre (x, y) in frame t
    mode: int  # +1 down, -1 up


def render(position, camera: str, size: int = 32) -> np.ndarray:
    """uint8 (size, size, 3) image of the world with the disc at ``position`` (x, y)."""
    position = np.asarray(position, dtype=np.float64)
    # World coordinates of each pixel centre.
    pix = (np.arange(size) + 0.5) / size
    if camera == "top":
        xs, ys = pix * WORLD, pix * WORLD
    elif camera == "wrist":
        span = WORLD / 2
        xs, ys = position[0] - span / 2 + pix * span, position[1] - span / 2 + pix * span
    else:
        raise ValueError(f"unknown camera {camera!r}; the synthetic world has {list(CAMERAS)}")
    X, Y = np.meshgrid(xs, ys)  # (size, size)
    inside = (X >= 0) & (X <= WORLD) & (Y >= 0) & (Y <= WORLD)
    img = np.zeros((size, size, 3))
    img[..., 0] = 0.15 + 0.35 * X / WORLD
    img[..., 1] = 0.15
    img[..., 2] = 0.15 + 0.35 * Y / WORLD
    img[Y < BAR] = (0.1, 0.8, 0.2)
    img[Y > WORLD - BAR] = (0.2, 0.3, 0.9)
    img[~inside] = 0.0
    # Anti-aliased disc: sub-pixel positions change pixel values, so small moves are visible.
    pixel_world = (xs[1] - xs[0])
    dist = np.hypot(X - position[0], Y - position[1])
    coverage = np.clip((RADIUS - dist) / pixel_world + 0.5, 0.0, 1.0)[..., None]
    img = img * (1 - coverage) + np.array([0.95, 0.1, 0.1]) * coverage
    return (img * 255).round().astype(np.uint8)


def disc_position(frame: np.ndarray) -> np.ndarray:
    """Estimate the disc centre (x, y) in world units from a ``top`` frame (redness-weighted)."""
    f = frame.astype(np.float64) / 255.0
    red = np.clip(f[..., 0] - np.maximum(f[..., 1], f[..., 2]) - 0.45, 0, None)
    size = frame.shape[0]
    if red.sum() < 1e-6:
        return np.array([np.nan, np.nan])
    ys, xs = np.mgrid[0:size, 0:size]
    scale = WORLD / size
    return np.array([(xs * red).sum() / red.sum() + 0.5, (ys * red).sum() / red.sum() + 0.5]) * scale


def expert_episode(rng: np.random.Generator, size: int = 32, max_steps: int = 24) -> Episode:
    """One expert demonstration; the mode (up/down) is a fair coin flip."""
    mode = int(rng.choice([-1, 1]))
    speed = rng.uniform(*SPEED_RANGE)
    drift = rng.uniform(*DRIFT_RANGE)
    position = np.array([WORLD / 2, START_Y])
    positions, actions = [], []
    for _ in range(max_steps):
        positions.append(position.copy())
        remaining = GOAL_Y[mode] - position[1]
        dy = np.sign(remaining) * min(speed, abs(remaining))
        action = np.array([drift if abs(remaining) > 1e-6 else 0.0, dy])
        actions.append(action)
        position = step(position, action)
    positions = np.array(positions, dtype=np.float32)
    frames = {cam: np.stack([render(p, cam, size) for p in positions]) for cam in CAMERAS}
    return Episode(frames, np.array(actions, dtype=np.float32), positions, mode)


def step(position, action) -> np.ndarray:
    """The dynamics: move by the action, stay on the table."""
    margin = RADIUS
    return np.clip(np.asarray(position) + np.asarray(action), margin, WORLD - margin)


def generate_episodes(num_episodes: int, seed: int, size: int = 32, max_steps: int = 24) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [expert_episode(rng, size, max_steps) for _ in range(num_episodes)]


def write_synthetic_dataset(path, num_episodes: int, seed: int, action_free: bool = False, size: int = 32,
                            max_steps: int = 24, cameras=CAMERAS, with_state: bool = False):
    """Write expert episodes with uwm_core.data.DatasetWriter (``action_free``: video only;
    ``with_state``: the disc position as proprioceptive state)."""
    state_dim = 2 if with_state else 0
    with DatasetWriter(path, cameras=list(cameras), fps=10, action_dim=ACTION_DIM, state_dim=state_dim) as writer:
        for i, ep in enumerate(generate_episodes(num_episodes, seed, size, max_steps)):
            writer.add_episode(frames={cam: ep.frames[cam] for cam in cameras}, actions=None if action_free else ep.actions,
                               task="reach a goal bar", metadata={"mode": ep.mode, "synthetic_seed": seed, "index": i},
                               state=ep.positions if with_state else None)
    return path
