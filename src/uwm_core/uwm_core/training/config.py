"""uwm-train's configuration: every setting with its default (TrainConfig), read from a recipe
(config/train/<name>.yaml) and key=value overrides, or from a run directory to resume."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import config_dir
from ..data import ColorJitter

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
    trace_samples: bool = False  # trace/rank<r>.jsonl: every step's sample ids and a parameter checksum


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
    """The configuration as plain data (config.yaml, checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
