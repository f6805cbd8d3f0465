"""Unified World Model: coupled video-action diffusion with independent timesteps (paper III).

Tensors here are already pre-processed: current images (B, V, To, 3, S, S) in [0, 1], actions
(B, Ta, A) normalised to [-1, 1], next-frame latents (B, V, C, To, h, w) from ``self.vae``.
Proprioceptive state (B, To, S), when the model uses it, comes in dataset units: its min-max
statistics are buffers of the model (``set_state_stats``), saved with the weights.
Uint8 frames, resizing and action units are the job of ``uwm_core.world_model.WorldModel``.

Sampling modes (paper III-B) are settings of the two timesteps:

=================  ==================  ==================  ==============================
mode               action timestep     image timestep      denoised
=================  ==================  ==================  ==============================
policy             T -> 0              T (pure noise)      actions      p(a | o)
video              T (pure noise)      T -> 0              next frames  p(o' | o)
forward_dynamics   0 (given actions)   T -> 0              next frames  p(o' | o, a)
inverse_dynamics   T -> 0              0 (given frames)    actions      p(a | o, o')
joint              T -> 0              T -> 0 (same t)     both         p(a, o' | o)
=================  ==================  ==================  ==============================

"T" is the last training timestep (index num_train_steps - 1), the same value action-free
training samples get, so marginalisation at inference matches what the model was trained on.
What differs between the variants (uwm and the dp and pad baselines) is ``config.VARIANT_SPECS``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from ..config import ModelConfig
from ..processing import ActionNormalizer
from .noise_net import NoiseNet
from .obs_encoder import ObservationEncoder
from .precision import PRECISIONS
from .vae import LatentCodec


@dataclass
class Condition:
    """Everything derived from the current observation, computed once per chunk."""

    obs_parts: list  # per-layer AdaLN observation terms (None entries under a latent condition)
    cond_latents: torch.Tensor | None  # latent condition: clean current latents (B, V, C, To, h, w)


class UnifiedWorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        """Builds the model ``cfg`` describes; ``self.cfg`` is ``cfg`` with the VAE as built
        (``LatentCodec.config``), the config a checkpoint of this model records."""
        super().__init__()
        self.variant_spec = spec = cfg.variant_spec
        V, To, S = cfg.num_views, cfg.obs_horizon, cfg.image_size
        self.vae = LatentCodec(cfg.vae) if spec.image_diffusion else None
        self.cfg = cfg if self.vae is None else replace(cfg, vae=self.vae.config)
        latent_shape = None
        if self.vae is not None:
            h = S // self.vae.downsample
            latent_shape = (self.vae.latent_channels, To, h, h)
        self.latent_shape = latent_shape  # (C, To, h, w) per view
        self.obs_encoder = None if spec.latent_condition else ObservationEncoder(cfg.resnet_weights, cfg.obs_feature_dim)
        if self.obs_encoder is not None and cfg.freeze_obs_encoder:
            self.obs_encoder.requires_grad_(False)
        self.state_dim = cfg.state_dim if cfg.use_state else 0
        if cfg.use_state and self.state_dim < 1:
            raise ValueError("model.use_state is set but model.state_dim is 0: it is filled from a dataset with "
                             "proprioceptive state (uwm-train does this)")
        if self.state_dim:
            # (state - offset) / scale: min-max to [-1, 1] like the actions (set_state_stats)
            self.register_buffer("state_offset", torch.zeros(self.state_dim))
            self.register_buffer("state_scale", torch.ones(self.state_dim))
        obs_dim = 0 if spec.latent_condition else V * To * cfg.obs_feature_dim + To * self.state_dim
        self.net = NoiseNet(
            action_horizon=cfg.action_horizon, action_dim=cfg.action_dim, embed_dim=cfg.embed_dim,
            timestep_embed_dim=cfg.timestep_embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, num_registers=cfg.num_registers,
            obs_dim=obs_dim, num_timesteps=spec.num_timesteps, num_views=V,
            latent_shape=latent_shape, patch=cfg.patch,
            concat_condition=spec.latent_condition, action_mask_token=spec.action_free == "mask",
        )
        schedule = dict(num_train_timesteps=cfg.num_train_steps, beta_schedule=cfg.beta_schedule,
                        clip_sample=cfg.clip_sample, prediction_type="epsilon")
        self.train_scheduler = DDPMScheduler(**schedule)
        # DDIM with clip_sample: the normalised actions live in [-1, 1], the latents in
        # [-latent_clip, latent_clip] (a VAE buffer, known once the latent statistics are set).
        self.sample_scheduler = DDIMScheduler(**schedule)
        self.sample_scheduler.set_timesteps(cfg.num_inference_steps)
        self._schedule = schedule
        self._latent_scheduler: DDIMScheduler | None = None
        self.T = cfg.num_train_steps - 1  # the fully-noised timestep index

    def set_inference_precision(self, precision: str) -> "UnifiedWorldModel":
        """Compute the denoiser and the observation encoder in ``precision`` (fp32, bf16, fp16; see
        ``precision.resolve_precision``). The VAE, the scheduler steps and the clipping stay
        float32. For inference: training keeps float32 weights."""
        dtype = PRECISIONS[precision]
        self.net.to(dtype)
        if self.obs_encoder is not None:
            self.obs_encoder.to(dtype)
        return self

    # ------------------------------------------------------------------ conditioning
    def set_state_stats(self, normalizer: ActionNormalizer) -> None:
        """Normalise the proprioceptive state with ``normalizer``'s min-max statistics."""
        self.state_offset.copy_(torch.from_numpy(normalizer._offset))
        self.state_scale.copy_(torch.from_numpy(normalizer._scale))

    def encode_condition(self, obs_images: torch.Tensor, state: torch.Tensor | None = None) -> Condition:
        if self.variant_spec.latent_condition:
            return Condition([None] * (len(self.net.blocks) + 1), self.encode_frames(obs_images))
        return Condition(self.net.observation_parts(self.observation_features(obs_images, state)), None)

    def observation_features(self, obs_images: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V, To, 3, S, S) images [and (B, To, S) state] -> the AdaLN condition's observation
        features (B, V*To*F [+ To*S])."""
        feats = self.obs_encoder(obs_images)  # (B, V*To*F); no graph when frozen: nothing requires grad
        if not self.state_dim:
            return feats
        if state is None:
            raise ValueError(f"this model is conditioned on proprioceptive state ({self.state_dim} dims per "
                             f"frame): pass state (B, obs_horizon, {self.state_dim})")
        state = (state.float() - self.state_offset) / self.state_scale  # (B, To, S) in [-1, 1]
        return torch.cat([feats.float(), state.flatten(1)], dim=1)  # (B, V*To*F + To*S)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """(B, V, T, 3, S, S) in [0, 1] -> latents (B, V, C, T, h, w)."""
        B, V, T = images.shape[:3]
        z = self.vae.encode(images.flatten(0, 2))  # (B*V*T, C, h, w)
        return z.view(B, V, T, *z.shape[1:]).transpose(2, 3)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, V, C, T, h, w) -> images (B, V, T, 3, S, S) in [0, 1]."""
        B, V, C, T = latents.shape[:4]
        x = self.vae.decode(latents.transpose(2, 3).flatten(0, 2))  # (B*V*T, 3, S, S)
        return x.view(B, V, T, *x.shape[1:])

    def latent_sample_scheduler(self) -> DDIMScheduler:
        clip = float(self.vae.latent_clip)
        if self._latent_scheduler is None or self._latent_scheduler.config.clip_sample_range != clip:
            self._latent_scheduler = DDIMScheduler(**self._schedule, clip_sample_range=clip)
            self._latent_scheduler.set_timesteps(self.cfg.num_inference_steps)
        return self._latent_scheduler

    def _timesteps(self, t_action: torch.Tensor, t_image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The timesteps the denoiser is told: both, or the action's alone (one per variant spec)."""
        return (t_action, t_image)[:self.variant_spec.num_timesteps]

    # ------------------------------------------------------------------ training
    def loss(self, obs_images: torch.Tensor, actions: torch.Tensor, next_latents: torch.Tensor | None,
             has_actions: torch.Tensor | None = None, state: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Eq. 1 with independently sampled timesteps (UWM) or one shared timestep (PAD).

        ``has_actions`` (B,) bool marks robot samples; the others are action-free video samples,
        trained as the variant spec's ``action_free`` says. UWM: their action timestep is fixed
        to T and their actions are imputed with unit Gaussian noise (paper III-D), and the action
        loss is still averaged over all samples (-A2).
        """
        cfg, spec, B, device = self.cfg, self.variant_spec, actions.shape[0], actions.device
        if has_actions is None:
            has_actions = torch.ones(B, dtype=torch.bool, device=device)
        cond = self.encode_condition(obs_images, state)
        t_act = torch.randint(0, cfg.num_train_steps, (B,), device=device)
        t_obs = t_act if spec.shared_timestep else torch.randint(0, cfg.num_train_steps, (B,), device=device)
        if spec.action_free == "impute":
            t_act = torch.where(has_actions, t_act, torch.full_like(t_act, self.T))
            actions = torch.where(has_actions[:, None, None], actions, torch.randn_like(actions))
        act_noise = torch.randn_like(actions)
        noisy_actions = self.train_scheduler.add_noise(actions, act_noise, t_act)
        noisy_latents, img_noise = None, None
        if next_latents is not None and spec.image_diffusion:
            img_noise = torch.randn_like(next_latents)
            noisy_latents = self.train_scheduler.add_noise(next_latents, img_noise, t_obs)
        act_pred, img_pred = self.net(noisy_actions, noisy_latents, self._timesteps(t_act, t_obs), cond.obs_parts,
                                      cond.cond_latents, has_actions=has_actions)
        act_loss_each = F.mse_loss(act_pred, act_noise, reduction="none").mean(dim=(1, 2))  # (B,)
        if spec.action_free == "mask":
            act_loss = (act_loss_each * has_actions).sum() / has_actions.sum().clamp(min=1)
        else:
            act_loss = act_loss_each.mean()
        info = {"action_loss_each": act_loss_each.detach(), "t_action": t_act, "t_obs": t_obs}
        loss = cfg.action_loss_weight * act_loss
        if img_pred is not None:
            img_loss_each = F.mse_loss(img_pred, img_noise, reduction="none").flatten(1).mean(dim=1)  # (B,)
            loss = loss + cfg.image_loss_weight * img_loss_each.mean()
            info.update(image_loss_each=img_loss_each.detach(), image_loss=img_loss_each.mean().detach())
        info.update(action_loss=act_loss.detach(), loss=loss.detach())
        return loss, info

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, mode: str, obs_images: torch.Tensor, actions: torch.Tensor | None = None,
               next_latents: torch.Tensor | None = None, generator: torch.Generator | None = None,
               cache_condition: bool = True, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """DDIM sampling in one of the variant spec's modes.
        Returns (actions (B, Ta, A), latents (B, V, C, To, h, w) or None).

        ``actions`` (normalised) are required by forward_dynamics, ``next_latents`` by
        inverse_dynamics. ``cache_condition=False`` recomputes the AdaLN observation terms from the
        observation features at every step, as one Linear over [obs ; timestep] does in the
        authors' code (same result, slower; the benchmark's reference-equivalent path).
        ``state`` (B, To, S) in dataset units, for a model that uses proprioceptive state.
        """
        cfg, spec = self.cfg, self.variant_spec
        if mode not in spec.modes:
            raise ValueError(f"mode {mode!r} is not available for variant {cfg.variant!r} "
                             f"(available: {list(spec.modes)})")
        if spec.shared_timestep:
            mode = "joint"  # the only distribution one shared timestep represents
        B, device = obs_images.shape[0], obs_images.device
        denoise_act = mode in ("policy", "inverse_dynamics", "joint")
        denoise_img = spec.image_diffusion and mode in ("video", "forward_dynamics", "joint")

        def noise(shape):
            return torch.randn(shape, generator=generator, device=device)

        act = actions.float() if mode == "forward_dynamics" else noise((B, cfg.action_horizon, cfg.action_dim))
        img = None
        if self.vae is not None:
            img = next_latents.float() if mode == "inverse_dynamics" else noise((B, cfg.num_views, *self.latent_shape))
        # Timesteps of the modality that is not denoised: 0 when it is given clean, T when marginalised.
        fixed_act = torch.full((B,), 0 if mode == "forward_dynamics" else self.T, device=device, dtype=torch.long)
        fixed_img = torch.full((B,), 0 if mode == "inverse_dynamics" else self.T, device=device, dtype=torch.long)

        cond = self.encode_condition(obs_images, state)
        feats = None if cache_condition or spec.latent_condition else self.observation_features(obs_images, state)
        scheduler = self.sample_scheduler
        latent_scheduler = self.latent_sample_scheduler() if denoise_img else None
        for t in scheduler.timesteps:
            if feats is not None:
                cond = Condition(self.net.observation_parts(feats), None)
            t_step = torch.full((B,), int(t), device=device, dtype=torch.long)
            t_act = t_step if denoise_act else fixed_act
            t_img = t_step if denoise_img else fixed_img
            if device.type == "cuda":  # a compiled step's CUDA-graph outputs are consumed before the next step
                torch.compiler.cudagraph_mark_step_begin()
            act_eps, img_eps = self.net(act, img, self._timesteps(t_act, t_img), cond.obs_parts, cond.cond_latents)
            if denoise_act:
                act = scheduler.step(act_eps, t, act).prev_sample
            if denoise_img:
                img = latent_scheduler.step(img_eps, t, img).prev_sample
        return act, img
