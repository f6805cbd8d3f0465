"""uwm-train: pretrain, finetune and cotrain a Unified World Model (paper III-D, -A2, Table V).

One process (CPU or one GPU):
    uwm-train --config config/train/pretrain.yaml datasets=[data/droid]
One node with N GPUs (DDP over NCCL; gloo when there is no GPU):
    torchrun --nproc-per-node N -m uwm_core.train --config config/train/pretrain.yaml datasets=[data/droid]
M nodes with N GPUs each (run on every node; NODE_RANK = 0 .. M-1, MASTER = node 0's host name):
    torchrun --nnodes M --node-rank $NODE_RANK --nproc-per-node N --master-addr $MASTER --master-port 29500 \\
        -m uwm_core.train --config config/train/pretrain.yaml datasets=[data/droid]
Finetune and cotrain:
    uwm-train --config config/train/finetune.yaml init_from=runs/<run>/checkpoint datasets=[data/demos]
    uwm-train --config config/train/cotrain.yaml datasets=[data/droid] video_datasets=[data/videos]
Resume exactly after Ctrl-C, SIGTERM (preemption) or a crash (from the latest checkpoint):
    uwm-train resume=runs/<run> [num_steps=...]

Any TrainConfig field can be overridden as key=value (lists as datasets=[a,b], model settings as
model.depth=8). ``batch_size`` is per process: the effective batch is batch_size x grad_accum x
processes. The run directory ``<out_dir>/<run_name>/`` holds:

    config.yaml              the resolved training and model configuration
    checkpoint/              the latest checkpoint (EMA weights, what WorldModel.from_checkpoint
                             loads) with training_state.pt for resume
    checkpoints/step_N/      a checkpoint (EMA weights) every save_every steps
    tb/                      TensorBoard: losses, learning rate, grad norm, throughput, eval
    images/step_N.png        forward-dynamics predictions next to the true next frames
    learning_curve.png       held-out action error and observation sensitivity against steps

Colour jitter perturbs each camera's current and next frames alike when next frames are
encoded on the fly; with the latent cache the targets are the cached (unjittered) latents, so
the jitter then only touches the current frames the observation encoder sees.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from tqdm import tqdm

from .checkpoint import TRAINING_STATE_FILE, load_checkpoint, read_checkpoint_config, save_checkpoint
from .config import config_dir, load_model_config, model_config_to_dict
from .data import (ColorJitter, EpisodeSamples, LatentCache, Mixture, ShardedSampler, action_normalizer,
                   open_dataset, sample_spec, split_episodes, state_normalizer)
from .durable import recover_staging
from .learning_curve import plot_learning_curve
from .model import UnifiedWorldModel
from .model.vae import LATENT_STD
from .processing import crop, frames_to_float, resize_images

LR_SCHEDULES = ("constant", "cosine")
EXAMPLES = {"datasets": "datasets=[data/demos]", "video_datasets": "video_datasets=[data/videos]",
            "init_from": "init_from=runs/<run>/checkpoint"}


@dataclass
class TrainConfig:
    recipe: str = "custom"  # set from the --config file name
    # Model: a preset (config/model/<name>.yaml or a YAML path) plus ModelConfig overrides.
    # cameras and action_dim always come from the data.
    model_preset: str = "paper"
    model: dict[str, Any] = field(default_factory=dict)
    init_from: Optional[str] = None  # finetune: checkpoint giving architecture, weights, normaliser
    # Data
    datasets: list[str] = field(default_factory=list)  # robot datasets
    video_datasets: list[str] = field(default_factory=list)  # action-free video, mixed in uniformly
    val_ratio: float = 0.05  # robot episodes held out for the policy action error
    latent_cache: bool = True  # encode frames with the VAE once per dataset (much faster)
    latent_cache_dir: Optional[str] = None  # default: <dataset>/latent_cache
    color_jitter: Optional[ColorJitter] = None  # reference: 0.2 each
    num_workers: int = 8  # DataLoader worker processes per training process
    hold_in_memory_gb: float = 4.0  # training frames (resized) and latents are read once when they fit
    # Optimisation (Table V)
    num_steps: int = 100_000  # optimiser steps
    batch_size: int = 36  # per process and micro-batch
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    lr_schedule: str = "constant"  # constant | cosine (after warmup_steps of linear warmup)
    warmup_steps: int = 0
    clip_grad_norm: Optional[float] = None
    ema_decay: float = 0.9999  # with warmup: min(ema_decay, 1 - (1 + step)^-0.75)
    bf16: bool = True  # autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX)
    seed: int = 0
    # Run
    out_dir: str = "runs"
    run_name: Optional[str] = None  # default <recipe>-<date>-<time>
    resume: Optional[str] = None  # a run directory to continue exactly
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 20
    eval_every: int = 10_000  # 0: never (a final evaluation still runs)
    eval_samples: int = 8
    save_every: int = 10_000
    trace_samples: bool = False  # write every rank's sample ids and a parameter checksum per step


# ====================================================================== configuration
def load_train_config(recipe: str | os.PathLike | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """TrainConfig from a recipe (config/train/<name>.yaml or a path) and key=value overrides.

    With ``resume=<run dir>`` the run's saved configuration is the base instead of a recipe.
    Raises ValueError with one line naming the bad key.
    """
    try:
        extra = OmegaConf.from_dotlist(list(overrides)) if isinstance(overrides, (list, tuple)) else OmegaConf.create(overrides or {})
        cfg = OmegaConf.structured(TrainConfig)
        resume, required = extra.get("resume"), []
        if resume:
            saved = Path(resume) / "config.yaml"
            if not saved.is_file():
                raise ValueError(f"resume: {resume} is not a run directory ({saved.name} is missing)")
            cfg = OmegaConf.merge(cfg, OmegaConf.create(yaml.safe_load(saved.read_text())["train"]))
        elif recipe is not None:
            path = Path(recipe)
            if path.suffix not in (".yaml", ".yml"):
                path = config_dir() / "train" / f"{recipe}.yaml"
            if not path.is_file():
                known = sorted(p.stem for p in (config_dir() / "train").glob("*.yaml"))
                raise ValueError(f"--config: {recipe} does not exist (recipes: {known})")
            recipe_cfg = OmegaConf.load(path)
            required = [k for k in recipe_cfg if OmegaConf.is_missing(recipe_cfg, k)]  # "???" in the recipe
            cfg = OmegaConf.merge(cfg, {"recipe": path.stem}, recipe_cfg)
        missing = [k for k in required if k not in extra]
        if missing:
            raise ValueError(f"{missing[0]}: required by the {path.stem} recipe, e.g. "
                             + EXAMPLES.get(missing[0], f"{missing[0]}=..."))
        cfg = OmegaConf.merge(cfg, extra)
        return validate_train_config(OmegaConf.to_object(cfg))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        message = str(exc).splitlines()[0]
        raise ValueError(f"{key}: {message}" if key else message) from None


def validate_train_config(cfg: TrainConfig) -> TrainConfig:
    def need(ok: bool, key: str, message: str):
        if not ok:
            raise ValueError(f"{key}: {message}, got {getattr(cfg, key)!r}")

    for key in ("num_steps", "batch_size", "grad_accum", "log_every", "save_every", "eval_samples"):
        need(getattr(cfg, key) >= 1, key, "must be a positive integer")
    for key in ("num_workers", "warmup_steps", "eval_every", "hold_in_memory_gb"):
        need(getattr(cfg, key) >= 0, key, "must be >= 0")
    need(cfg.lr > 0, "lr", "must be > 0")
    need(cfg.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "betas", "must be two values in [0, 1)")
    need(cfg.eps > 0, "eps", "must be > 0")
    need(cfg.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {list(LR_SCHEDULES)}")
    need(cfg.warmup_steps < cfg.num_steps or cfg.warmup_steps == 0, "warmup_steps", "must be < num_steps")
    need(cfg.clip_grad_norm is None or cfg.clip_grad_norm > 0, "clip_grad_norm", "must be > 0 or null")
    need(0 <= cfg.ema_decay < 1, "ema_decay", "must be in [0, 1)")
    need(0 <= cfg.val_ratio < 1, "val_ratio", "must be in [0, 1)")
    need(cfg.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
    need(len(cfg.datasets) > 0, "datasets", "at least one robot dataset is required")
    if cfg.color_jitter is not None:
        for key in ("brightness", "contrast", "saturation"):
            value = getattr(cfg.color_jitter, key)
            if not value >= 0:
                raise ValueError(f"color_jitter.{key}: must be >= 0, got {value}")
        if not 0 <= cfg.color_jitter.hue <= 0.5:
            raise ValueError(f"color_jitter.hue: must be in [0, 0.5], got {cfg.color_jitter.hue}")
    for key in ("cameras", "action_dim"):
        if key in cfg.model:
            raise ValueError(f"model.{key}: comes from the datasets; remove the override")
    return cfg


def config_dict(cfg: TrainConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


# ====================================================================== distributed
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world_size > 1:
            dist.barrier()


def setup_distributed(device: str) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: NCCL on GPUs, gloo on CPU."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was requested but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    d = Dist(int(os.environ.get("RANK", 0)), world_size, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
             torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu"))
    if use_cuda:
        torch.cuda.set_device(d.device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=d.device if use_cuda else None)
    return d


# ====================================================================== data
def open_training_data(cfg: TrainConfig):
    """Open every dataset; they must agree on cameras and fps (and action_dim where they have actions)."""
    robot = [open_dataset(p) for p in cfg.datasets]
    video = [open_dataset(p) for p in cfg.video_datasets]
    first = robot[0]
    for ds in robot + video:
        if ds.num_episodes == 0:
            raise ValueError(f"{ds.path}: dataset has no episodes")
        if set(ds.cameras) != set(first.cameras):
            raise ValueError(f"datasets disagree on cameras: {first.path} has {first.cameras}, {ds.path} has {ds.cameras}")
        if ds.fps != first.fps:
            raise ValueError(f"datasets disagree on fps: {first.path} has {first.fps:g}, {ds.path} has {ds.fps:g}")
    for ds in robot:
        if ds.action_dim != first.action_dim:
            raise ValueError(f"datasets disagree on action_dim: {first.path} has {first.action_dim}, "
                             f"{ds.path} has {ds.action_dim}")
    return robot, video


class FramePool:
    """Random training frames, resized, for fitting a random VAE and estimating its latent scale."""

    def __init__(self, datasets, resize_shape, size: int, seed: int):
        rng = np.random.default_rng(seed)
        frames = []
        for _ in range(size):
            ds = datasets[rng.integers(len(datasets))]
            ep = int(rng.integers(ds.num_episodes))
            cam = ds.cameras[rng.integers(len(ds.cameras))]
            t = int(rng.integers(ds.episode_lengths[ep]))
            frames.append(resize_images(frames_to_float(ds.frames(ep, cam, [t])), resize_shape)[0])
        self.frames, self.rng = torch.stack(frames), rng

    def crops(self, n: int, size: int, device) -> torch.Tensor:
        """n random size x size crops of random pool frames, on ``device``."""
        H, W = self.frames.shape[-2:]
        out = []
        for i in self.rng.integers(len(self.frames), size=n):
            top, left = self.rng.integers(H - size + 1), self.rng.integers(W - size + 1)
            out.append(crop(self.frames[i], int(top), int(left), size))
        return torch.stack(out).to(device)


def prepare_vae(model: UnifiedWorldModel, datasets, cfg: TrainConfig, d: Dist) -> None:
    """A random VAE is fitted to training frames (vae.fit_steps) and its latent scale estimated,
    on rank 0 and then broadcast; both change the VAE, so they come before the latent cache."""
    vae, mcfg = model.vae, model.cfg
    if vae is None or not (mcfg.vae.fit_steps > 0 or vae.needs_latent_statistics):
        return
    if d.main:
        S = mcfg.image_size
        pool = FramePool(datasets, mcfg.resize_shape, 256 if S <= 64 else 64, cfg.seed)  # random crops add variety
        if mcfg.vae.fit_steps > 0:
            bar = tqdm(total=mcfg.vae.fit_steps, desc="fit VAE", unit="step")

            def progress(step, loss):
                bar.update(1)
                bar.set_postfix(mse=f"{loss:.4f}")

            vae.fit(lambda n: pool.crops(n, S, d.device), mcfg.vae.fit_steps, progress=progress)
            bar.close()
        if vae.needs_latent_statistics:
            scale, clip = vae.estimate_latent_statistics(pool.crops(len(pool.frames), S, d.device))
            tqdm.write(f"VAE latent scale {scale:.4f} (latent std -> {LATENT_STD:.3f}), sampling clips latents at +-{clip:.2f}")
    if d.world_size > 1:
        for tensor in vae.state_dict().values():
            dist.broadcast(tensor, src=0)


def build_latent_caches(model: UnifiedWorldModel, datasets, cfg: TrainConfig, d: Dist) -> list[LatentCache]:
    """One cache per dataset; every node's local ranks encode disjoint episodes, then all check."""
    caches = [LatentCache(ds, model.vae, model.cfg.resize_shape, cfg.latent_cache_dir) for ds in datasets]
    for cache in caches:
        d.barrier()  # all ranks list the missing episodes from the same state
        todo = cache.missing()
        mine = todo[d.local_rank::d.local_world_size]
        if d.main and todo:
            tqdm.write(f"latent cache: encoding {len(todo)} episodes of {cache.dataset.path} into {cache.root}")
        cache.build(model.vae, d.device, mine, progress=d.local_rank == 0)
    d.barrier()
    for cache in caches:
        if cache.missing():
            raise RuntimeError(f"{cache.root}: {len(cache.missing())} episodes are still missing after the build")
    return caches


def hold_training_samples(parts: list[EpisodeSamples], cfg: TrainConfig, say, show: bool) -> None:
    """Decode and resize every training frame once, instead of once per sample, when they fit."""
    size = sum(p.memory_bytes() for p in parts)
    if size > cfg.hold_in_memory_gb * 2**30:
        say(f"training frames read from disk at every step: held in memory they would take "
            f"{size / 2**30:.1f} GB > hold_in_memory_gb={cfg.hold_in_memory_gb:g}")
        return
    with tqdm(total=sum(len(p.episodes) for p in parts), desc="load training frames", unit="episode",
              disable=not show) as bar:
        for part in parts:
            part.hold_in_memory(bar.update)
    say(f"training frames held in memory: {size / 2**20:.0f} MB")


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers: Ctrl-C is handled by the training process (save, then exit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def batch_stream(loader, sampler: ShardedSampler, epoch: int, batch: int):
    """Endless batches from (epoch, batch) on; yields (epoch, batch index after this one, batch)."""
    while True:
        sampler.set_position(epoch, batch)
        for item in loader:
            batch += 1
            yield epoch, batch, item
        epoch, batch = epoch + 1, 0


# ====================================================================== model pieces
class Objective(nn.Module):
    """DDP synchronises gradients through forward(): the UWM loss (Eq. 1) of a batch."""

    def __init__(self, model: UnifiedWorldModel):
        super().__init__()
        self.model = model

    def forward(self, obs, actions, next_latents, has_actions, state):
        return self.model.loss(obs, actions, next_latents, has_actions, state)


def batch_loss(objective: nn.Module, model: UnifiedWorldModel, batch: dict, device: torch.device, bf16: bool):
    """Loss of one batch from the data pipeline; next frames are VAE-encoded here unless cached."""
    obs = batch["obs"].to(device, non_blocking=True)
    actions = batch["actions"].to(device, non_blocking=True)
    has_actions = batch["has_actions"].to(device, non_blocking=True)
    state = batch["state"].to(device, non_blocking=True) if "state" in batch else None
    next_latents = None
    if model.vae is not None:
        if "next_latents" in batch:
            next_latents = batch["next_latents"].to(device, non_blocking=True)
        else:
            next_latents = model.encode_frames(batch["next_obs"].to(device, non_blocking=True))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and native_bf16(device)):
        return objective(obs, actions, next_latents, has_actions, state)


