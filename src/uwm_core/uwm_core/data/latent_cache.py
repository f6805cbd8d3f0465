"""VAE latents of every frame of a dataset, computed once and reused by every epoch and run.

    <dataset>/latent_cache/<key>/
      info.json          what the key stands for: VAE fingerprint, resize_shape, dtype
      ep_000000/<cam>    float16 [T, C, H/f, W/f]: latents of the whole resized frame
      .staging/          episodes being encoded (ignored; a dead builder's are removed by the next)

``key`` hashes the VAE weights with its scaling buffers, the resize shape and the cache format,
so a different VAE (e.g. one fitted for another run) or resolution gets its own cache and a
stale one is never read. Each episode is committed by renaming it into place: an interrupted
build resumes with the episodes still missing. Samples crop these latents at the pixel crop's
offset / f (``uwm_core.data.samples``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

from ..durable import commit_directory, replace_file
from ..processing import frames_to_float, resize_images
from .store import COMPRESSOR, FRAMES_PER_SHARD, OPEN_EPISODES, DatasetError, EpisodicDataset, read_rows

CACHE_FORMAT = 1
CACHE_DTYPE = np.float16  # latents are ~N(0, 1/9): float16 keeps 3 significant digits
STAGING_DIR = ".staging"


def vae_fingerprint(codec: torch.nn.Module) -> str:
    """sha256 of the VAE's weights and scaling buffers (the LatentCodec's whole state)."""
    h = hashlib.sha256()
    for name, tensor in sorted(codec.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class LatentCache:
    """Cached latents of one dataset for one VAE and resize shape."""

    def __init__(self, dataset: EpisodicDataset, codec, resize_shape, cache_dir: str | os.PathLike | None = None):
        self.dataset = dataset
        self.resize_shape = [int(x) for x in resize_shape]
        self.latent_channels = codec.latent_channels
        fingerprint = vae_fingerprint(codec)
        self.info = {"format": CACHE_FORMAT, "vae_sha256": fingerprint, "resize_shape": self.resize_shape,
                     "dtype": np.dtype(CACHE_DTYPE).name}
        self.key = hashlib.sha256(json.dumps(self.info, sort_keys=True).encode()).hexdigest()[:16]
        base = Path(cache_dir) / _dataset_slug(dataset.path) if cache_dir else dataset.path / "latent_cache"
        self.root = base / self.key
        self._open: OrderedDict[tuple[int, str], zarr.Array] = OrderedDict()  # per process

    def missing(self) -> list[int]:
        return [i for i, name in enumerate(self.dataset.episode_names) if not (self.root / name / "zarr.json").is_file()]

    def build(self, codec, device: torch.device | str = "cpu", episodes: list[int] | None = None,
              batch_size: int = 32, progress: bool = True) -> None:
        """Encode the given (default: all missing) episodes; safe to run from several processes."""
        todo = [i for i in (self.missing() if episodes is None else episodes)
                if not (self.root / self.dataset.episode_names[i] / "zarr.json").is_file()]
        if not todo:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(self.root / STAGING_DIR)
        if not (self.root / "info.json").exists():
            replace_file(self.root / "info.json", json.dumps(self.info, indent=2))
        lengths = self.dataset.episode_lengths
        total = int(sum(lengths[i] for i in todo)) * len(self.dataset.cameras)
        bar = tqdm(total=total, unit="frame", desc=f"latent cache {self.dataset.path.name}", disable=not progress)
        for i in todo:
            self._encode_episode(i, codec, device, batch_size, bar)
        bar.close()

    @torch.no_grad()
    def _encode_episode(self, i: int, codec, device, batch_size: int, bar) -> None:
        name = self.dataset.episode_names[i]
        staging = self.root / STAGING_DIR / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            group = zarr.open_group(staging, mode="w", zarr_format=3)
            for cam in self.dataset.cameras:
                frames = self.dataset.frames(i, cam)
                parts = []
                for j in range(0, len(frames), batch_size):
                    x = resize_images(frames_to_float(frames[j:j + batch_size]).to(device), self.resize_shape)
                    parts.append(codec.encode(x).to(torch.float32).cpu().numpy().astype(CACHE_DTYPE))
                    bar.update(len(x))
                z = np.concatenate(parts)
                group.create_array(cam, shape=z.shape, dtype=CACHE_DTYPE, chunks=(1, *z.shape[1:]),
                                   shards=(min(len(z), FRAMES_PER_SHARD), *z.shape[1:]), compressors=COMPRESSOR)[:] = z
            try:
                commit_directory(staging, self.root / name)
            except OSError:  # another process committed this episode first
                if not (self.root / name / "zarr.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def read(self, i: int, camera: str, indices) -> np.ndarray:
        """float16 (n, C, h, w) latents of episode i's frames at ``indices``."""
        arr = self._open.pop((i, camera), None)
        name = self.dataset.episode_names[i]
        where = f"{self.root}: episode {i} ({name}) camera {camera}"
        if arr is None:
            try:
                arr = zarr.open_array(self.root / name / camera, mode="r")
            except Exception as exc:
                raise DatasetError(f"{where}: latent cache entry is missing ({type(exc).__name__}); "
                                   f"it is rebuilt at the start of training") from None
            if arr.shape[0] != self.dataset.episode_lengths[i]:
                raise DatasetError(f"{where}: {arr.shape[0]} cached frames for {self.dataset.episode_lengths[i]} "
                                   f"in the episode; delete {self.root} to rebuild it")
            while len(self._open) >= OPEN_EPISODES:
                self._open.popitem(last=False)
        self._open[(i, camera)] = arr
        try:
            return read_rows(arr, indices)
        except Exception as exc:
            raise DatasetError(f"{where}: cannot read the latent cache ({type(exc).__name__}: {exc})") from None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state


def _dataset_slug(path: Path) -> str:
    """A directory name for a dataset's cache outside it: its name plus a hash of its full path."""
    resolved = str(Path(path).resolve())
    return f"{Path(path).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"


def _remove_dead_staging(staging: Path) -> None:
    """Remove the half-encoded episodes of builders on this host that are no longer running."""
    if not staging.is_dir():
        return
    host = socket.gethostname()
    for child in staging.iterdir():
        owner_host, _, rest = child.name.rpartition("-")[0].rpartition("-")
        if owner_host != host or not rest.isdigit():
            continue
        try:
            os.kill(int(rest), 0)
        except ProcessLookupError:
            shutil.rmtree(child, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass
