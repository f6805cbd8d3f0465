"""The episodic dataset: one chunked, compressed, appendable Zarr v3 store per dataset, and its reader.

    <root>/
      zarr.json            Zarr group; attrs["uwm_dataset"] = cameras, fps, action_dim, absolute dims,
                           state_dim (0: no proprioceptive state)
      episodes.jsonl       the episode index: one JSON line per committed episode, in order
      episodes/ep_000000/  one Zarr group per episode: frames/<camera> uint8 [T, H, W, 3],
                           actions float32 [T, A] (absent for action-free video episodes),
                           state float32 [T, S] (uwm_core.spatial.proprio_state; with state_dim > 0)
      .staging/            episodes being written (never read; removed by the next writer)
      .writer.lock         held by the one writer allowed at a time (uwm_core.data.writer)
      latent_cache/        VAE latents (uwm_core.data.latent_cache), rebuilt as needed

An episode is part of the dataset exactly when its line in ``episodes.jsonl`` is complete:
readers ignore a torn last line and episode directories the index does not name, so whatever a
crashed or killed writer left, every committed episode stays readable (uwm_core.data.writer
says how episodes are committed). Committed episode directories are never rewritten.

Frames are stored at the resolution given (cameras and episodes may differ), one frame per
chunk inside shards of up to ``FRAMES_PER_SHARD`` frames, so a training sample reads only the
frames it uses.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

FORMAT_VERSION = 1
INDEX_FILE = "episodes.jsonl"
EPISODES_DIR = "episodes"
STAGING_DIR = ".staging"
LOCK_FILE = ".writer.lock"
FRAMES_PER_SHARD = 64
OPEN_EPISODES = 1024  # per process
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the dataset, episode and array."""


@dataclass
class ActionStats:
    """Per-dimension statistics over every action of the action-labelled episodes."""

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: int

    @classmethod
    def from_sums(cls, lo, hi, total, total_sq, count: int) -> "ActionStats":
        mean = np.asarray(total, np.float64) / count
        var = np.maximum(np.asarray(total_sq, np.float64) / count - mean ** 2, 0.0)
        return cls(np.asarray(lo, np.float32), np.asarray(hi, np.float32), mean.astype(np.float32),
                   np.sqrt(var).astype(np.float32), int(count))


@dataclass
class Episode:
    index: int
    name: str
    frames: dict  # camera -> uint8 (T, H, W, 3)
    actions: np.ndarray | None  # float32 (T, A); None for an action-free (video) episode
    task: str
    metadata: dict = field(default_factory=dict)
    state: np.ndarray | None = None  # float32 (T, S); None without proprioceptive state

    @property
    def length(self) -> int:
        return len(next(iter(self.frames.values())))


def read_info(root: Path) -> dict:
    """The dataset description in ``zarr.json``, checked and typed."""
    meta = root / "zarr.json"
    if not root.exists():
        raise DatasetError(f"{root}: dataset does not exist")
    if not meta.is_file():
        raise DatasetError(f"{root}: not a uwm dataset ({meta.name} is missing)")
    try:
        with open(meta) as f:
            info = json.load(f)["attributes"]["uwm_dataset"]
        info["cameras"] = [str(c) for c in info["cameras"]]
        info["fps"] = float(info["fps"])
        info["action_dim"] = int(info["action_dim"])
        info["absolute_action_dims"] = tuple(int(d) for d in info["absolute_action_dims"])
        info["state_dim"] = int(info.get("state_dim", 0))  # datasets written before state existed: 0
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{meta}: not a uwm dataset description ({type(exc).__name__}: {exc})") from None
    if info.get("version", 0) > FORMAT_VERSION:
        raise DatasetError(f"{meta}: dataset format version {info['version']} is newer than this "
                           f"uwm_core understands ({FORMAT_VERSION})")
    return info