def native_bf16(device: torch.device) -> bool:
    """bf16 autocast pays off: any CUDA device, or a CPU with bf16 instructions (else it is emulated)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class EMA:
    """Exponential moving average of the trainable weights (diffusers EMAModel, with warmup)."""

    def __init__(self, model: nn.Module, decay: float):
        from diffusers.training_utils import EMAModel

        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.ema = EMAModel([p for p in model.parameters() if p.requires_grad], decay=decay,
                            use_ema_warmup=True, power=0.75, foreach=True)

    def step(self, model: nn.Module):
        self.ema.step([p for p in model.parameters() if p.requires_grad])

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the trainable weights replaced by their averages (CPU)."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        for name, shadow in zip(self.names, self.ema.shadow_params):
            state[name] = shadow.detach().cpu().contiguous()
        return state

    def copy_to(self, model: nn.Module):
        self.ema.copy_to([p for p in model.parameters() if p.requires_grad])


def load_trainable(model: nn.Module, raw: dict[str, torch.Tensor]) -> None:
    """The raw trainable weights of a training state; frozen weights and buffers (the VAE, a frozen
    encoder) are not in it: they come with the checkpoint's model.safetensors."""
    missing, unexpected = model.load_state_dict(raw, strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lost = sorted(set(missing) & trainable)
    if unexpected or lost:
        raise ValueError(f"resume: the training state does not match the model (missing {lost[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]})")


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def parameter_checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters() if p.requires_grad))


