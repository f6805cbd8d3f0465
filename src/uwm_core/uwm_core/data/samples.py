"""Training samples: (current frames, action chunk, next frames) windows of episodes.

Index semantics (SPEC section 4, as the reference implementation). With To = obs_horizon and
Ta = action_horizon, a window of To + Ta + To - 1 frames starts at s; within it

* the current observation is window frames 0 .. To-1,
* the action chunk is window actions To-1 .. To+Ta-2 (the action at the last current frame and
  the Ta-1 after it),
* the next observation is window frames To+Ta-1 .. 2To+Ta-2 (the To frames right after the chunk).

In episode time, with t = s + To - 1 the last current frame: current frames t-To+1 .. t, actions
a_t .. a_{t+Ta-1}, next frames t+Ta .. t+Ta+To-1 (To = 2, Ta = 16: frames t-1, t; a_t..a_{t+15};
frames t+16, t+17). An episode of T frames gives one sample for each t in 0 .. T - execute_steps
(at least one), so every chunk holds at least the execute_steps actions a deployed policy runs.
Indices outside the episode are padded as in Diffusion Policy: frames before the start repeat
the first frame, frames after the end repeat the last one, and actions after the end are "hold"
actions (0 for relative dimensions, the last value for absolute ones such as the gripper).

Pixels go through ``uwm_core.processing`` exactly as at deployment (uint8 -> float -> resize to
``resize_shape`` -> crop). Training crops are random with one offset per camera shared by its
current and next frames, the offset a multiple of the VAE downsampling factor so that cached
latents of the whole resized frame are cropped at offset / factor, matching the pixel crop.
Evaluation samples use the centre crop, as deployment does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from ..processing import ActionNormalizer, center_crop_offset, crop, frames_to_float, resize_images
from .store import EpisodicDataset


@dataclass(frozen=True)
class Window:
    obs_horizon: int
    action_horizon: int
    execute_steps: int

    @property
    def length(self) -> int:
        return 2 * self.obs_horizon + self.action_horizon - 1

    def num_samples(self, episode_length: int) -> int:
        return max(1, episode_length - self.execute_steps + 1)

    def frame_indices(self, episode_length: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Clamped episode indices of the current and the next frames for last-current-frame t."""
        To, Ta = self.obs_horizon, self.action_horizon
        current = np.clip(np.arange(t - To + 1, t + 1), 0, episode_length - 1)
        following = np.clip(np.arange(t + Ta, t + Ta + To), 0, episode_length - 1)
        return current, following

    def action_chunk(self, actions: np.ndarray, t: int, absolute_dims: Sequence[int]) -> np.ndarray:
        """a_t .. a_{t+Ta-1}, padded after the end with hold actions."""
        chunk = actions[t:t + self.action_horizon]
        missing = self.action_horizon - len(chunk)
        if missing:
            hold = np.zeros((missing, actions.shape[1]), dtype=actions.dtype)
            hold[:, list(absolute_dims)] = actions[-1, list(absolute_dims)]
            chunk = np.concatenate([chunk, hold])
        return chunk


