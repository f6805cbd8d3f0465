"""Preparing a randomly initialised VAE before training: fitting it to training frames
(``model.vae.fit_steps``) and estimating its latent scale. Both change the VAE, so they come
before the latent cache; the prepared VAE is then frozen and saved with every checkpoint."""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..model import UnifiedWorldModel
from ..model.vae import LATENT_STD
from ..processing import crop, frames_to_float, resize_images
from .config import TrainConfig
from .distributed import Dist


class FramePool:
    """Random training frames, resized, for fitting a random VAE and estimating its latent scale."""

    def __init__(self, datasets, resize_shape, size: int, seed: int):
        rng = np.random.default_rng(seed)
        frames = []
        for _ in range(size):
            ds = datasets[rng.integers(len(datasets))]
            ep = int(rng.integers(ds.num_episodes))
            cam = ds.cameras[rng.integers(len(ds.cameras))]
            t = int(rng.integers(ds.episode_lengths[ep]))
            frames.append(resize_images(frames_to_float(ds.frames(ep, cam, [t])), resize_shape)[0])
        self.frames, self.rng = torch.stack(frames), rng  # (size, 3, H, W)

    def crops(self, n: int, size: int, device) -> torch.Tensor:
        """n random size x size crops of random pool frames, on ``device``: (n, 3, size, size)."""
        H, W = self.frames.shape[-2:]
        out = []
        for i in self.rng.integers(len(self.frames), size=n):
            top, left = self.rng.integers(H - size + 1), self.rng.integers(W - size + 1)
            out.append(crop(self.frames[i], int(top), int(left), size))
        return torch.stack(out).to(device)


def prepare_vae(model: UnifiedWorldModel, datasets, cfg: TrainConfig, d: Dist) -> None:
    """Fit (vae.fit_steps) and scale a random VAE on rank 0, then broadcast it to every rank."""
    vae, mcfg = model.vae, model.cfg
    if vae is None or not (mcfg.vae.fit_steps > 0 or vae.needs_latent_statistics):
        return
    if d.main:
        S = mcfg.image_size
        pool = FramePool(datasets, mcfg.resize_shape, 256 if S <= 64 else 64, cfg.seed)  # random crops add variety
        if mcfg.vae.fit_steps > 0:
            bar = tqdm(total=mcfg.vae.fit_steps, desc="fit VAE", unit="step")

            def progress(step, loss):
                bar.update(1)
                bar.set_postfix(mse=f"{loss:.4f}")

            vae.fit(lambda n: pool.crops(n, S, d.device), mcfg.vae.fit_steps, progress=progress)
            bar.close()
        if vae.needs_latent_statistics:
            scale, clip = vae.estimate_latent_statistics(pool.crops(len(pool.frames), S, d.device))
            tqdm.write(f"VAE latent scale {scale:.4f} (latent std -> {LATENT_STD:.3f}), sampling clips latents at +-{clip:.2f}")
    if d.world_size > 1:
        for tensor in vae.state_dict().values():
            dist.broadcast(tensor, src=0)