class StopRequest:
    """SIGINT / SIGTERM ask the loop to save a checkpoint and exit; a second Ctrl-C aborts."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write(f"{signal.Signals(signum).name}: saving a checkpoint at the end of this step, then stopping "
                   "(Ctrl-C again aborts)")

    def agreed(self, d: Dist) -> bool:
        if d.world_size == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=d.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ====================================================================== evaluation
@torch.no_grad()
def evaluate(model: UnifiedWorldModel, samples, normalizer, cfg: TrainConfig, step: int, run_dir: Path, writer) -> dict:
    """Policy action error (dataset units) and forward-dynamics frames on fixed held-out samples."""
    device = next(model.parameters()).device
    picks = np.unique(np.linspace(0, len(samples) - 1, min(cfg.eval_samples, len(samples))).astype(int))
    batch = torch.utils.data.default_collate([samples[int(i)] for i in picks])
    obs, actions = batch["obs"].to(device), batch["actions"].to(device)
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
        from torchvision.utils import save_image

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
    from torchvision.utils import make_grid

    rows = torch.cat([obs, true_next, pred_next], dim=2)  # (B, V, 3 To, 3, S, S)
    return make_grid(rows.flatten(0, 2).cpu(), nrow=rows.shape[2], padding=2, pad_value=1.0)


# ====================================================================== training
def train(cfg: TrainConfig) -> Path:
    """Train as configured; returns the run directory. Works under torchrun (DDP) as well."""
    d = setup_distributed(cfg.device)
    try:
        return _train(cfg, d)
    finally:
        if d.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: Dist) -> Path:
    say = tqdm.write if d.main else (lambda *_: None)
    run_dir = Path(cfg.resume) if cfg.resume else Path(cfg.out_dir) / (cfg.run_name or _default_run_name(cfg, d))
    if not cfg.resume and run_dir.exists():
        raise ValueError(f"run_name: {run_dir} already exists; choose another run_name or resume={run_dir}")
    # ---------------- data and model configuration
    robot, video = open_training_data(cfg)
    datasets = robot + video
    if video and load_model_config(cfg.model_preset, dict(cfg.model)).variant == "dp" and not cfg.init_from:
        raise ValueError("video_datasets: the dp variant has no image diffusion and cannot learn from action-free video")
    resume_state = None
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    if cfg.resume:
        if d.main:
            recovered = [note for where in (run_dir, run_dir / "checkpoints") for note in recover_staging(where)]
            if recovered:
                say(f"resume: cleared what an interrupted save left in {run_dir}: {'; '.join(recovered)}")
        d.barrier()
        ckpt = run_dir / "checkpoint"
        if not (ckpt / TRAINING_STATE_FILE).is_file():
            raise ValueError(f"resume: {ckpt / TRAINING_STATE_FILE} is missing (no checkpoint was saved in {run_dir})")
        model, normalizer, _ = load_checkpoint(ckpt)
        resume_state = torch.load(ckpt / TRAINING_STATE_FILE, map_location="cpu", weights_only=False)
        load_trainable(model, resume_state["model"])  # raw (non-EMA) weights
    elif cfg.init_from:
        ckpt_cfg, _ = read_checkpoint_config(cfg.init_from)
        cams, adim = sorted(ckpt_cfg.cameras), ckpt_cfg.action_dim
        if cams != sorted(robot[0].cameras) or adim != robot[0].action_dim:
            raise ValueError(f"init_from: the checkpoint {cfg.init_from} has cameras {ckpt_cfg.cameras} and "
                             f"action_dim {adim}, but {robot[0].path} has cameras {robot[0].cameras} and "
                             f"action_dim {robot[0].action_dim}")
        if ckpt_cfg.use_state and ckpt_cfg.state_dim != robot[0].state_dim:
            raise ValueError(f"init_from: the checkpoint {cfg.init_from} uses proprioceptive state of "
                             f"{ckpt_cfg.state_dim} dims, {robot[0].path} has state_dim {robot[0].state_dim}")
        model, normalizer, _ = load_checkpoint(cfg.init_from)  # its normaliser, as the reference does
        say(f"initialised from {cfg.init_from} (its architecture and action normaliser)")
    else:
        mcfg = load_model_config(cfg.model_preset, {**cfg.model, "cameras": list(robot[0].cameras),
                                                    "action_dim": robot[0].action_dim,
                                                    "state_dim": robot[0].state_dim})
        if mcfg.use_state and not mcfg.state_dim:
            raise ValueError(f"model.use_state: {robot[0].path} has no proprioceptive state (convert the bags "
                             f"with uwm-bag2dataset, which records the end-effector pose and gripper), or set "
                             f"model.use_state=false")
        model = UnifiedWorldModel(mcfg)
        normalizer = action_normalizer(robot)
        if model.state_dim:
            model.set_state_stats(state_normalizer(robot))
    model.to(d.device)
    mcfg = model.cfg

    # ---------------- samples (checked before the slow VAE and cache work)
    downsample = model.vae.downsample if model.vae is not None else 1
    spec = sample_spec(mcfg, downsample, cfg.color_jitter)
    train_parts, val_parts = [], []
    for i, ds in enumerate(datasets):
        train_eps, val_eps = split_episodes(ds, cfg.val_ratio if i < len(robot) else 0.0, cfg.seed)
        train_parts.append(EpisodeSamples(ds, train_eps, spec, normalizer, dataset_id=i))
        val_parts.append(EpisodeSamples(ds, val_eps, spec, normalizer, dataset_id=i))
    train_set, val_set = Mixture(train_parts), Mixture(val_parts)
    if len(val_set) == 0:
        say("no held-out episodes (val_ratio or too few episodes): evaluating on training episodes")
        val_set = train_set
    sampler = ShardedSampler(len(train_set), cfg.batch_size, d.rank, d.world_size, cfg.seed)
    if not cfg.resume and not cfg.init_from:
        prepare_vae(model, datasets, cfg, d)
    if cfg.latent_cache and model.vae is not None:
        for part, cache in zip(train_parts, build_latent_caches(model, datasets, cfg, d)):
            part.latents = cache  # training samples read cached latents; evaluation encodes pixels
        if cfg.color_jitter is not None:
            say("colour jitter: applied to the current frames only (next-frame targets are cached latents)")
    hold_training_samples(train_parts, cfg, say, d.main)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
        pin_memory=d.device.type == "cuda", worker_init_fn=ignore_sigint, drop_last=True,
        persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None,
        generator=torch.Generator().manual_seed(cfg.seed))  # workers' seeds: not from the global RNG (resume)

    # ---------------- optimisation state
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                  weight_decay=cfg.weight_decay, fused=True)  # one kernel for all tensors
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler("constant_with_warmup" if cfg.lr_schedule == "constant" else "cosine", optimizer,
                              num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.num_steps)
    ema = EMA(model, cfg.ema_decay)
    step, epoch, batch_in_epoch = 0, 0, 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        ema.ema.load_state_dict(resume_state["ema"])
        step, epoch, batch_in_epoch = resume_state["step"], resume_state["epoch"], resume_state["batch_in_epoch"]
        if resume_state["world_size"] == d.world_size:
            set_rng_state(resume_state["rng"][d.rank])
        else:
            say(f"resuming with {d.world_size} processes instead of {resume_state['world_size']}: the samples "
                "and noise draws from here on differ from those of an uninterrupted run")
            torch.manual_seed(cfg.seed + d.rank + step)
    else:
        torch.manual_seed(cfg.seed + 1 + d.rank)  # different diffusion noise on every rank
        np.random.seed(cfg.seed + d.rank)
        random.seed(cfg.seed + d.rank)
    objective = Objective(model)
    if d.world_size > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    eval_model = copy.deepcopy(model).eval() if d.main else None

    # ---------------- run directory and logging (rank 0); created only now that setup succeeded
    resolved = config_dict(cfg) | {"resume": None}
    d.barrier()  # every rank has checked that a new run directory does not exist yet
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=bool(cfg.resume))
        _write_yaml(run_dir / "config.yaml", {"train": resolved, "model": model_config_to_dict(mcfg)})
    d.barrier()
    writer = None
    if d.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if cfg.resume else None)
    trace = None
    if cfg.trace_samples:
        (run_dir / "trace").mkdir(exist_ok=True)
        trace = open(run_dir / "trace" / f"rank{d.rank}.jsonl", "a")
    per_step = cfg.batch_size * cfg.grad_accum * d.world_size
    num_params = sum(p.numel() for p in trainable)
    say(f"run {run_dir} | {len(train_set)} training samples ({int(train_set.has_actions.sum())} with actions) "
        f"from {len(datasets)} dataset(s), {len(val_set)} eval samples | {num_params / 1e6:.1f}M trainable "
        f"parameters | {d.world_size} process(es) on {d.device.type}, {per_step} samples per step")

    def save():
        rngs = [None] * d.world_size
        if d.world_size > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if not d.main:
            return
        weights = ema.weights(model)
        save_checkpoint(run_dir / "checkpoints" / f"step_{step:07d}", model, normalizer, resolved, weights=weights)
        state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "world_size": d.world_size,
                 "model": {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "ema": ema.ema.state_dict(), "rng": rngs}
        save_checkpoint(run_dir / "checkpoint", model, normalizer, resolved, training_state=state, weights=weights)

    def run_eval():
        ema.copy_to(eval_model)
        stats = evaluate(eval_model, val_set, normalizer, cfg, step, run_dir, writer)
        say(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))

    # ---------------- the loop
    stop = StopRequest()
    stream = batch_stream(loader, sampler, epoch, batch_in_epoch)
    bar = tqdm(total=cfg.num_steps, initial=step, desc=run_dir.name, unit="step", disable=not d.main, dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    model.train()
    try:
        while step < cfg.num_steps:
            infos, ids, flags = [], [], []
            for micro in range(cfg.grad_accum):
                epoch, batch_in_epoch, batch = next(stream)
                last = micro == cfg.grad_accum - 1
                sync = contextlib.nullcontext() if last or d.world_size == 1 else objective.no_sync()
                with sync:
                    loss, info = batch_loss(objective, model, batch, d.device, cfg.bf16)
                    (loss / cfg.grad_accum).backward()
                infos.append(info)
                ids.append(batch["sample_id"])
                flags.append(batch["has_actions"])
            grad_norm = nn.utils.clip_grad_norm_(trainable, cfg.clip_grad_norm or math.inf)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(model)
            step += 1
            window_steps += 1
            bar.update(1)
            if trace is not None:
                trace.write(json.dumps({"step": step, "samples": torch.cat(ids).tolist(),
                                        "has_actions": torch.cat(flags).tolist(),
                                        "t_action": torch.cat([i["t_action"] for i in infos]).tolist(),
                                        "params": parameter_checksum(model)}) + "\n")
                trace.flush()
            stopping = stop.agreed(d)
            saving = step % cfg.save_every == 0 or step == cfg.num_steps or stopping
            if step % cfg.log_every == 0 or saving:  # never save a diverged model
                losses = {k: float(torch.stack([i[k] for i in infos]).mean()) for k in ("loss", "action_loss", "image_loss")
                          if k in infos[0]}
                if not math.isfinite(losses["loss"]):
                    raise FloatingPointError(f"loss is {losses['loss']} at step {step}; lower lr or check the data")
                elapsed = time.perf_counter() - window_start
                throughput = window_steps * per_step / max(elapsed, 1e-9)
                window_start, window_steps = time.perf_counter(), 0
                bar.set_postfix(loss=f"{losses['loss']:.4f}", samples_per_s=f"{throughput:.1f}")
                if writer is not None:
                    for k, v in losses.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    writer.add_scalar("train/samples_per_s", throughput, step)
            if saving:
                save()
            if d.main and cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.num_steps:
                run_eval()
            if stopping:
                say(f"stopped at step {step}; continue with: uwm-train resume={run_dir}")
                break
        if d.main and step == cfg.num_steps:
            run_eval()
    finally:
        stop.close()
        bar.close()
        if writer is not None:
            writer.close()
            plot_learning_curve(run_dir / "tb", run_dir / "learning_curve.png")
        if trace is not None:
            trace.close()
    return run_dir


def _default_run_name(cfg: TrainConfig, d: Dist) -> str:
    name = [f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"]
    if d.world_size > 1:
        dist.broadcast_object_list(name, src=0)  # one name for all ranks
    return name[0]


def _write_yaml(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="uwm-train", description=__doc__.split("\n\nAny TrainConfig")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="training recipe: config/train/<name>.yaml or its name (pretrain, "
                                         "finetune, cotrain); not needed with resume=<run dir>")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="TrainConfig overrides")
    args = parser.parse_args(argv)
    for item in args.overrides:
        if "=" not in item:
            parser.error(f"override {item!r} is not key=value")
    try:
        cfg = load_train_config(args.config, args.overrides)
        if not cfg.resume and args.config is None:
            raise ValueError("--config: a recipe is required (e.g. --config config/train/pretrain.yaml)")
        train(cfg)
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"uwm-train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("uwm-train: interrupted (checkpoints saved so far are kept)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
