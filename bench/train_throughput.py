"""Training throughput with and without the VAE latent cache, at the paper preset resolution.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_throughput.py    # CPU default: ~7 minutes
    .venv/bin/python bench/train_throughput.py --batch-size 36 --steps 20 --warmup 3 --episodes 8 --frames 40 --workers 8   # a GPU

Model: the ``paper`` preset (224x224 crops of 240x320 frames, 3 views, To=2, Ta=16, DiT 768x12)
with the SDXL VAE architecture and ResNet-18 randomly initialised (``vae.pretrained=null``,
``resnet_weights=null``; nothing is downloaded). Data: a temporary dataset of 180x320 frames
written with DatasetWriter. Both modes run the training step of uwm_core.train (data pipeline,
``batch_loss``, backward, AdamW) in one process on the same machine: with the cache the next
frames' latents are read from disk; without it they are VAE-encoded in every step. The one-off
cache build is timed separately.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from uwm_core.config import load_model_config
from uwm_core.data import DatasetWriter, EpisodeSamples, LatentCache, ShardedSampler, action_normalizer, open_dataset, sample_spec
from uwm_core.model import UnifiedWorldModel
from uwm_core.train import Objective, batch_loss

CAMERAS = ["left", "right", "wrist"]


def write_dataset(path: str, episodes: int, frames: int, seed: int) -> None:
    """Smooth random images (so compression and resizing do real work) and random actions."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, CAMERAS, fps=10, action_dim=7) as writer:
        for _ in range(episodes):
            views = {}
            for cam in CAMERAS:
                coarse = rng.integers(0, 256, (frames, 12, 20, 3), dtype=np.uint8)
                views[cam] = np.repeat(np.repeat(coarse, 15, axis=1), 16, axis=2)  # (T, 180, 320, 3)
            actions = rng.uniform(-0.02, 0.02, (frames, 7)).astype(np.float32)
            actions[:, 6] = rng.integers(0, 2, frames)
            writer.add_episode(views, actions, task="bench")


def measure(model, samples, args, device) -> float:
    """Samples per second over ``args.steps`` optimiser steps after ``args.warmup`` untimed ones."""
    sampler = ShardedSampler(len(samples), args.batch_size, seed=0)
    loader = torch.utils.data.DataLoader(samples, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=args.workers, pin_memory=device.type == "cuda")
    objective = Objective(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-6)
    done, start, epoch = 0, None, 0
    while done < args.warmup + args.steps:
        sampler.set_position(epoch, 0)
        for batch in loader:
            if done == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            loss, _ = batch_loss(objective, model, batch, device, bf16=True)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == args.warmup + args.steps:
                break
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=2,
                        help="per step (on a CPU the AdamW update of ~400M weights is a large fixed cost per step)")
    parser.add_argument("--steps", type=int, default=1, help="timed optimiser steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    parser.add_argument("--episodes", type=int, default=2, help="at least --batch-size")
    parser.add_argument("--frames", type=int, default=2, help="frames per episode (all are VAE-encoded for the cache)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    cfg = load_model_config("paper", {"cameras": CAMERAS, "action_dim": 7, "resnet_weights": None,
                                      "vae": {"pretrained": None}})
    model = UnifiedWorldModel(cfg).to(device).train()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"device {device} ({threads}) | paper preset: {cfg.image_size}x{cfg.image_size} crops of "
          f"{cfg.resize_shape[0]}x{cfg.resize_shape[1]}, {len(CAMERAS)} views, SDXL VAE architecture with random "
          f"weights, {params:.1f}M parameters | batch {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup} warmup per mode", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(f"{tmp}/data", args.episodes, args.frames, seed=0)
        ds = open_dataset(f"{tmp}/data")
        cache = LatentCache(ds, model.vae, cfg.resize_shape)
        start = time.perf_counter()
        cache.build(model.vae, device, progress=False)
        build = time.perf_counter() - start
        frames = int(ds.episode_lengths.sum()) * len(CAMERAS)
        print(f"latent cache build (one-off): {frames} frames in {build:.1f} s ({frames / build:.2f} frames/s)", flush=True)
        spec = sample_spec(cfg, model.vae.downsample)
        normalizer = action_normalizer([ds])
        episodes = range(ds.num_episodes)
        cached = measure(model, EpisodeSamples(ds, episodes, spec, normalizer, cache), args, device)
        print(f"with latent cache:    {cached:.4f} samples/s ({args.batch_size / cached:.1f} s per step)", flush=True)
        uncached = measure(model, EpisodeSamples(ds, episodes, spec, normalizer, None), args, device)
        print(f"without latent cache: {uncached:.4f} samples/s ({args.batch_size / uncached:.1f} s per step)", flush=True)
    print(f"speed-up from the latent cache: {cached / uncached:.1f}x (target >= 4x)")


if __name__ == "__main__":
    main()