def read_index(root: Path) -> tuple[list[dict], int]:
    """Committed index entries and the byte length of the complete lines (a torn tail is ignored)."""
    path = root / INDEX_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: episode index is missing")
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # bytes after the last newline belong to an interrupted append
    entries = []
    for number, line in enumerate(data[:complete].splitlines(), start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {number} is not valid JSON ({exc})") from None
    return entries, complete


class EpisodicDataset:
    """Read access to a dataset written by DatasetWriter (see ``open_dataset``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        info = read_info(self.path)
        self.cameras: list[str] = info["cameras"]
        self.fps: float = info["fps"]
        self.action_dim: int = info["action_dim"]
        self.absolute_action_dims: tuple[int, ...] = info["absolute_action_dims"]
        self.state_dim: int = info["state_dim"]
        self._entries, _ = read_index(self.path)
        self._open: OrderedDict[int, dict] = OrderedDict()  # opened lazily, per DataLoader worker
        for i, entry in enumerate(self._entries):
            self._check_entry(i, entry)
        # Per-episode summaries, read-only (samplers index them for every sample).
        self.episode_lengths = np.array([e["length"] for e in self._entries], dtype=np.int64)
        self.has_actions = np.array([e["has_actions"] for e in self._entries], dtype=bool)
        self.episode_names = tuple(e["name"] for e in self._entries)
        self.episode_lengths.flags.writeable = self.has_actions.flags.writeable = False

    # ------------------------------------------------------------------ summary
    @property
    def num_episodes(self) -> int:
        return len(self._entries)

    @property
    def action_stats(self) -> ActionStats | None:
        """Statistics over the action-labelled episodes; None when there are none."""
        return self._stats("action_stats")

    @property
    def state_stats(self) -> ActionStats | None:
        """Statistics of the proprioceptive state over every episode; None without state."""
        return self._stats("state_stats")

    def _stats(self, key: str) -> ActionStats | None:
        entries = [e for e in self._entries if e.get(key)]
        if not entries:
            return None
        stats = [e[key] for e in entries]
        return ActionStats.from_sums(
            np.min([s["min"] for s in stats], axis=0), np.max([s["max"] for s in stats], axis=0),
            np.sum([s["sum"] for s in stats], axis=0), np.sum([s["sumsq"] for s in stats], axis=0),
            sum(e["length"] for e in entries))

    def task(self, i: int) -> str:
        return self._entry(i)["task"]

    def metadata(self, i: int) -> dict:
        return self._entry(i)["metadata"]

    def frame_shape(self, i: int, camera: str) -> tuple[int, int]:
        return tuple(self._entry(i)["frame_shapes"][camera])

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (f"EpisodicDataset({str(self.path)!r}, episodes={self.num_episodes}, cameras={self.cameras}, "
                f"fps={self.fps:g}, action_dim={self.action_dim}, state_dim={self.state_dim})")

    # ------------------------------------------------------------------ data
    def episode(self, i: int) -> Episode:
        entry = self._entry(i)
        frames = {cam: self.frames(i, cam) for cam in self.cameras}
        return Episode(i, entry["name"], frames, self.actions(i), entry["task"], entry["metadata"], self.state(i))

    def frames(self, i: int, camera: str, indices=None) -> np.ndarray:
        """uint8 (n, H, W, 3): all frames of episode ``i``'s camera, or those at ``indices``."""
        if camera not in self.cameras:
            raise KeyError(f"{self.path}: no camera {camera!r} (cameras: {self.cameras})")
        return self._read(i, f"frames/{camera}", indices)

    def actions(self, i: int) -> np.ndarray | None:
        """float32 (T, A) actions of episode ``i`` (kept in memory: samples read them often)."""
        if not self._entry(i)["has_actions"]:
            return None
        return self._arrays(i)["actions"]

    def state(self, i: int) -> np.ndarray | None:
        """float32 (T, state_dim) proprioceptive state of episode ``i``; None without state."""
        self._entry(i)
        return self._arrays(i)["state"] if self.state_dim else None

    # ------------------------------------------------------------------ internals
    def _entry(self, i: int) -> dict:
        if not 0 <= i < len(self._entries):
            raise IndexError(f"{self.path}: episode {i} out of range (0..{len(self._entries) - 1})")
        return self._entries[i]

    def _where(self, i: int, array: str | None = None) -> str:
        name = self._entries[i]["name"]
        return f"{self.path}: episode {i} ({EPISODES_DIR}/{name})" + (f" array {array}" if array else "")

    def _check_entry(self, i: int, entry: dict) -> None:
        """Cheap structural check at open (file existence); shapes are checked on first read."""
        base = self.path / EPISODES_DIR / entry.get("name", "?")
        if not (base / "zarr.json").is_file():
            raise DatasetError(f"{self._where(i)}: episode directory is missing or incomplete")
        arrays = [f"frames/{cam}" for cam in self.cameras] + (["actions"] if entry["has_actions"] else [])
        arrays += ["state"] if self.state_dim else []
        for array in arrays:
            if not (base / array / "zarr.json").is_file():
                raise DatasetError(f"{self._where(i, array)}: array is missing")

    def _arrays(self, i: int) -> dict:
        """Episode i's opened Zarr arrays (actions loaded) after checking them against the index;
        the most recently used OPEN_EPISODES stay open."""
        arrays = self._open.pop(i, None)
        if arrays is None:
            entry = self._entry(i)
            T, A = entry["length"], self.action_dim
            expected = {f"frames/{cam}": ((T, *entry["frame_shapes"][cam], 3), np.uint8) for cam in self.cameras}
            if entry["has_actions"]:
                expected["actions"] = ((T, A), np.float32)
            if self.state_dim:
                expected["state"] = ((T, self.state_dim), np.float32)
            arrays = {}
            for name, (shape, dtype) in expected.items():
                try:
                    arr = zarr.open_array(self.path / EPISODES_DIR / entry["name"] / name, mode="r")
                except Exception as exc:
                    raise DatasetError(f"{self._where(i, name)}: cannot open ({type(exc).__name__}: {exc})") from None
                if tuple(arr.shape) != shape or arr.dtype != dtype:
                    raise DatasetError(f"{self._where(i, name)}: expected {np.dtype(dtype).name}{list(shape)} as "
                                       f"indexed, found {arr.dtype}{list(arr.shape)}")
                arrays[name] = arr
            for small in ("actions", "state"):  # kept in memory: samples read them often
                if small in arrays:
                    arrays[small] = self._load(i, small, arrays[small], None)
            while len(self._open) >= OPEN_EPISODES:
                self._open.popitem(last=False)
        self._open[i] = arrays
        return arrays

    def _read(self, i: int, name: str, indices) -> np.ndarray:
        return self._load(i, name, self._arrays(i)[name], indices)

    def _load(self, i: int, name: str, arr, indices) -> np.ndarray:
        try:
            return read_rows(arr, indices)
        except Exception as exc:
            raise DatasetError(f"{self._where(i, name)}: cannot read ({type(exc).__name__}: {exc})") from None

    def __getstate__(self):  # DataLoader workers reopen the arrays themselves
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state


def read_rows(arr, indices=None) -> np.ndarray:
    """Rows of a Zarr array at ``indices`` (any order, repeats allowed), one slice read per run of
    consecutive rows: much faster than Zarr's orthogonal indexing for image arrays."""
    if indices is None:
        return arr[:]
    indices = np.asarray(indices, dtype=np.int64)
    unique, inverse = np.unique(indices, return_inverse=True)
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    runs = [arr[int(run[0]):int(run[-1]) + 1] for run in np.split(unique, breaks)]
    return (runs[0] if len(runs) == 1 else np.concatenate(runs))[inverse]


def open_dataset(path: str | os.PathLike) -> EpisodicDataset:
    """Open a dataset; raises DatasetError naming the broken file, episode or array."""
    return EpisodicDataset(path)
