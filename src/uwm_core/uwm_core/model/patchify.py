"""3D (time x space) patchify / unpatchify of multi-view VAE latents."""
import math

import torch
from einops import rearrange
from torch import nn

from ..config import PatchShape


class LatentPatchifier(nn.Module):
    """Latents (B, V, C, T, H, W) <-> tokens (B, V*t*h*w, D), one token per ``patch`` of latents.

    ``in_multiplier`` > 1 lets PAD feed clean current latents concatenated on channels.
    """

    def __init__(self, num_views: int, latent_shape: tuple[int, int, int, int], patch: PatchShape,
                 dim: int, in_multiplier: int = 1):
        super().__init__()
        C, T, H, W = latent_shape
        self.num_views, self.channels, self.patch = num_views, C, patch
        self.grid = (T // patch.time, H // patch.height, W // patch.width)  # tokens along (t, h, w)
        kernel = (patch.time, patch.height, patch.width)  # the latents' (T, H, W) axis order
        self.encoder = nn.Conv3d(C * in_multiplier, dim, kernel_size=kernel, stride=kernel)
        # Initialise like a Linear layer (DiT), not a convolution.
        nn.init.normal_(self.encoder.weight.view(dim, -1), std=0.02)
        nn.init.zeros_(self.encoder.bias)

    @property
    def num_tokens(self) -> int:
        return self.num_views * math.prod(self.grid)

    @property
    def patch_values(self) -> int:
        """Latent values per token: C * time * height * width."""
        return self.channels * math.prod(self.patch)

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        x = rearrange(latents, "b v c t h w -> (b v) c t h w")
        x = self.encoder(x)  # (B*V, D, t, h, w)
        return rearrange(x, "(b v) d t h w -> b (v t h w) d", v=self.num_views)  # (B, N, D)

    def unpatchify(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N, C*pt*ph*pw) per-token patch values, ordered like the encoder's kernel
        (channel, time, height, width) -> latents (B, V, C, T, H, W)."""
        t, h, w = self.grid
        return rearrange(values, "b (v t h w) (c pt ph pw) -> b v c (t pt) (h ph) (w pw)",
                         v=self.num_views, t=t, h=h, w=w,
                         pt=self.patch.time, ph=self.patch.height, pw=self.patch.width)
