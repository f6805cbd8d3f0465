"""The diffusion transformer: [action tokens | latent patch tokens | registers] -> noise predictions."""
from __future__ import annotations

import torch
from torch import nn

from ..config import PatchShape
from .adaln import AdaLNFinalLayer, AdaLNModulation, AdaLNZeroBlock
from .embeddings import TimestepEncoder
from .patchify import LatentPatchifier


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Mish(), nn.Linear(hidden, out_dim))


class NoiseNet(nn.Module):
    """Predicts the action noise and the latent-image noise under one or two diffusion timesteps.

    Conditioning (AdaLN): ``obs_dim``-dimensional observation features (0 for PAD, which
    conditions by channel concatenation instead) and the embedding of the timestep(s).
    """

    def __init__(self, *, action_horizon: int, action_dim: int, embed_dim: int, timestep_embed_dim: int,
                 depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, num_registers: int,
                 obs_dim: int, num_timesteps: int, num_views: int = 0,
                 latent_shape: tuple[int, int, int, int] | None = None, patch: PatchShape | None = None,
                 concat_condition: bool = False, action_mask_token: bool = False):
        super().__init__()
        D = embed_dim
        hidden = int(max(action_dim, D) * mlp_ratio)
        self.action_horizon = action_horizon
        self.action_encoder = mlp(action_dim, hidden, D)  # shared across the chunk's steps
        self.action_decoder = mlp(D, hidden, action_dim)
        self.patchifier = None
        num_image_tokens = 0
        if latent_shape is not None:
            self.patchifier = LatentPatchifier(num_views, latent_shape, patch, D, in_multiplier=2 if concat_condition else 1)
            self.image_decoder = mlp(D, hidden, self.patchifier.patch_values)
            num_image_tokens = self.patchifier.num_tokens
        # PAD's learned token replacing the actions of action-free samples.
        self.action_mask_token = nn.Parameter(torch.zeros(1, 1, D)) if action_mask_token else None
        self.registers = nn.Parameter(torch.zeros(1, num_registers, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, action_horizon + num_image_tokens + num_registers, D))
        self.image_slice = slice(action_horizon, action_horizon + num_image_tokens)
        self.time_encoder = TimestepEncoder(num_timesteps, timestep_embed_dim)
        self.blocks = nn.ModuleList(
            AdaLNZeroBlock(D, obs_dim, timestep_embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)
        )
        self.final = AdaLNFinalLayer(D, obs_dim, timestep_embed_dim)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.registers, self.pos_embed, self.action_mask_token):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        # AdaLN-Zero: all modulations and the output layers start at zero.
        for m in self.modules():
            if isinstance(m, AdaLNModulation):
                m.zero_()
        heads = [self.action_decoder] + ([self.image_decoder] if self.patchifier is not None else [])
        for head in heads:
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def observation_parts(self, obs_feat: torch.Tensor | None) -> list[torch.Tensor | None]:
        """Per-layer AdaLN terms from the observation features: constant over denoising steps."""
        layers = [*self.blocks, self.final]
        if obs_feat is not None:
            obs_feat = obs_feat.to(self.dtype)
        return [layer.modulation.observation_part(obs_feat) for layer in layers]

    @property
    def dtype(self) -> torch.dtype:
        """The precision the network computes in (float32 unless cast for inference)."""
        return self.pos_embed.dtype

    def forward(self, actions: torch.Tensor, latents: torch.Tensor | None, timesteps: tuple[torch.Tensor, ...],
                obs_parts: list[torch.Tensor | None], cond_latents: torch.Tensor | None = None,
                has_actions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """actions (B, Ta, A); latents (B, V, C, T, h, w); timesteps: each (B,).

        Returns the predicted action noise (B, Ta, A) and latent noise (B, V, C, T, h, w) or None,
        in float32 whatever the network's precision (the scheduler steps stay in float32).
        """
        B, dtype = actions.shape[0], self.dtype
        actions = actions.to(dtype)
        latents = None if latents is None else latents.to(dtype)
        cond_latents = None if cond_latents is None else cond_latents.to(dtype)
        tokens = [self.action_encoder(actions)]  # (B, Ta, D)
        if self.action_mask_token is not None and has_actions is not None:
            tokens[0] = torch.where(has_actions[:, None, None], tokens[0], self.action_mask_token.expand(B, self.action_horizon, -1))
        if self.patchifier is not None:
            image_in = latents if cond_latents is None else torch.cat([latents, cond_latents], dim=2)
            tokens.append(self.patchifier.patchify(image_in))  # (B, Ni, D)
        tokens.append(self.registers.expand(B, -1, -1))  # (B, R, D)
        x = torch.cat(tokens, dim=1) + self.pos_embed  # (B, N, D)
        temb = self.time_encoder(*timesteps)  # (B, Dt)
        for block, obs_part in zip(self.blocks, obs_parts):
            x = block(x, obs_part, temb)
        x = self.final(x, obs_parts[-1], temb)
        action_noise = self.action_decoder(x[:, :self.action_horizon]).float()  # (B, Ta, A)
        if self.patchifier is None:
            return action_noise, None
        latent_noise = self.patchifier.unpatchify(self.image_decoder(x[:, self.image_slice])).float()  # (B, V, C, T, h, w)
        return action_noise, latent_noise
