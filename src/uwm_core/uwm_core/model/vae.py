"""Frozen image autoencoder (diffusers AutoencoderKL) mapping frames to normalised latents.

``pretrained`` loads e.g. the SDXL VAE from the Hugging Face hub or a local directory; with
``pretrained: null`` a randomly initialised AutoencoderKL of the configured architecture is built
(the SDXL architecture is the default), optionally fitted to training frames by ``fit``.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn

from ..config import VAEConfig

LATENT_STD = 1 / 3  # latents' standard deviation after an estimated latent_scale


def _load_pretrained(name: str) -> AutoencoderKL:
    try:
        return AutoencoderKL.from_pretrained(name)
    except Exception as exc:
        raise RuntimeError(
            f"cannot load the pretrained VAE {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            f"Download it where the network allows it (huggingface-cli download {name} --local-dir vae/) "
            f"and set model.vae.pretrained=/path/to/vae, or model.vae.pretrained=null for a randomly "
            f"initialised VAE of the same architecture."
        ) from exc


class LatentCodec(nn.Module):
    """Images in [0, 1] (N, 3, H, W) <-> latents (N, C, H/f, W/f) scaled for diffusion.

    ``config`` is ``cfg`` with the architecture of the VAE as built (``cfg`` is left as given):
    for a pretrained VAE that is the loaded one's, so a checkpoint rebuilds it without the hub.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.pretrained:
            self.vae = _load_pretrained(cfg.pretrained)
        else:
            n = len(cfg.block_out_channels)
            self.vae = AutoencoderKL(
                in_channels=3, out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups,
            )
        self.vae.requires_grad_(False)
        self.vae.eval()
        built = self.vae.config
        self.config = replace(cfg, block_out_channels=list(built.block_out_channels),
                              layers_per_block=built.layers_per_block, latent_channels=built.latent_channels,
                              norm_num_groups=built.norm_num_groups)
        self.downsample = self.config.downsample
        self.latent_channels = self.config.latent_channels
        scaling = cfg.scaling_factor if cfg.scaling_factor is not None else self.vae.config.scaling_factor
        # Saved with the weights: a data-estimated latent_scale must travel with the checkpoint.
        self.register_buffer("scaling_factor", torch.tensor(float(scaling)))
        self.register_buffer("latent_scale", torch.tensor(float(cfg.latent_scale or 0.0)))
        self.register_buffer("latent_clip", torch.tensor(float(cfg.latent_clip or 0.0)))

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen: never in training mode
        return self

    @property
    def needs_latent_statistics(self) -> bool:
        return float(self.latent_scale) <= 0.0 or float(self.latent_clip) <= 0.0

    def _raw_latents(self, images: torch.Tensor) -> torch.Tensor:
        # The posterior mean: deterministic, so a cached latent equals a freshly computed one.
        return self.vae.encode(images * 2 - 1).latent_dist.mean * self.scaling_factor

    @torch.no_grad()
    def estimate_latent_statistics(self, images: torch.Tensor) -> tuple[float, float]:
        """Set the unset ones of latent_scale and latent_clip from these (training) frames.

        latent_scale brings the latents' standard deviation to LATENT_STD, the regime of the
        reference's SDXL latents / 3. latent_clip is the largest latent magnitude of the frames:
        DDIM clips predicted latents to it at every step. Clipping at the actions' 1.0 instead
        would flatten the rare large latents that small high-contrast objects produce; scaling
        the largest magnitude to 1.0 instead leaves the latents so small (std ~0.1) that noise
        drowns them from early timesteps on: on the synthetic world inverse dynamics then did
        not learn at all in 600 steps, and did with std 1/3 or 1.
        """
        raw = self._raw_latents(images)
        if float(self.latent_scale) <= 0.0:
            self.latent_scale.fill_(float(raw.std()) / LATENT_STD)
        if float(self.latent_clip) <= 0.0:
            self.latent_clip.fill_(float(raw.abs().max()) / float(self.latent_scale))
        return float(self.latent_scale), float(self.latent_clip)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        if self.needs_latent_statistics:
            raise RuntimeError("the VAE latent statistics are unset: call estimate_latent_statistics on training frames first")
        out = [self._raw_latents(images[i:i + chunk]) for i in range(0, images.shape[0], chunk)]
        return torch.cat(out) / self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        z = latents * self.latent_scale / self.scaling_factor
        out = [self.vae.decode(z[i:i + chunk]).sample for i in range(0, z.shape[0], chunk)]
        return ((torch.cat(out) + 1) / 2).clamp(0, 1)

    def fit(self, frames, steps: int, batch_size: int = 32, lr: float = 1e-3, kl_weight: float = 1e-6,
            progress=None) -> float:
        """Reconstruction training of a randomly initialised VAE on frames.

        ``frames`` is a callable returning a (N, 3, H, W) batch in [0, 1]. Returns the final MSE.
        """
        vae = self.vae
        vae.requires_grad_(True)
        vae.train()
        opt = torch.optim.Adam(vae.parameters(), lr=lr)
        loss_value = float("nan")
        for step in range(steps):
            x = frames(batch_size) * 2 - 1
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
            loss = F.mse_loss(recon, x) + kl_weight * posterior.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = loss.item()
            if progress is not None:
                progress(step, loss_value)
        vae.requires_grad_(False)
        vae.eval()
        return loss_value
