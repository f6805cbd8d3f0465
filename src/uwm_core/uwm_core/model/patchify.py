"""3D (time x space) patchify / unpatchify of multi-view VAE latents."""
import torch
from einops import rearrange
from torch import nn


class LatentPatchifier(nn.Module):
    """Latents (B, V, C, T, H, W) <-> tokens (B, V*t*h*w, D) with patches (pt, ph, pw).

    ``in_multiplier`` > 1 lets PAD feed clean current latents concatenated on channels.
    """

    def __init__(self, num_views: int, latent_shape: tuple[int, int, int, int], patch: tuple[int, int, int],
                 dim: int, in_multiplier: int = 1):
        super().__init__()
        C, T, H, W = latent_shape
        pt, ph, pw = patch
        self.num_views, self.channels, self.patch = num_views, C, patch
        self.grid = (T // pt, H // ph, W // pw)
        self.encoder = nn.Conv3d(C * in_multiplier, dim, kernel_size=patch, stride=patch)
        # Initialise like a Linear layer (DiT), not a convolution.
        nn.init.normal_(self.encoder.weight.view(dim, -1), std=0.02)
        nn.init.zeros_(self.encoder.bias)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return self.num_views * t * h * w

    @property
    def patch_values(self) -> int:
        pt, ph, pw = self.patch
        return self.channels * pt * ph * pw

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        x = rearrange(latents, "b v c t h w -> (b v) c t h w")
        x = self.encoder(x)  # (B*V, D, t, h, w)
        return rearrange(x, "(b v) d t h w -> b (v t h w) d", v=self.num_views)  # (B, N, D)

    def unpatchify(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N, C*pt*ph*pw) per-token patch values -> latents (B, V, C, T, H, W)."""
        t, h, w = self.grid
        pt, ph, pw = self.patch
        return rearrange(values, "b (v t h w) (c pt ph pw) -> b v c (t pt) (h ph) (w pw)",
                         v=self.num_views, t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)
