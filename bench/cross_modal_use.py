"""Does each half of a trained UWM gain from the other modality given clean? (issue 19)

    python bench/cross_modal_use.py --checkpoint runs/demo/train/checkpoint --dataset runs/demo/dataset \
        [--first-windows 1] [--out bench/results/cross_modal_use_demo.json]

On training windows of the dataset (every 6th window of each episode, or each episode's first
``--first-windows``), with one fixed draw of noise, the denoiser's noise-prediction error (MSE):

* actions at action timestep t_a, the next-frame latents given clean (image timestep 0, inverse
  dynamics), given clean but from another window (the same frames, shuffled), or pure noise at
  image timestep T (policy);
* next-frame latents at image timestep t_i, the actions given clean (action timestep 0, forward
  dynamics), another window's actions, or pure noise at T (video).

A model that uses the other modality errs less with it clean than with it at T, and more with
another window's than with its own. The last column gives the clean input but tells the timestep
T: what changes from the first column is only the timestep the modulation sees. Training samples both timesteps uniformly and independently,
so every one of these timestep pairs was trained as often as the others.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from future_latent_probe import window_frames  # bench/
from provenance import provenance  # bench/
from uwm_core import WorldModel
from uwm_core.data import open_dataset
from uwm_core.processing import model_view

TIMESTEPS = (5, 20, 40, 60, 80)


def training_windows(wm: WorldModel, dataset, first_windows: int | None, every: int = 6) -> dict[str, torch.Tensor]:
    """Current frames, state, normalised action chunks and next frames of the selected windows."""
    cfg, To, Ta = wm.config, wm.obs_horizon, wm.action_horizon
    parts = {"obs": [], "state": [], "actions": [], "next": []}
    for episode in range(dataset.num_episodes):
        views = [model_view(dataset.frames(episode, cam), cfg.resize_shape, wm.image_size) for cam in wm.cameras]
        actions = wm.normalizer.normalize(dataset.actions(episode))
        state = dataset.state(episode)
        starts, current, following = window_frames(len(actions), To, Ta, first_windows)
        for k in range(0, len(starts), 1 if first_windows else every):
            t = starts[k]
            parts["obs"].append(torch.stack([v[current[k]] for v in views]))  # (V, To, 3, S, S)
            parts["next"].append(torch.stack([v[following[k]] for v in views]))
            parts["actions"].append(torch.as_tensor(np.asarray(actions[t:t + Ta]), dtype=torch.float32))  # (Ta, A)
            parts["state"].append(torch.as_tensor(state[current[k]], dtype=torch.float32) if state is not None
                                  else torch.zeros(To, 0))
    return {k: torch.stack(v) for k, v in parts.items()}


@torch.no_grad()
def prediction_errors(wm: WorldModel, windows: dict[str, torch.Tensor], seed: int = 0) -> dict:
    model = wm.model
    B = len(windows["actions"])
    actions = windows["actions"]
    latents = model.encode_frames(windows["next"])  # (B, V, C, To, h, w)
    cond = model.encode_condition(windows["obs"], windows["state"] if model.state_dim else None)
    g = torch.Generator().manual_seed(seed)
    action_noise, latent_noise = torch.randn(actions.shape, generator=g), torch.randn(latents.shape, generator=g)
    other = torch.roll(torch.arange(B), B // 2)  # another window of the set for each one
    clean, noised = torch.zeros(B, dtype=torch.long), torch.full((B,), model.T)
    add_noise = model.train_scheduler.add_noise

    def error(prediction, target):
        return round(float(((prediction - target) ** 2).mean()), 5)

    def net(a, t_a, z, t_i):
        return model.net(a, z, (t_a, t_i), cond.obs_parts, cond.cond_latents)

    result = {"actions": {}, "latents": {}}
    for t in TIMESTEPS:
        t_step = torch.full((B,), t)
        noisy = add_noise(actions, action_noise, t_step)
        result["actions"][t] = {
            "future clean (inverse dynamics)": error(net(noisy, t_step, latents, clean)[0], action_noise),
            "another window's future clean": error(net(noisy, t_step, latents[other], clean)[0], action_noise),
            "future noise at T (policy)": error(net(noisy, t_step, add_noise(latents, latent_noise, noised), noised)[0],
                                                action_noise),
            "future clean, told T": error(net(noisy, t_step, latents, noised)[0], action_noise)}
        noisy = add_noise(latents, latent_noise, t_step)
        result["latents"][t] = {
            "actions clean (forward dynamics)": error(net(actions, clean, noisy, t_step)[1], latent_noise),
            "another window's actions clean": error(net(actions[other], clean, noisy, t_step)[1], latent_noise),
            "actions noise at T (video)": error(net(add_noise(actions, action_noise, noised), noised, noisy, t_step)[1],
                                                latent_noise),
            "actions clean, told T": error(net(actions, noised, noisy, t_step)[1], latent_noise)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--first-windows", type=int, help="each episode's first N windows only")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(2)
    wm = WorldModel.from_checkpoint(args.checkpoint, precision="fp32")
    windows = training_windows(wm, open_dataset(args.dataset), args.first_windows)
    errors = prediction_errors(wm, windows)
    for half, label in (("actions", "action timestep"), ("latents", "image timestep")):
        names = list(next(iter(errors[half].values())))
        print(f"{half} noise MSE by {label}: " + " | ".join(names))
        for t, row in errors[half].items():
            print(f"  {t:3d}: " + "  ".join(f"{row[n]:.4f}" for n in names))
    print(f"{len(windows['actions'])} windows")
    if args.out:
        report = {"command": "python bench/cross_modal_use.py --checkpoint ... --dataset ..."
                             + (f" --first-windows {args.first_windows}" if args.first_windows else ""),
                  "checkpoint": args.checkpoint, "dataset": args.dataset, "windows": len(windows["actions"]),
                  "image_loss_weight": wm.config.image_loss_weight, "noise_mse": errors, "noise_seed": 0,
                  **provenance(started)}
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
