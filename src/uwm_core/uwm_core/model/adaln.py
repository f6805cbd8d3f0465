"""DiT blocks with AdaLN-Zero conditioning (Peebles & Xie 2022).

The conditioning vector is [observation features ; timestep embedding]. Its linear map is split
into an observation part and a timestep part (SiLU acts elementwise, so this is the same
function as one Linear over the concatenation). The observation part does not change between
denoising steps, so a sampler computes it once per chunk and reuses it for every step.
"""
import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class AdaLNModulation(nn.Module):
    """SiLU -> Linear over [obs ; temb], producing ``chunks`` vectors of size ``dim``."""

    def __init__(self, obs_dim: int, time_dim: int, dim: int, chunks: int):
        super().__init__()
        self.chunks = chunks
        self.obs = nn.Linear(obs_dim, chunks * dim) if obs_dim > 0 else None
        self.time = nn.Linear(time_dim, chunks * dim, bias=self.obs is None)

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

    def forward(self, obs_part: torch.Tensor | None, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.time(F.silu(temb))  # (B, chunks*dim)
        if obs_part is not None:
            out = out + obs_part
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

    def __init__(self, dim: int, obs_dim: int, time_dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = AdaLNModulation(obs_dim, time_dim, dim, chunks=6)

    def forward(self, x: torch.Tensor, obs_part: torch.Tensor | None, temb: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(obs_part, temb)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x  # (B, N, D)


class AdaLNFinalLayer(nn.Module):
    """Final norm with conditioned shift/scale, before the per-modality output heads."""

    def __init__(self, dim: int, obs_dim: int, time_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = AdaLNModulation(obs_dim, time_dim, dim, chunks=2)

    def forward(self, x: torch.Tensor, obs_part: torch.Tensor | None, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(obs_part, temb)
        return modulate(self.norm(x), shift, scale)
