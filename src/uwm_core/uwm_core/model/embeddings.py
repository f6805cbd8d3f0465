"""Diffusion-timestep embeddings: the DDPM sinusoidal encoding followed by a small MLP."""
import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer or float timesteps -> (B, dim) [sin | cos] features (Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


class TimestepEncoder(nn.Module):
    """Encodes one or more timesteps with a shared sinusoidal code, concatenates, projects.

    UWM passes (action t, observation t); the DP and PAD baselines pass a single t.
    """

    def __init__(self, num_timesteps: int, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.dim = dim
        hidden = int(dim * mlp_ratio)
        self.proj = nn.Sequential(nn.Linear(num_timesteps * dim, hidden), nn.Mish(), nn.Linear(hidden, dim))

    def forward(self, *timesteps: torch.Tensor) -> torch.Tensor:
        codes = [sinusoidal_embedding(t, self.dim) for t in timesteps]  # each (B, dim), float32
        return self.proj(torch.cat(codes, dim=-1).to(self.proj[0].weight.dtype))  # (B, dim)
