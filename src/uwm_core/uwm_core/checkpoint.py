"""Checkpoint directories: weights (safetensors), resolved config, normaliser stats, training state.

    <checkpoint>/
      config.yaml            resolved config: ``model:`` (ModelConfig) and, from uwm-train, ``train:``
      model.safetensors      model weights (EMA weights when written by uwm-train), VAE included
      normalizer.json        action statistics used to normalise the training data
      training_state.pt      optional (uwm-train's latest checkpoint): what exact resume needs beside
                             model.safetensors: raw trained weights, optimiser, LR schedule, EMA step
                             count, sampler position and RNG states (uwm_core.training.checkpoints)

A checkpoint is written into a temporary sibling directory, flushed, and then swapped with the one
under the final name in one atomic step: a kill at any instant leaves a complete checkpoint there
(``uwm_core.durable``); what a kill leaves beside it is cleared at the next start of the run.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ModelConfig, model_config_from_dict, model_config_to_dict
from .durable import replace_directory, staging_path
from .model import UnifiedWorldModel
from .processing import ActionNormalizer

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.json"
TRAINING_STATE_FILE = "training_state.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def state_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, model: UnifiedWorldModel, normalizer: ActionNormalizer,
                    train_config: dict | None = None, training_state: dict | None = None,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one at ``path``).

    ``weights`` overrides the model's own state dict (uwm-train passes the EMA weights).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    tmp.mkdir()
    try:
        config = {"model": model_config_to_dict(model.cfg)}
        if train_config is not None:
            config["train"] = train_config
        with open(tmp / CONFIG_FILE, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        save_file(weights if weights is not None else state_for_saving(model), str(tmp / WEIGHTS_FILE),
                  metadata={"format": "uwm-ros/1", "variant": model.cfg.variant})
        normalizer.save(tmp / NORMALIZER_FILE)
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE_FILE)
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_checkpoint_config(path: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """The ModelConfig and the whole resolved config dict of a checkpoint directory."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; {path} is not a uwm checkpoint directory")
    try:
        with open(config_path) as f:
            config = yaml.safe_load(f)
        return model_config_from_dict(config["model"]), config
    except Exception as exc:
        raise CheckpointError(f"{config_path}: invalid checkpoint config ({exc})") from exc


def load_weights(model: torch.nn.Module, weights_path: Path, config_path: Path | None = None,
                 strict: bool = True, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Load a safetensors file into ``model``; mismatches name the tensor, both shapes and the files."""
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file is missing")
    expected = model.state_dict()
    against = f" (the model was built from {config_path})" if config_path else ""
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            if strict:
                missing = sorted(k for k in expected if k not in keys and not k.startswith(skip_prefixes))
                unexpected = sorted(k for k in keys if k not in expected)
                if missing or unexpected:
                    raise CheckpointError(
                        f"{weights_path}: weights do not match the model{against}: "
                        + (f"missing {len(missing)} tensors (first: {missing[0]})" if missing else "")
                        + ("; " if missing and unexpected else "")
                        + (f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})" if unexpected else "")
                    )
            loaded = {}
            for key in keys & expected.keys():
                if key.startswith(skip_prefixes):
                    continue
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(expected[key].shape):
                    raise CheckpointError(
                        f"{weights_path}: tensor {key!r} has shape {list(shape)} in the file but "
                        f"{list(expected[key].shape)} in the model{against}"
                    )
                loaded[key] = f.get_tensor(key)
    except SafetensorError as exc:
        raise CheckpointError(f"{weights_path}: cannot read weights, the file is truncated or corrupt ({exc})") from exc
    model.load_state_dict(loaded, strict=False)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[UnifiedWorldModel, ActionNormalizer, dict]:
    """Build the model from the checkpoint's config and load its weights and normaliser.

    ``path`` is a checkpoint directory or a uwm-train run directory (its latest checkpoint)."""
    path = Path(path)
    if (path / "checkpoint" / CONFIG_FILE).is_file():
        path = path / "checkpoint"
    cfg, config = read_checkpoint_config(path)
    normalizer_path = path / NORMALIZER_FILE
    try:
        normalizer = ActionNormalizer.load(normalizer_path)
    except FileNotFoundError:
        raise CheckpointError(f"{normalizer_path}: normaliser statistics are missing") from None
    except Exception as exc:
        raise CheckpointError(f"{normalizer_path}: invalid normaliser statistics ({exc})") from exc
    if normalizer.dim != cfg.action_dim:
        raise CheckpointError(f"{normalizer_path}: statistics have {normalizer.dim} action dims, "
                              f"{path / CONFIG_FILE} says action_dim={cfg.action_dim}")
    # Pretrained parts come from the checkpoint itself: never download at load time.
    cfg.resnet_weights = None
    cfg.vae.pretrained = None
    model = UnifiedWorldModel(cfg)
    load_weights(model, path / WEIGHTS_FILE, path / CONFIG_FILE)
    model.to(device).eval()
    return model, normalizer, config
