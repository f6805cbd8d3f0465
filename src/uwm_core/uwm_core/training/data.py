"""The data of a run: its datasets, training and held-out samples, latent caches, and the endless
stream of batches that the loop draws from, resumable at any (epoch, batch)."""
from __future__ import annotations

import signal
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..data import EpisodeSamples, LatentCache, Mixture, ShardedSampler, open_dataset, sample_spec, split_episodes
from ..model import UnifiedWorldModel
from ..processing import ActionNormalizer
from .config import TrainConfig
from .distributed import Dist


def open_training_data(cfg: TrainConfig):
    """Open every dataset; they must agree on cameras and fps (and action_dim where they have actions)."""
    robot = [open_dataset(p) for p in cfg.datasets]
    video = [open_dataset(p) for p in cfg.video_datasets]
    first = robot[0]
    for ds in robot + video:
        if ds.num_episodes == 0:
            raise ValueError(f"{ds.path}: dataset has no episodes")
        if set(ds.cameras) != set(first.cameras):
            raise ValueError(f"datasets disagree on cameras: {first.path} has {first.cameras}, {ds.path} has {ds.cameras}")
        if ds.fps != first.fps:
            raise ValueError(f"datasets disagree on fps: {first.path} has {first.fps:g}, {ds.path} has {ds.fps:g}")
    for ds in robot:
        if ds.action_dim != first.action_dim:
            raise ValueError(f"datasets disagree on action_dim: {first.path} has {first.action_dim}, "
                             f"{ds.path} has {ds.action_dim}")
    return robot, video


@dataclass
class Samples:
    datasets: list  # robot datasets, then video datasets
    train_parts: list[EpisodeSamples]  # one per dataset
    train_set: Mixture
    val_set: Mixture  # held-out robot episodes (the training set when none are held out)
    sampler: ShardedSampler  # this rank's shard of train_set


def split_samples(cfg: TrainConfig, model: UnifiedWorldModel, robot: list, video: list,
                  normalizer: ActionNormalizer, d: Dist) -> Samples:
    """Training and held-out samples of every dataset, and this rank's sampler (which checks that
    the batch size fits the data: before any slow VAE or cache work)."""
    downsample = model.vae.downsample if model.vae is not None else 1
    spec = sample_spec(model.cfg, downsample, cfg.color_jitter)
    datasets, train_parts, val_parts = robot + video, [], []
    for i, ds in enumerate(datasets):
        train_eps, val_eps = split_episodes(ds, cfg.val_ratio if i < len(robot) else 0.0, cfg.seed)
        train_parts.append(EpisodeSamples(ds, train_eps, spec, normalizer, dataset_id=i))
        val_parts.append(EpisodeSamples(ds, val_eps, spec, normalizer, dataset_id=i))
    train_set, val_set = Mixture(train_parts), Mixture(val_parts)
    if len(val_set) == 0:
        d.say("no held-out episodes (val_ratio or too few episodes): evaluating on training episodes")
        val_set = train_set
    sampler = ShardedSampler(len(train_set), cfg.batch_size, d.rank, d.world_size, cfg.seed)
    return Samples(datasets, train_parts, train_set, val_set, sampler)


def batch_loader(samples: Samples, model: UnifiedWorldModel, cfg: TrainConfig, d: Dist) -> torch.utils.data.DataLoader:
    """The DataLoader of this rank's training batches, reading cached latents (``latent_cache``)
    and frames held in memory where they fit."""
    if cfg.latent_cache and model.vae is not None:
        for part, cache in zip(samples.train_parts, build_latent_caches(model, samples.datasets, cfg, d)):
            part.latents = cache  # training samples read cached latents; evaluation encodes pixels
        if cfg.color_jitter is not None:
            d.say("colour jitter: applied to the current frames only (next-frame targets are cached latents)")
    hold_training_samples(samples.train_parts, cfg, d.say, d.main)
    return torch.utils.data.DataLoader(
        samples.train_set, batch_size=cfg.batch_size, sampler=samples.sampler, num_workers=cfg.num_workers,
        pin_memory=d.device.type == "cuda", worker_init_fn=ignore_sigint, drop_last=True,
        persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None,
        generator=torch.Generator().manual_seed(cfg.seed))  # workers' seeds: not from the global RNG (resume)


def build_latent_caches(model: UnifiedWorldModel, datasets, cfg: TrainConfig, d: Dist) -> list[LatentCache]:
    """One cache per dataset; every node's local ranks encode disjoint episodes, then all check."""
    caches = [LatentCache(ds, model.vae, model.cfg.resize_shape, cfg.latent_cache_dir) for ds in datasets]
    for cache in caches:
        d.barrier()  # all ranks list the missing episodes from the same state
        todo = cache.missing()
        mine = todo[d.local_rank::d.local_world_size]
        if todo:
            d.say(f"latent cache: encoding {len(todo)} episodes of {cache.dataset.path} into {cache.root}")
        cache.build(model.vae, d.device, mine, progress=d.local_rank == 0)
    d.barrier()
    for cache in caches:
        if cache.missing():
            raise RuntimeError(f"{cache.root}: {len(cache.missing())} episodes are still missing after the build")
    return caches


def hold_training_samples(parts: list[EpisodeSamples], cfg: TrainConfig, say, show: bool) -> None:
    """Decode and resize every training frame once, instead of once per sample, when they fit."""
    size = sum(p.memory_bytes() for p in parts)
    if size > cfg.hold_in_memory_gb * 2**30:
        say(f"training frames read from disk at every step: held in memory they would take "
            f"{size / 2**30:.1f} GB > hold_in_memory_gb={cfg.hold_in_memory_gb:g}")
        return
    with tqdm(total=sum(len(p.episodes) for p in parts), desc="load training frames", unit="episode",
              disable=not show) as bar:
        for part in parts:
            part.hold_in_memory(bar.update)
    say(f"training frames held in memory: {size / 2**20:.0f} MB")


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers: Ctrl-C is handled by the training process (save, then exit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def batch_stream(loader, sampler: ShardedSampler, epoch: int, batch: int):
    """Endless batches from (epoch, batch) on; yields (epoch, batch index after this one, batch)."""
    while True:
        sampler.set_position(epoch, batch)
        for item in loader:
            batch += 1
            yield epoch, batch, item
        epoch, batch = epoch + 1, 0
