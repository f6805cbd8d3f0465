"""A run's checkpoints (``uwm_core.checkpoint`` directories): saved between two steps, and the
latest one restored so that ``resume=<run dir>`` continues exactly like an uninterrupted run.

Each checkpoint directory holds every weight once. model.safetensors: the EMA weights of the
trained parameters and every frozen weight and buffer as it is (the VAE, pretrained or fitted
before the loop, with its latent statistics), all that ``WorldModel.from_checkpoint`` loads, with
no download. training_state.pt (in checkpoint/ only) adds what else training changes: the raw
trained weights, AdamW's moments, the LR schedule, the EMA's step count (its averages are
model.safetensors' weights), the sampler position and every rank's RNG states.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from ..checkpoint import TRAINING_STATE_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from ..durable import recover_staging
from ..model import UnifiedWorldModel
from ..processing import ActionNormalizer
from .config import TrainConfig
from .distributed import Dist
from .run import Run

LATEST = "checkpoint"  # <run>/checkpoint: the latest, with the training state
EVERY = "checkpoints"  # <run>/checkpoints/step_N: one every save_every steps, weights only


def save_run(run: Run) -> None:
    """Write checkpoints/step_N and checkpoint/ (the same with the training state). Every rank
    calls it (their RNG states are gathered); rank 0 writes."""
    rngs = run.dist.gather(rng_state())
    if not run.dist.main:
        return
    weights = run.ema.weights(run.model)
    save_checkpoint(run.dir / EVERY / f"step_{run.step:07d}", run.model, run.normalizer, run.config, weights=weights)
    save_checkpoint(run.dir / LATEST, run.model, run.normalizer, run.config, training_state=training_state(run, rngs),
                    weights=weights)


def training_state(run: Run, rngs: list[dict]) -> dict:
    """What resuming needs beside model.safetensors: nothing frozen, no EMA averages."""
    return {"step": run.step, "epoch": run.epoch, "batch_in_epoch": run.batch_in_epoch,
            "world_size": run.dist.world_size,
            "model": {k: v.detach().cpu() for k, v in run.model.named_parameters() if v.requires_grad},
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "ema": run.ema.state_dict(), "rng": rngs}


def load_latest(run_dir: Path, d: Dist) -> tuple[UnifiedWorldModel, ActionNormalizer, dict]:
    """The model of a run's latest checkpoint with its raw trained weights, its normaliser and its
    training state; what an interrupted save left beside the checkpoints is cleared first."""
    if d.main:
        recovered = [note for where in (run_dir, run_dir / EVERY) for note in recover_staging(where)]
        if recovered:
            d.say(f"resume: cleared what an interrupted save left in {run_dir}: {'; '.join(recovered)}")
    d.barrier()
    ckpt = run_dir / LATEST
    if not (ckpt / TRAINING_STATE_FILE).is_file():
        raise ValueError(f"resume: {ckpt / TRAINING_STATE_FILE} is missing (no checkpoint was saved in {run_dir})")
    model, normalizer, _ = load_checkpoint(ckpt)  # EMA weights and the frozen ones (the VAE)
    state = torch.load(ckpt / TRAINING_STATE_FILE, map_location="cpu", weights_only=False)
    load_trainable(model, state["model"])  # training continues from the raw weights
    return model, normalizer, state


def load_trainable(model: nn.Module, raw: dict[str, torch.Tensor]) -> None:
    """The raw trained weights of a training state into ``model``; its frozen weights and buffers
    stay as the checkpoint's model.safetensors gave them."""
    missing, unexpected = model.load_state_dict(raw, strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lost = sorted(set(missing) & trainable)
    if unexpected or lost:
        raise ValueError(f"resume: the training state does not match the model (missing {lost[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")


def restore(run: Run, state: dict) -> None:
    """Continue ``run`` from a training state of its latest checkpoint: optimiser, LR schedule,
    EMA, sampler position and, with as many processes as before, every rank's RNGs."""
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    with safe_open(str(run.dir / LATEST / WEIGHTS_FILE), framework="pt", device="cpu") as f:
        averages = {name: f.get_tensor(name) for name in run.ema.names}
    run.ema.load_state_dict(state["ema"], averages)
    run.step, run.epoch, run.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
    d = run.dist
    if state["world_size"] == d.world_size:
        set_rng_state(state["rng"][d.rank])
    else:
        d.say(f"resuming with {d.world_size} processes instead of {state['world_size']}: the samples "
              "and noise draws from here on differ from those of an uninterrupted run")
        torch.manual_seed(run.cfg.seed + d.rank + run.step)


def seed_ranks(cfg: TrainConfig, d: Dist) -> None:
    """A new run's RNGs: different diffusion noise on every rank."""
    torch.manual_seed(cfg.seed + 1 + d.rank)
    np.random.seed(cfg.seed + d.rank)
    random.seed(cfg.seed + d.rank)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
