"""Training throughput: samples/s and where a step's time goes, before and after the
learning-efficiency changes, side by side in one process.

    .venv/bin/python bench/train_throughput.py --preset small     # the demo's settings (config/demo.yaml), ~2 min
    .venv/bin/python bench/train_throughput.py --preset paper     # Table V model, 224 px (CPU: ~10 min)
    .venv/bin/python bench/train_throughput.py --preset paper --batch-size 36 --steps 20 --device cuda

``small`` trains with the demo's ``uwm-train`` overrides from config/demo.yaml (model preset,
image and resize size, batch size) on a dataset of the demo's frame size; ``paper`` is the paper
preset with the SDXL VAE architecture and ResNet-18 randomly initialised (nothing downloaded).
The data are smooth random frames written with DatasetWriter, their latents cached as uwm-train
does. Each mode runs the training step of uwm-train (uwm_core.training.step: ``batch_loss``, backward,
AdamW, EMA):

* before: every sample's frames are read from the dataset and resized at every step (and its
  latents read from the cache), AdamW's default (per-parameter) implementation, encoder trained,
  bf16 autocast on CUDA only;
* after: training frames and latents held in memory (``hold_in_memory_gb``), fused AdamW, the
  encoder frozen where the configuration says so (``model.freeze_obs_encoder``), bf16 autocast
  also on a CPU with bf16 instructions.

Both run the encoder in channels-last memory format (part of the model, not a switch), which
makes "before" a little faster than the code before these changes was: the ratio is conservative.

Printed per mode: samples/s and the split of a step into data, forward + backward, optimiser
and EMA (ms per step), then the ratio after / before.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from uwm_core.config import load_model_config
from uwm_core.data import (DatasetWriter, EpisodeSamples, LatentCache, ShardedSampler, action_normalizer,
                           open_dataset, sample_spec)
from uwm_core.model import UnifiedWorldModel
from uwm_core.training.config import TrainConfig
from uwm_core.training.data import hold_training_samples
from uwm_core.training.step import EMA, Objective, batch_loss

CAMERAS = ["left", "right", "wrist"]
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"


def write_dataset(path: str, episodes: int, frames: int, size: tuple[int, int], seed: int) -> None:
    """Smooth random images (so compression and resizing do real work) and random actions."""
    rng = np.random.default_rng(seed)
    h, w = size
    with DatasetWriter(path, CAMERAS, fps=10, action_dim=7) as writer:
        for _ in range(episodes):
            views = {}
            for cam in CAMERAS:
                coarse = rng.integers(0, 256, (frames, h // 8, w // 8, 3), dtype=np.uint8)
                views[cam] = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)  # (T, h, w, 3)
            actions = rng.uniform(-0.02, 0.02, (frames, 7)).astype(np.float32)
            actions[:, 6] = rng.integers(0, 2, frames)
            writer.add_episode(views, actions, task="bench")


def settings(preset: str) -> dict:
    """Model overrides, batch size and dataset frame size of a preset."""
    if preset == "small":
        demo = yaml.safe_load(DEMO_CONFIG.read_text())
        train = demo["train"]["overrides"]
        model = {k.split(".", 1)[1]: v for k, v in train.items() if k.startswith("model.") and k != "model.vae.fit_steps"}
        size = demo["image_size"]
        return {"preset": train["model_preset"], "model": model, "batch_size": train["batch_size"],
                "frames": (size, size), "lr": train["lr"]}
    return {"preset": "paper", "model": {"resnet_weights": None, "vae": {"pretrained": None}}, "batch_size": 2,
            "frames": (180, 320), "lr": 1e-4}


def measure(model, samples, batch_size: int, steps: int, warmup: int, after: bool, lr: float, device) -> dict:
    """Samples/s and ms per step of each stage over ``steps`` steps after ``warmup`` untimed ones."""
    sampler = ShardedSampler(len(samples), batch_size, seed=0)
    loader = torch.utils.data.DataLoader(samples, batch_size=batch_size, sampler=sampler, num_workers=0)
    objective = Objective(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-6, **({"fused": True} if after else {}))
    ema = EMA(model, 0.9999)
    stages = {"data": 0.0, "forward+backward": 0.0, "optimizer": 0.0, "ema": 0.0}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    done, epoch, iterator = 0, 0, None
    while done < warmup + steps:
        if iterator is None:
            sampler.set_position(epoch, 0)
            iterator = iter(loader)
        marks = [time.perf_counter()]
        batch = next(iterator, None)
        if batch is None:
            iterator, epoch = None, epoch + 1
            continue
        marks.append(time.perf_counter())
        loss, _ = batch_loss(objective, model, batch, device, bf16=after or device.type == "cuda")
        loss.backward()
        sync()
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        marks.append(time.perf_counter())
        ema.step(model)
        sync()
        marks.append(time.perf_counter())
        done += 1
        if done > warmup:
            for stage, start, end in zip(stages, marks, marks[1:]):
                stages[stage] += end - start
    total = sum(stages.values())
    return {"samples_per_s": steps * batch_size / total, "ms": {k: 1e3 * v / steps for k, v in stages.items()},
            "trainable_m": sum(p.numel() for p in trainable) / 1e6}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["small", "paper"], default="small")
    parser.add_argument("--batch-size", type=int, help="default: the demo's (small) or 2 (paper on a CPU)")
    parser.add_argument("--steps", type=int, help="timed steps per mode (default 40 small, 2 paper)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    parser.add_argument("--episodes", type=int, default=20, help="episodes of the bench dataset")
    parser.add_argument("--frames", type=int, default=30, help="frames per episode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    chosen = settings(args.preset)
    batch_size = args.batch_size or chosen["batch_size"]
    steps = args.steps or (40 if args.preset == "small" else 2)
    # images only: the bench dataset has no proprioceptive state (10 numbers per frame: no measurable cost)
    cfg = load_model_config(chosen["preset"], {**chosen["model"], "use_state": False, "cameras": CAMERAS,
                                               "action_dim": 7})
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"device {device} ({where}) | {args.preset}: {chosen['preset']} preset {chosen['model']} | "
          f"{cfg.image_size}x{cfg.image_size} crops of {cfg.resize_shape[0]}x{cfg.resize_shape[1]} from "
          f"{chosen['frames'][0]}x{chosen['frames'][1]} frames, {len(CAMERAS)} views | batch {batch_size}, "
          f"{steps} timed steps after {args.warmup} per mode", flush=True)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(f"{tmp}/data", args.episodes, args.frames, chosen["frames"], seed=0)
        ds = open_dataset(f"{tmp}/data")
        for mode in ("before", "after"):
            torch.manual_seed(0)
            mode_cfg = cfg if mode == "after" else dataclasses.replace(cfg, freeze_obs_encoder=False)
            model = UnifiedWorldModel(mode_cfg).to(device).train()
            cache = None
            if model.vae is not None:
                if model.vae.needs_latent_statistics:
                    model.vae.estimate_latent_statistics(torch.rand(4, 3, cfg.image_size, cfg.image_size))
                cache = LatentCache(ds, model.vae, cfg.resize_shape, f"{tmp}/cache_{mode}")
                cache.build(model.vae, device, progress=False)
            samples = EpisodeSamples(ds, range(ds.num_episodes), sample_spec(cfg, model.vae.downsample if model.vae
                                                                             else 1), action_normalizer([ds]), cache)
            if mode == "after":
                hold_training_samples([samples], TrainConfig(), print, show=False)
            results[mode] = r = measure(model, samples, batch_size, steps, args.warmup, mode == "after",
                                        chosen["lr"], device)
            split = ", ".join(f"{k} {v:.1f}" for k, v in r["ms"].items())
            print(f"{mode:6}: {r['samples_per_s']:7.1f} samples/s | ms per step: {split} | "
                  f"{r['trainable_m']:.1f}M trainable parameters", flush=True)
    print(f"after / before: {results['after']['samples_per_s'] / results['before']['samples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
