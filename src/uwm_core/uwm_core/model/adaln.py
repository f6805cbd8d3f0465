"""DiT blocks with AdaLN-Zero conditioning (Peebles & Xie 2022).

The conditioning vector is [observation features ; timestep embedding]. Its linear map is split
into an observation part and a timestep part (SiLU acts elementwise, so this is the same
function as one Linear over the concatenation). The observation part does not change between
denoising steps, so a sampler computes it once per chunk and reuses it for every step.

With ``groups`` > 1 the timestep part has one Linear output per token group (the action tokens;
the latent patches and registers), so each modality's tokens are modulated for their own pair of
timesteps instead of one modulation serving both (README, "The model": with one shared
modulation the other modality's clean input made each prediction worse, not better).
"""
import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, D); shift and scale (B, 1, D) for all tokens or (B, N, D) per token."""
    return x * (1 + scale) + shift


class AdaLNModulation(nn.Module):
    """SiLU -> Linear over [obs ; temb], producing ``chunks`` vectors of size ``dim`` (per token
    group: the observation part is shared, the timestep part and its bias are the group's own)."""

    def __init__(self, obs_dim: int, time_dim: int, dim: int, chunks: int, groups: int = 1):
        super().__init__()
        self.chunks, self.groups = chunks, groups
        self.obs = nn.Linear(obs_dim, chunks * dim) if obs_dim > 0 else None
        self.time = nn.Linear(time_dim, groups * chunks * dim, bias=self.obs is None or groups > 1)

    def zero_(self):
        """AdaLN-Zero: zero shifts, scales and gates make every block start as the identity."""
        for layer in (self.obs, self.time):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def observation_part(self, obs_feat: torch.Tensor | None) -> torch.Tensor | None:
        """(B, obs_dim) -> (B, chunks*dim): the step-independent part, cacheable per chunk."""
        return None if self.obs is None else self.obs(F.silu(obs_feat))

    def forward(self, obs_part: torch.Tensor | None, temb: torch.Tensor,
                token_groups: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Returns ``chunks`` tensors (B, 1, dim), or (B, N, dim) per token when there are groups:
        ``token_groups`` (N,) says each token's group."""
        out = self.time(F.silu(temb)).unflatten(-1, (self.groups, -1))  # (B, G, chunks*dim)
        if obs_part is not None:
            out = out + obs_part.unsqueeze(1)
        if self.groups > 1:
            out = out[:, token_groups]  # (B, N, chunks*dim)
        return out.chunk(self.chunks, dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class AdaLNZeroBlock(nn.Module):
    """Pre-norm transformer block; shift/scale/gate of both sub-layers come from the condition."""

    def __init__(self, dim: int, obs_dim: int, time_dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 groups: int = 1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = AdaLNModulation(obs_dim, time_dim, dim, chunks=6, groups=groups)

    def forward(self, x: torch.Tensor, obs_part: torch.Tensor | None, temb: torch.Tensor,
                token_groups: torch.Tensor | None = None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(obs_part, temb, token_groups)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x  # (B, N, D)


class AdaLNFinalLayer(nn.Module):
    """Final norm with conditioned shift/scale, before the per-modality output heads."""

    def __init__(self, dim: int, obs_dim: int, time_dim: int, groups: int = 1):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = AdaLNModulation(obs_dim, time_dim, dim, chunks=2, groups=groups)

    def forward(self, x: torch.Tensor, obs_part: torch.Tensor | None, temb: torch.Tensor,
                token_groups: torch.Tensor | None = None) -> torch.Tensor:
        shift, scale = self.modulation(obs_part, temb, token_groups)
        return modulate(self.norm(x), shift, scale)
