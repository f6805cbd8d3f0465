"""The user-facing API: one checkpoint as policy, forward/inverse dynamics and video predictor.

    from uwm_core import WorldModel
    wm = WorldModel.from_checkpoint("runs/x/checkpoint", device="cpu")
    actions = wm.predict_actions({"left": frames, "right": frames, "wrist": frames}, seed=0)

Images are dicts camera -> uint8 (obs_horizon, H, W, 3) of any H, W (resized and centre-cropped
inside, exactly as in training); a leading batch dimension is accepted and returned likewise.
Actions are in dataset units. Bad inputs raise ValueError saying what was expected and given.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .config import ModelConfig
from .model import UnifiedWorldModel
from .processing import ActionNormalizer, float_to_frames, model_view


class WorldModel:
    def __init__(self, model: UnifiedWorldModel, normalizer: ActionNormalizer, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.normalizer = normalizer
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "WorldModel":
        model, normalizer, _ = load_checkpoint(path, device)
        return cls(model, normalizer, device)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def cameras(self) -> list[str]:
        return list(self.config.cameras)

    @property
    def obs_horizon(self) -> int:
        return self.config.obs_horizon

    @property
    def action_horizon(self) -> int:
        return self.config.action_horizon

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def execute_steps(self) -> int:
        return self.config.execute_steps

    @property
    def variant(self) -> str:
        return self.config.variant

    # ------------------------------------------------------------------ API
    def predict_actions(self, images: dict, seed: int | None = None) -> np.ndarray:
        """Policy: sample an action chunk (action_horizon, action_dim) given current frames."""
        obs, batched = self._images(images, "images")
        act, _ = self.model.sample("policy", obs, generator=self._generator(seed))
        return self._actions_out(act, batched)

    def predict_next_frames(self, images: dict, actions, seed: int | None = None) -> dict:
        """Forward dynamics: the obs_horizon frames right after executing ``actions``."""
        obs, batched = self._images(images, "images")
        act = self._actions_in(actions, batched, obs.shape[0])
        _, latents = self.model.sample("forward_dynamics", obs, actions=act, generator=self._generator(seed))
        return self._frames_out(latents, batched)

    def infer_actions(self, images: dict, next_images: dict, seed: int | None = None) -> np.ndarray:
        """Inverse dynamics: the action chunk that leads from ``images`` to ``next_images``."""
        obs, batched = self._images(images, "images")
        nxt, next_batched = self._images(next_images, "next_images")
        if next_batched != batched or nxt.shape[0] != obs.shape[0]:
            raise ValueError(f"next_images: expected the same batch layout as images "
                             f"({obs.shape[0] if batched else 'unbatched'}), got {nxt.shape[0] if next_batched else 'unbatched'}")
        act, _ = self.model.sample("inverse_dynamics", obs, next_latents=self.model.encode_frames(nxt),
                                   generator=self._generator(seed))
        return self._actions_out(act, batched)

    def predict_video(self, images: dict, seed: int | None = None) -> dict:
        """Video prediction: plausible next frames with the actions marginalised out."""
        obs, batched = self._images(images, "images")
        _, latents = self.model.sample("video", obs, generator=self._generator(seed))
        return self._frames_out(latents, batched)

    def predict_joint(self, images: dict, seed: int | None = None) -> tuple[np.ndarray, dict]:
        """Joint sample of an action chunk and the next frames it leads to."""
        obs, batched = self._images(images, "images")
        act, latents = self.model.sample("joint", obs, generator=self._generator(seed))
        return self._actions_out(act, batched), self._frames_out(latents, batched)

    # ------------------------------------------------------------------ conversion
    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(self.device).manual_seed(int(seed))

    def _images(self, images: dict, name: str) -> tuple[torch.Tensor, bool]:
        """Validate a camera dict; return model-view images (B, V, To, 3, S, S) and whether batched."""
        if not isinstance(images, dict):
            raise ValueError(f"{name}: expected a dict camera -> uint8 array, got {type(images).__name__}")
        if set(images) != set(self.cameras):
            raise ValueError(f"{name}: expected cameras {self.cameras}, got {sorted(images)}")
        views, batch = [], None
        for cam in self.cameras:
            arr = images[cam]
            if isinstance(arr, torch.Tensor):
                arr = arr.cpu().numpy()
            arr = np.asarray(arr)
            if arr.dtype != np.uint8:
                raise ValueError(f"{name}[{cam!r}]: expected dtype uint8, got {arr.dtype}")
            if arr.ndim not in (4, 5) or arr.shape[-1] != 3 or arr.shape[-4] != self.obs_horizon or min(arr.shape[-3:-1]) < 1:
                raise ValueError(f"{name}[{cam!r}]: expected shape ({self.obs_horizon}, H, W, 3) or "
                                 f"(B, {self.obs_horizon}, H, W, 3), got {arr.shape}")
            this_batch = arr.shape[0] if arr.ndim == 5 else None
            if views and this_batch != batch:
                raise ValueError(f"{name}[{cam!r}]: batch layout {arr.shape[:-4] or 'unbatched'} differs from "
                                 f"{self.cameras[0]!r} ({batch if batch is not None else 'unbatched'})")
            batch = this_batch
            view = model_view(arr if arr.ndim == 5 else arr[None], self.config.resize_shape, self.image_size)
            views.append(view)  # (B, To, 3, S, S)
        return torch.stack(views, dim=1).to(self.device), batch is not None  # (B, V, To, 3, S, S)

    def _actions_in(self, actions, batched: bool, batch_size: int) -> torch.Tensor:
        arr = np.asarray(actions.cpu() if isinstance(actions, torch.Tensor) else actions)
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"actions: expected a numeric array, got dtype {arr.dtype}")
        expected = (batch_size, self.action_horizon, self.action_dim) if batched else (self.action_horizon, self.action_dim)
        if arr.shape != expected:
            raise ValueError(f"actions: expected shape {expected} (action_horizon={self.action_horizon}, "
                             f"action_dim={self.action_dim}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("actions: contain NaN or infinite values")
        norm = self.normalizer.normalize(arr.astype(np.float32))
        norm = norm if batched else norm[None]
        return torch.from_numpy(np.ascontiguousarray(norm)).to(self.device)

    def _actions_out(self, act: torch.Tensor, batched: bool) -> np.ndarray:
        out = self.normalizer.unnormalize(act.float().cpu().numpy()).astype(np.float32)
        return out if batched else out[0]

    def _frames_out(self, latents: torch.Tensor, batched: bool) -> dict:
        frames = float_to_frames(self.model.decode_latents(latents))  # (B, V, To, S, S, 3)
        return {cam: (frames[:, i] if batched else frames[0, i]) for i, cam in enumerate(self.cameras)}
