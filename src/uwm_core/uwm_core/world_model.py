"""The user-facing API: one checkpoint as policy, forward/inverse dynamics and video predictor.

    from uwm_core import WorldModel
    wm = WorldModel.from_checkpoint("runs/x/checkpoint", device="cpu")   # precision="auto": bf16 where native
    actions = wm.predict_actions({"left": frames, "right": frames, "wrist": frames}, seed=0)

Images are dicts camera -> uint8 (obs_horizon, H, W, 3) of any H, W (resized and centre-cropped
inside, exactly as in training); a leading batch dimension is accepted and returned likewise.
Actions are in dataset units. A model trained with proprioception (``wm.state_dim`` > 0) also
takes ``state=``: float (obs_horizon, state_dim), ``uwm_core.spatial.proprio_state`` of the
current frames, in dataset units. Bad inputs raise ValueError saying what was expected and given.

``precision`` (auto, fp32, bf16, fp16 on CUDA) is the denoiser's and observation encoder's
arithmetic; ``auto`` is bf16 where the CPU or GPU computes it natively (about 2x faster than fp32 at
the paper preset), else fp32. Every mode uses it; the VAE and the DDIM steps stay float32.
``compile`` (default: on CUDA only) compiles the denoiser step with static shapes (CUDA graphs on
CUDA) and warms it up at batch 1; where compilation fails it stays eager and ``compile_status``
says why. On the project's CPU it gains nothing at the paper preset (0.93x), so it is off there.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .config import ModelConfig
from .model import UnifiedWorldModel
from .model.precision import resolve_precision
from .processing import ActionNormalizer, float_to_frames, model_view


LOG = logging.getLogger(__name__)


class WorldModel:
    def __init__(self, model: UnifiedWorldModel, normalizer: ActionNormalizer, device: str | torch.device = "cpu",
                 precision: str = "auto", compile: bool | None = None):
        """Takes ``model`` over for inference: moved to ``device``, eval mode, cast to ``precision``,
        and compiled when ``compile`` (None: on CUDA)."""
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(device).eval().set_inference_precision(self.precision)
        self.normalizer = normalizer
        self.compile_status = "eager"
        if self.device.type == "cuda" if compile is None else compile:
            self.compile()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        precision: str = "auto", compile: bool | None = None) -> "WorldModel":
        model, normalizer, _ = load_checkpoint(path, device)
        return cls(model, normalizer, device, precision, compile)

    def compile(self) -> str:
        """Compile the denoiser step for batch 1 (static shapes; CUDA graphs on CUDA) and run it once,
        so that the first real chunk is fast. Falls back to eager, logging why, when torch.compile
        is unavailable (no C++ compiler or Triton, an unsupported op). Returns ``compile_status``."""
        net = self.model.net
        cuda = self.device.type == "cuda"
        net.forward = torch.compile(net.forward, dynamic=False, mode="reduce-overhead" if cuda else None)
        try:
            S, cfg = self.image_size, self.config
            state = torch.zeros(1, cfg.obs_horizon, self.state_dim, device=self.device) if self.state_dim else None
            self.model.sample("policy", torch.zeros(1, cfg.num_views, cfg.obs_horizon, 3, S, S, device=self.device),
                              generator=self._generator(0), state=state)
        except Exception as err:  # torch raises many kinds (BackendCompilerFailed, InductorError, OSError, ...)
            del net.forward  # the class's eager forward again
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            self.compile_status = f"eager (torch.compile unavailable: {type(err).__name__}: {reason[:200]})"
            LOG.warning("%s", self.compile_status)
        else:
            self.compile_status = "compiled" + (" with CUDA graphs" if cuda else "")
        return self.compile_status

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

    @property
    def state_dim(self) -> int:
        """Proprioceptive state dims per frame the model takes (0: images only)."""
        return self.model.state_dim

    # ------------------------------------------------------------------ API
    def predict_actions(self, images: dict, seed: int | None = None, *, state=None) -> np.ndarray:
        """Policy: sample an action chunk (action_horizon, action_dim) given current frames."""
        obs, batched = self._images(images, "images")
        act, _ = self.model.sample("policy", obs, generator=self._generator(seed),
                                   state=self._state_in(state, batched, obs.shape[0]))
        return self._actions_out(act, batched)

    def predict_next_frames(self, images: dict, actions, seed: int | None = None, *, state=None) -> dict:
        """Forward dynamics: the obs_horizon frames right after executing ``actions``."""
        obs, batched = self._images(images, "images")
        act = self._actions_in(actions, batched, obs.shape[0])
        _, latents = self.model.sample("forward_dynamics", obs, actions=act, generator=self._generator(seed),
                                       state=self._state_in(state, batched, obs.shape[0]))
        return self._frames_out(latents, batched)

    def infer_actions(self, images: dict, next_images: dict, seed: int | None = None, *, state=None) -> np.ndarray:
        """Inverse dynamics: the action chunk that leads from ``images`` to ``next_images``."""
        obs, batched = self._images(images, "images")
        nxt, next_batched = self._images(next_images, "next_images")
        if next_batched != batched or nxt.shape[0] != obs.shape[0]:
            raise ValueError(f"next_images: expected the same batch layout as images "
                             f"({obs.shape[0] if batched else 'unbatched'}), got {nxt.shape[0] if next_batched else 'unbatched'}")
        act, _ = self.model.sample("inverse_dynamics", obs, next_latents=self.model.encode_frames(nxt),
                                   generator=self._generator(seed), state=self._state_in(state, batched, obs.shape[0]))
        return self._actions_out(act, batched)

    def predict_video(self, images: dict, seed: int | None = None, *, state=None) -> dict:
        """Video prediction: plausible next frames with the actions marginalised out."""
        obs, batched = self._images(images, "images")
        _, latents = self.model.sample("video", obs, generator=self._generator(seed),
                                       state=self._state_in(state, batched, obs.shape[0]))
        return self._frames_out(latents, batched)

    def predict_joint(self, images: dict, seed: int | None = None, *, state=None) -> tuple[np.ndarray, dict]:
        """Joint sample of an action chunk and the next frames it leads to."""
        obs, batched = self._images(images, "images")
        act, latents = self.model.sample("joint", obs, generator=self._generator(seed),
                                         state=self._state_in(state, batched, obs.shape[0]))
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

    def _state_in(self, state, batched: bool, batch_size: int) -> torch.Tensor | None:
        if not self.state_dim:
            if state is not None:
                raise ValueError("state: this model was trained without proprioceptive state; pass images only")
            return None
        if state is None:
            raise ValueError(f"state: this model was trained with proprioceptive state; pass state=float "
                             f"({self.obs_horizon}, {self.state_dim}) (uwm_core.spatial.proprio_state of the current frames)")
        arr = np.asarray(state.cpu() if isinstance(state, torch.Tensor) else state)
        expected = (batch_size, self.obs_horizon, self.state_dim) if batched else (self.obs_horizon, self.state_dim)
        if arr.shape != expected or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"state: expected a numeric array of shape {expected} (obs_horizon={self.obs_horizon}, "
                             f"state_dim={self.state_dim}), got {arr.dtype} {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("state: contains NaN or infinite values")
        arr = arr.astype(np.float32) if batched else arr[None].astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)

    def _actions_out(self, act: torch.Tensor, batched: bool) -> np.ndarray:
        out = self.normalizer.unnormalize(act.float().cpu().numpy()).astype(np.float32)
        return out if batched else out[0]

    def _frames_out(self, latents: torch.Tensor, batched: bool) -> dict:
        frames = float_to_frames(self.model.decode_latents(latents))  # (B, V, To, S, S, 3)
        return {cam: (frames[:, i] if batched else frames[0, i]) for i, cam in enumerate(self.cameras)}
