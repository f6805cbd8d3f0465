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
"""
from __future__ import annotations

from dataclasses import dataclass

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

MODES = ("policy", "video", "forward_dynamics", "inverse_dynamics", "joint")
# Which modes each variant can sample from (DP has no image diffusion; PAD's single coupled
# timestep only represents the joint distribution, whose marginals are its policy and video).
VARIANT_MODES = {
    "uwm": MODES,
    "dp": ("policy",),
    "pad": ("policy", "video", "joint"),
}


@dataclass
class Condition:
    """Everything derived from the current observation, computed once per chunk."""

    obs_parts: list  # per-layer AdaLN observation terms (None entries for PAD)
    cond_latents: torch.Tensor | None  # PAD: clean current latents (B, V, C, To, h, w)


class UnifiedWorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        V, To, S = cfg.num_views, cfg.obs_horizon, cfg.image_size
        self.vae = LatentCodec(cfg.vae) if cfg.has_image_diffusion else None
        latent_shape = None
        if self.vae is not None:
            h = S // self.vae.downsample
            latent_shape = (self.vae.latent_channels, To, h, h)
        self.latent_shape = latent_shape  # (C, To, h, w) per view
        # PAD conditions on raw current latents (channel concat) instead of encoder features.
        self.obs_encoder = None if cfg.variant == "pad" else ObservationEncoder(cfg.resnet_weights, cfg.obs_feature_dim)
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
        obs_dim = 0 if self.obs_encoder is None else V * To * cfg.obs_feature_dim + To * self.state_dim
        ph, pw, pt = cfg.patch_shape
        self.net = NoiseNet(
            action_horizon=cfg.action_horizon, action_dim=cfg.action_dim, embed_dim=cfg.embed_dim,
            timestep_embed_dim=cfg.timestep_embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, num_registers=cfg.num_registers,
            obs_dim=obs_dim, num_timesteps=2 if cfg.variant == "uwm" else 1, num_views=V,
            latent_shape=latent_shape, patch=(pt, ph, pw),
            concat_condition=cfg.variant == "pad", action_mask_token=cfg.variant == "pad",
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
        if self.obs_encoder is None:  # PAD
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

    def _timesteps(self, *ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ts if self.cfg.variant == "uwm" else ts[:1]  # DP and PAD: one timestep

    # ------------------------------------------------------------------ training
    def loss(self, obs_images: torch.Tensor, actions: torch.Tensor, next_latents: torch.Tensor | None,
             has_actions: torch.Tensor | None = None, state: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Eq. 1 with independently sampled timesteps (UWM) or one coupled timestep (PAD).

        ``has_actions`` (B,) bool marks robot samples; the others are action-free video samples:
        their action timestep is fixed to T and their actions are imputed with unit Gaussian noise
        (paper III-D), and the action loss is still averaged over all samples (-A2).
        """
        cfg, B, device = self.cfg, actions.shape[0], actions.device
        if has_actions is None:
            has_actions = torch.ones(B, dtype=torch.bool, device=device)
        cond = self.encode_condition(obs_images, state)
        t_act = torch.randint(0, cfg.num_train_steps, (B,), device=device)
        t_obs = t_act if cfg.variant == "pad" else torch.randint(0, cfg.num_train_steps, (B,), device=device)
        if cfg.variant == "uwm":
            t_act = torch.where(has_actions, t_act, torch.full_like(t_act, self.T))
            actions = torch.where(has_actions[:, None, None], actions, torch.randn_like(actions))
        act_noise = torch.randn_like(actions)
        noisy_actions = self.train_scheduler.add_noise(actions, act_noise, t_act)
        noisy_latents, img_noise = None, None
        if next_latents is not None and self.vae is not None:
            img_noise = torch.randn_like(next_latents)
            noisy_latents = self.train_scheduler.add_noise(next_latents, img_noise, t_obs)
        act_pred, img_pred = self.net(noisy_actions, noisy_latents, self._timesteps(t_act, t_obs), cond.obs_parts,
                                      cond.cond_latents, has_actions=has_actions)
        act_loss_each = F.mse_loss(act_pred, act_noise, reduction="none").mean(dim=(1, 2))  # (B,)
        if cfg.variant == "pad":  # PAD masks the actions of video samples out of the loss instead
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
        """DDIM sampling in one of MODES. Returns (actions (B, Ta, A), latents (B, V, C, To, h, w) or None).

        ``actions`` (normalised) are required by forward_dynamics, ``next_latents`` by
        inverse_dynamics. ``cache_condition=False`` recomputes the AdaLN observation terms from the
        observation features at every step, as one Linear over [obs ; timestep] does in the
        authors' code (same result, slower; the benchmark's reference-equivalent path).
        ``state`` (B, To, S) in dataset units, for a model that uses proprioceptive state.
        """
        cfg = self.cfg
        if mode not in VARIANT_MODES[cfg.variant]:
            raise ValueError(f"mode {mode!r} is not available for variant {cfg.variant!r} "
                             f"(available: {list(VARIANT_MODES[cfg.variant])})")
        if cfg.variant == "pad":
            mode = "joint"
        B, device = obs_images.shape[0], obs_images.device
        denoise_act = mode in ("policy", "inverse_dynamics", "joint")
        denoise_img = self.vae is not None and mode in ("video", "forward_dynamics", "joint")

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
        feats = None if cache_condition or self.obs_encoder is None else self.observation_features(obs_images, state)
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
