"""Do the next-frame latents tell the chunk's motion? A linear probe of what inverse dynamics can read.

    python bench/future_latent_probe.py --checkpoint runs/demo/train/checkpoint --dataset runs/demo/dataset \
        [--out bench/results/future_latent_probe_demo.json]

Inverse dynamics (``infer_actions``) denoises the action chunk with the next frames' latents clean
(image timestep 0): the actions can only follow those frames if the latents carry where the robot
went. For every training window of the dataset (current frames t-1, t; next frames t+Ta, t+Ta+1, as
training samples them, from t = 0 with the first frame repeated), the target is the end-effector displacement over the chunk (position at
t+Ta minus position at t, from the dataset's proprioceptive state). Episode-grouped 5-fold ridge
regressions predict it from:

  current latents          the current frames through the checkpoint's VAE (what the policy sees, roughly)
  current + next latents   adding the next frames' latents (what inverse dynamics is given)
  next latents             the next frames' latents alone (they fix where the chunk ends, not where it starts)

and print R² per axis. Next latents well above the current ones mean the information is there and
a denoiser that ignores it (bench/inverse_dynamics_tracking.py) fails to use it; next latents no
better than current ones mean the VAE's latent grid does not keep it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from camera_probe import cross_validated_r2  # bench/
from provenance import provenance  # bench/
from uwm_core import WorldModel
from uwm_core.data import open_dataset
from uwm_core.processing import model_view
AXES = ("x", "y", "z")


def window_frames(length: int, obs_horizon: int, action_horizon: int, first_windows: int | None = None):
    """Per training window of an episode of ``length`` frames (its first ``first_windows`` only, when
    given): t, the window's last current frame, from 0 as training samples them (frames before the
    start repeat the first); the current frames' and the next frames' indices, each (W, obs_horizon)."""
    starts = np.arange(0, length - action_horizon - obs_horizon + 1)[:first_windows]  # (W,)
    current = np.maximum(starts[:, None] + np.arange(-obs_horizon + 1, 1), 0)  # (W, To)
    following = starts[:, None] + action_horizon + np.arange(obs_horizon)  # (W, To)
    return starts, current, following


def episode_features(wm: WorldModel, dataset, episode: int, first_windows: int | None) -> dict[str, np.ndarray]:
    """Per window of ``episode`` (its first ``first_windows`` only, when given): each feature set
    (rows) and the target displacement."""
    model, cfg = wm.model, wm.config
    To, Ta = wm.obs_horizon, wm.action_horizon
    positions = dataset.state(episode)[:, :3]  # (T, 3) end-effector position (uwm_core.spatial.proprio_state)
    latents = []
    for cam in wm.cameras:
        view = model_view(dataset.frames(episode, cam), cfg.resize_shape, wm.image_size)  # (T, 3, S, S)
        latents.append(model.vae.encode(view).flatten(1).numpy())  # (T, C*h*w)
    starts, current, following = window_frames(len(positions), To, Ta, first_windows)

    def frames_at(per_camera: list[np.ndarray], indices: np.ndarray) -> np.ndarray:
        return np.concatenate([x[indices[:, k]] for x in per_camera for k in range(To)], axis=1)

    return {"current latents": frames_at(latents, current),
            "current + next latents": np.concatenate([frames_at(latents, current), frames_at(latents, following)], 1),
            "next latents": frames_at(latents, following),
            "target": positions[starts + Ta] - positions[starts]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--ridge", type=float, default=10.0)
    parser.add_argument("--first-windows", type=int, help="only each episode's first N windows (e.g. 1 for "
                        "bench/detour_inverse_dynamics.py's demos, where only the future tells the detour's side)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    started = time.time()
    wm = WorldModel.from_checkpoint(args.checkpoint, precision="fp32")
    dataset = open_dataset(args.dataset)
    with torch.no_grad():
        parts = [episode_features(wm, dataset, i, args.first_windows) for i in range(dataset.num_episodes)]
    groups = np.concatenate([np.full(len(p["target"]), i) for i, p in enumerate(parts)])
    target = np.concatenate([p["target"] for p in parts])
    results = {}
    for name in ("current latents", "current + next latents", "next latents"):
        features = np.concatenate([p[name] for p in parts])
        r2 = cross_validated_r2(features, target, args.ridge, groups=groups)
        results[name] = {"features": features.shape[1], **{axis: round(float(v), 3) for axis, v in zip(AXES, r2)}}
        print(f"{name:24s} ({features.shape[1]:5d} features): R² " +
              ", ".join(f"{axis} {v:.3f}" for axis, v in zip(AXES, r2)))
    print(f"{len(target)} windows of {dataset.num_episodes} episodes; displacement std (mm): "
          + ", ".join(f"{axis} {1000 * s:.1f}" for axis, s in zip(AXES, target.std(0))))
    if args.out:
        report = {"command": "python bench/future_latent_probe.py --checkpoint ... --dataset ...",
                  "checkpoint": args.checkpoint, "dataset": args.dataset, "ridge": args.ridge,
                  "first_windows": args.first_windows,
                  "windows": len(target), "episodes": dataset.num_episodes,
                  "displacement_std_mm": [round(1000 * float(s), 2) for s in target.std(0)], "r2": results,
                  "latent_shape_per_frame": list(wm.model.encode_frames(torch.zeros(1, 1, 1, 3, wm.image_size,
                                                                                     wm.image_size)).shape[2:]),
                  **provenance(started)}
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