@dataclass
class ColorJitter:
    """Strengths as torchvision's ColorJitter (reference: 0.2 each); parameters drawn per camera."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.2

    def sample(self, rng: np.random.Generator):
        factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in (self.brightness, self.contrast, self.saturation)]
        return rng.permutation(4), factors, rng.uniform(-self.hue, self.hue)

    @staticmethod
    def apply(images: torch.Tensor, params) -> torch.Tensor:
        order, (b, c, s), h = params
        ops = (lambda x: TF.adjust_brightness(x, b), lambda x: TF.adjust_contrast(x, c),
               lambda x: TF.adjust_saturation(x, s), lambda x: TF.adjust_hue(x, h))
        for i in order:
            images = ops[i](images)
        return images.clamp(0, 1)


@dataclass(frozen=True)
class SampleSpec:
    """What a model needs from the data; built from its ModelConfig by ``sample_spec``."""

    window: Window
    cameras: tuple[str, ...]  # model order
    image_size: int
    resize_shape: tuple[int, int]
    crop_multiple: int  # the VAE downsampling factor (1 without image diffusion)
    color_jitter: ColorJitter | None = None
    state_dim: int = 0  # proprioceptive state per current frame (0: images only)

    def crop_offsets(self, rng: np.random.Generator | None) -> tuple[int, int]:
        """A random (top, left), multiples of crop_multiple; the centre crop when rng is None."""
        if rng is None:
            return center_crop_offset(self.resize_shape, self.image_size)
        m = self.crop_multiple
        return tuple(int(rng.integers(0, (r - self.image_size) // m + 1)) * m for r in self.resize_shape)


def sample_spec(model_cfg, downsample: int, color_jitter: ColorJitter | None = None) -> SampleSpec:
    return SampleSpec(Window(model_cfg.obs_horizon, model_cfg.action_horizon, model_cfg.execute_steps),
                      tuple(model_cfg.cameras), model_cfg.image_size, tuple(model_cfg.resize_shape), downsample,
                      color_jitter, model_cfg.state_dim if model_cfg.use_state else 0)


def action_normalizer(datasets: Sequence[EpisodicDataset]) -> ActionNormalizer:
    """Min-max normaliser over every action of the datasets; relative dims' range includes 0 so
    that hold padding stays inside [-1, 1]."""
    stats = [ds.action_stats for ds in datasets if ds.action_stats is not None]
    if not stats:
        names = ", ".join(str(ds.path) for ds in datasets)
        raise ValueError(f"no episode with actions in {names}: the action normaliser needs robot data")
    low = np.min([s.min for s in stats], axis=0)
    high = np.max([s.max for s in stats], axis=0)
    relative = np.ones(len(low), bool)
    relative[list(datasets[0].absolute_action_dims)] = False
    low[relative] = np.minimum(low[relative], 0.0)
    high[relative] = np.maximum(high[relative], 0.0)
    return ActionNormalizer(low, high)


def state_normalizer(datasets: Sequence[EpisodicDataset]) -> ActionNormalizer:
    """Min-max normaliser of the proprioceptive state over every episode of the datasets."""
    stats = [ds.state_stats for ds in datasets if ds.state_stats is not None]
    if not stats:
        raise ValueError(f"no proprioceptive state in {', '.join(str(ds.path) for ds in datasets)}")
    return ActionNormalizer(np.min([s.min for s in stats], axis=0), np.max([s.max for s in stats], axis=0))


class EpisodeSamples(torch.utils.data.Dataset):
    """The samples of some episodes of one dataset.

    Items are ``index`` (evaluation: centre crop, no colour jitter) or ``(index, key)`` with
    ``key`` a tuple of ints (training: random crop and jitter drawn from ``key`` and ``index``,
    so a sample's augmentation depends only on the seed and epoch, not on the worker).

    Each sample is a dict: ``obs`` (V, To, 3, S, S) float in [0, 1]; ``actions`` (Ta, A)
    normalised (zeros for action-free episodes); with ``spec.state_dim``, ``state`` (To, S) of the
    current frames in dataset units (the model normalises it); ``has_actions``; ``sample_id`` (dataset id,
    episode, t); and either ``next_obs`` (V, To, 3, S, S) or, with a latent cache (``latents``)
    and a training item, ``next_latents`` (V, C, To, h, w). Colour jitter draws one set of
    parameters per camera for its current and next frames; with the latent cache it changes the
    current frames only (the cached targets are of the recorded frames).
    """

    def __init__(self, dataset: EpisodicDataset, episodes: Sequence[int], spec: SampleSpec,
                 normalizer: ActionNormalizer, latents=None, dataset_id: int = 0):
        missing = sorted(set(spec.cameras) - set(dataset.cameras))
        if missing:
            raise ValueError(f"{dataset.path}: has cameras {dataset.cameras}, the model needs {list(spec.cameras)}")
        if spec.state_dim and dataset.state_dim != spec.state_dim:
            raise ValueError(f"{dataset.path}: has state_dim={dataset.state_dim}, the model uses proprioceptive "
                             f"state of {spec.state_dim} dims (convert the bags again with state, or train with "
                             f"model.use_state=false)")
        self.dataset, self.spec, self.normalizer, self.latents = dataset, spec, normalizer, latents
        self.dataset_id = dataset_id
        self.episodes = np.asarray(list(episodes), dtype=np.int64)
        lengths = dataset.episode_lengths[self.episodes] if len(self.episodes) else np.zeros(0, np.int64)
        self._lengths = lengths
        counts = np.array([spec.window.num_samples(int(T)) for T in lengths], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._has_actions = dataset.has_actions[self.episodes] if len(self.episodes) else np.zeros(0, bool)
        self._held: dict[tuple[int, str], torch.Tensor] = {}  # (episode, camera) -> resized frames
        self._held_latents: dict[tuple[int, str], torch.Tensor] = {}  # (episode, camera) -> latents

    def memory_bytes(self) -> int:
        """What ``hold_in_memory`` takes: resized float frames (and cached latents) of every episode."""
        H, W = self.spec.resize_shape
        per_frame = 3 * H * W * 4
        if self.latents is not None:
            m = self.spec.crop_multiple
            per_frame += self.latents.latent_channels * (H // m) * (W // m) * 4
        return int(self._lengths.sum()) * len(self.spec.cameras) * per_frame

    def hold_in_memory(self, progress=None) -> None:
        """Read, decode and resize every frame once (and read the latents) instead of per sample."""
        for ep in self.episodes.tolist():
            for cam in self.spec.cameras:
                frames = frames_to_float(self.dataset.frames(ep, cam))
                self._held[ep, cam] = resize_images(frames, self.spec.resize_shape)  # (T, 3, H, W)
                if self.latents is not None:
                    length = int(self.dataset.episode_lengths[ep])
                    z = self.latents.read(ep, cam, np.arange(length)).astype(np.float32)
                    self._held_latents[ep, cam] = torch.from_numpy(z)  # (T, C, h, w)
            if progress is not None:
                progress(1)

    def _resized_frames(self, ep: int, cam: str, indices: np.ndarray) -> torch.Tensor:
        held = self._held.get((ep, cam))
        if held is not None:
            return held[torch.from_numpy(indices)]
        return resize_images(frames_to_float(self.dataset.frames(ep, cam, indices)), self.spec.resize_shape)

    def _cached_latents(self, ep: int, cam: str, indices: np.ndarray) -> torch.Tensor:
        held = self._held_latents.get((ep, cam))
        if held is not None:
            return held[torch.from_numpy(indices)]
        return torch.from_numpy(self.latents.read(ep, cam, indices).astype(np.float32))

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(position in self.episodes, t) of a sample index."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        return k, int(index - self._starts[k])

    @property
    def has_actions(self) -> np.ndarray:
        """Per-sample flag (expanded from the episodes)."""
        return np.repeat(self._has_actions, np.diff(self._starts))

    def __getitem__(self, item) -> dict:
        index, key = (item, None) if isinstance(item, (int, np.integer)) else item
        rng = None if key is None else np.random.default_rng([*key, self.dataset_id, int(index)])
        k, t = self.locate(int(index))
        ep, T, spec = int(self.episodes[k]), int(self._lengths[k]), self.spec
        current, following = spec.window.frame_indices(T, t)
        use_cache = self.latents is not None and rng is not None
        obs, nxt = [], []
        for cam in spec.cameras:
            indices = current if use_cache else np.concatenate([current, following])
            frames = self._resized_frames(ep, cam, indices)
            top, left = spec.crop_offsets(rng)
            frames = crop(frames, top, left, spec.image_size)
            if spec.color_jitter is not None and rng is not None:
                frames = ColorJitter.apply(frames, spec.color_jitter.sample(rng))  # same for current and next
            if use_cache:
                m, s = spec.crop_multiple, spec.image_size // spec.crop_multiple
                z = self._cached_latents(ep, cam, following)
                nxt.append(crop(z, top // m, left // m, s).transpose(0, 1))  # (C, To, h, w)
                obs.append(frames)
            else:
                obs.append(frames[:len(current)])
                nxt.append(frames[len(current):])
        sample = {"obs": torch.stack(obs)}
        if spec.state_dim:
            sample["state"] = torch.from_numpy(self.dataset.state(ep)[current])  # (To, S)
        sample["next_latents" if use_cache else "next_obs"] = torch.stack(nxt)
        actions = self.dataset.actions(ep)
        if actions is None:
            sample["actions"] = torch.zeros(spec.window.action_horizon, self.normalizer.dim)
        else:
            chunk = spec.window.action_chunk(actions, t, self.dataset.absolute_action_dims)
            sample["actions"] = torch.from_numpy(self.normalizer.normalize(chunk))
        sample["has_actions"] = torch.tensor(actions is not None)
        sample["sample_id"] = torch.tensor([self.dataset_id, ep, t])
        return sample


class Mixture(torch.utils.data.Dataset):
    """Several EpisodeSamples as one uniformly indexed dataset (cotraining: robot + video)."""

    def __init__(self, parts: Sequence[EpisodeSamples]):
        self.parts = [p for p in parts if len(p) > 0]
        self._starts = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def has_actions(self) -> np.ndarray:
        return np.concatenate([p.has_actions for p in self.parts]) if self.parts else np.zeros(0, bool)

    def __getitem__(self, item) -> dict:
        index, key = (item, None) if isinstance(item, (int, np.integer)) else item
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        part = int(np.searchsorted(self._starts, index, side="right") - 1)
        local = int(index - self._starts[part])
        return self.parts[part][local if key is None else (local, key)]


class ShardedSampler(torch.utils.data.Sampler):
    """Per-epoch shuffled, disjoint shards of the samples, one per rank; resumable at any batch.

    Epoch e is a permutation drawn from (seed, e); its first world_size * per_rank samples are
    dealt round-robin to the ranks (the remainder of the epoch is dropped so that shards are
    disjoint and equal), and each rank keeps whole batches. Yields ``(index, (seed, epoch))``
    items for EpisodeSamples / Mixture.
    """

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batches_per_epoch = (num_samples // world_size) // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"batch_size: {batch_size} x {world_size} process(es) needs at least "
                             f"{batch_size * world_size} training samples, the data has {num_samples}")
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, batch: int) -> None:
        """Start the next iteration at batch ``batch`` of epoch ``epoch``."""
        self.epoch, self.start_batch = int(epoch), int(batch)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.num_samples, generator=g).numpy()
        shard = perm[self.rank:self.world_size * (self.num_samples // self.world_size):self.world_size]
        return shard[:self.batches_per_epoch * self.batch_size]

    def __iter__(self):
        shard = self.epoch_indices(self.epoch)
        key = (self.seed, self.epoch)
        for index in shard[self.start_batch * self.batch_size:]:
            yield int(index), key

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def split_episodes(dataset: EpisodicDataset, val_ratio: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(training, held-out) episode indices: a seeded random ``val_ratio`` of the action-labelled
    episodes (at least one when the ratio is positive and there are two or more) is held out."""
    labelled = np.flatnonzero(dataset.has_actions)
    num_val = 0
    if val_ratio > 0 and len(labelled) >= 2:
        num_val = min(max(int(round(val_ratio * len(labelled))), 1), len(labelled) - 1)
    held_out = set(np.random.default_rng(seed).choice(labelled, num_val, replace=False).tolist()) if num_val else set()
    train = [i for i in range(dataset.num_episodes) if i not in held_out]
    return train, sorted(held_out)
