"""Evaluation during training (rank 0, EMA weights): the policy's held-out action error, whether it
uses its cameras, and forward-dynamics predictions next to the true next frames (images/step_N.png)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from ..model import UnifiedWorldModel
from .config import TrainConfig
from .run import Run


def evaluate_run(run: Run) -> None:
    """Evaluate the run's EMA weights at its current step (rank 0; other ranks return at once)."""
    if not run.dist.main:
        return
    run.ema.copy_to(run.eval_model)
    stats = evaluate(run.eval_model, run.samples.val_set, run.normalizer, run.cfg, run.step, run.dir, run.writer)
    run.dist.say(f"step {run.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))


@torch.no_grad()
def evaluate(model: UnifiedWorldModel, samples, normalizer, cfg: TrainConfig, step: int, run_dir: Path, writer) -> dict:
    """Policy action error (dataset units) and forward-dynamics frames on fixed held-out samples."""
    device = next(model.parameters()).device
    picks = np.unique(np.linspace(0, len(samples) - 1, min(cfg.eval_samples, len(samples))).astype(int))
    batch = torch.utils.data.default_collate([samples[int(i)] for i in picks])
    obs, actions = batch["obs"].to(device), batch["actions"].to(device)  # (B, V, To, 3, S, S), (B, Ta, A)
    state = batch["state"].to(device) if "state" in batch else None
    labelled = batch["has_actions"].to(device)
    g = torch.Generator(device).manual_seed(cfg.seed)
    stats = {}
    if labelled.any():
        state_l = None if state is None else state[labelled]
        pred, _ = model.sample("policy", obs[labelled], generator=g, state=state_l)
        err = normalizer.unnormalize(pred.float()) - normalizer.unnormalize(actions[labelled])
        stats["eval/action_mse"] = float(err.pow(2).mean())
        stats.update(observation_use(model, obs[labelled], pred, cfg.seed, state_l))
    if model.vae is not None:
        _, latents = model.sample("forward_dynamics", obs, actions=actions, generator=g, state=state)
        predicted = model.decode_latents(latents.float())  # (B, V, To, 3, S, S)
        true = batch["next_obs"].to(device)
        stats["eval/forward_dynamics_mse"] = float((predicted - true).pow(2).mean())
        grid = image_grid(obs[:4], true[:4], predicted[:4])
        (run_dir / "images").mkdir(exist_ok=True)
        save_image(grid, run_dir / "images" / f"step_{step:07d}.png")
        if writer is not None:
            writer.add_image("eval/forward_dynamics", grid, step)
    if writer is not None:
        for k, v in stats.items():
            writer.add_scalar(k, v, step)
    return stats


@torch.no_grad()
def observation_use(model: UnifiedWorldModel, obs: torch.Tensor, policy: torch.Tensor, seed: int,
                    state: torch.Tensor | None = None) -> dict:
    """Does the policy look at its cameras? (a policy that ignores them replays an average motion)

    ``eval/obs_sensitivity``: RMS change of the normalised policy actions when each sample gets
    another sample's camera images (the batch rolled by one; the proprioceptive state stays), with
    the same noise; 0 means the cameras are ignored. ``eval/obs_feature_spread``: the encoder features' std across samples,
    averaged over features (it falls towards 0 when the encoder collapses to a constant).
    ``policy``: the actions already sampled for ``obs`` from a generator seeded with ``seed``.
    """
    if len(obs) < 2 or model.obs_encoder is None:
        return {}
    other, _ = model.sample("policy", obs.roll(1, dims=0), generator=torch.Generator(obs.device).manual_seed(seed),
                            state=state)
    features = model.obs_encoder(obs)  # (B, V*To*F)
    return {"eval/obs_sensitivity": float((policy - other).pow(2).mean().sqrt()),
            "eval/obs_feature_spread": float(features.std(dim=0).mean())}


def image_grid(obs: torch.Tensor, true_next: torch.Tensor, pred_next: torch.Tensor) -> torch.Tensor:
    """One row per sample and camera: current frames | true next frames | predicted next frames."""
    rows = torch.cat([obs, true_next, pred_next], dim=2)  # (B, V, 3 To, 3, S, S)
    return make_grid(rows.flatten(0, 2).cpu(), nrow=rows.shape[2], padding=2, pad_value=1.0)
