"""The episodic dataset: one chunked, compressed, appendable Zarr v3 store per dataset.

    <root>/
      zarr.json            Zarr group; attrs["uwm_dataset"] = cameras, fps, action_dim, absolute dims,
                           state_dim (0: no proprioceptive state)
      episodes.jsonl       the episode index: one JSON line per committed episode, in order
      episodes/ep_000000/  one Zarr group per episode: frames/<camera> uint8 [T, H, W, 3],
                           actions float32 [T, A] (absent for action-free video episodes),
                           state float32 [T, S] (uwm_core.spatial.proprio_state; with state_dim > 0)
      .staging/            episodes being written (never read; removed by the next writer)
      .writer.lock         held by the one DatasetWriter allowed at a time
      latent_cache/        VAE latents (uwm_core.data.latent_cache), rebuilt as needed

Atomic commit: an episode is written under ``.staging/``, fsynced, renamed to its final name,
and only then appended to ``episodes.jsonl`` as one line. An episode is part of the dataset
exactly when its index line is complete, so a crash or SIGKILL at any point leaves every
earlier episode readable: readers ignore a torn last line and unindexed directories, and the
next writer removes them.

Frames are stored at the resolution given (cameras and episodes may differ), one frame per
chunk inside shards of up to ``FRAMES_PER_SHARD`` frames, so a training sample reads only the
frames it uses.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..durable import commit_directory

FORMAT_VERSION = 1
INDEX_FILE = "episodes.jsonl"
EPISODES_DIR = "episodes"
STAGING_DIR = ".staging"
LOCK_FILE = ".writer.lock"
FRAMES_PER_SHARD = 64
OPEN_EPISODES = 1024  # per process
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
# every chunk is written: zarr's check for chunks equal to the fill value costs a third of a write
WRITE_CONFIG = {"write_empty_chunks": True}
# a shard's frames go through the codecs in one batch, not one asyncio task each: 1.7x less CPU per write
BATCHED_ENCODING = {"codec_pipeline.batch_size": FRAMES_PER_SHARD}


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the dataset, episode and array."""


def default_absolute_action_dims(action_dim: int) -> tuple[int, ...]:
    """The gripper (last dim) of the 7-D convention ``[dx, dy, dz, rx, ry, rz, g]`` is absolute."""
    return (6,) if action_dim == 7 else ()


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




def _read_info(root: Path) -> dict:
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


def _read_index(root: Path) -> tuple[list[dict], int]:
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
        info = _read_info(self.path)
        self.cameras: list[str] = info["cameras"]
        self.fps: float = info["fps"]
        self.action_dim: int = info["action_dim"]
        self.absolute_action_dims: tuple[int, ...] = info["absolute_action_dims"]
        self.state_dim: int = info["state_dim"]
        self._entries, _ = _read_index(self.path)
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


class DatasetWriter:
    """Append episodes to a dataset, creating it if needed; one writer per dataset at a time.

    Appending to an existing dataset requires the same cameras, fps, action_dim, absolute
    action dims and state_dim (ValueError naming both otherwise). With ``state_dim`` > 0 every
    episode carries its proprioceptive state.
    """

    def __init__(self, path: str | os.PathLike, cameras: list[str], fps: float, action_dim: int,
                 absolute_action_dims: tuple[int, ...] | None = None, state_dim: int = 0):
        self.path = Path(path)
        cameras = [str(c) for c in cameras]
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"{self.path}: cameras must be unique names, got {cameras}")
        if not fps > 0:
            raise ValueError(f"{self.path}: fps must be positive, got {fps}")
        if int(action_dim) < 1:
            raise ValueError(f"{self.path}: action_dim must be positive, got {action_dim}")
        if absolute_action_dims is None:
            absolute_action_dims = default_absolute_action_dims(int(action_dim))
        absolute_action_dims = tuple(sorted(int(d) for d in absolute_action_dims))
        if any(not 0 <= d < action_dim for d in absolute_action_dims):
            raise ValueError(f"{self.path}: absolute_action_dims {list(absolute_action_dims)} out of range for "
                             f"action_dim={action_dim}")
        self.cameras, self.fps, self.action_dim = cameras, float(fps), int(action_dim)
        if int(state_dim) < 0:
            raise ValueError(f"{self.path}: state_dim must not be negative, got {state_dim}")
        self.absolute_action_dims, self.state_dim = absolute_action_dims, int(state_dim)
        wanted = {"cameras": cameras, "fps": self.fps, "action_dim": self.action_dim,
                  "absolute_action_dims": absolute_action_dims, "state_dim": self.state_dim}
        if not (self.path / "zarr.json").exists():
            self._create(wanted)
        existing = _read_info(self.path)
        for key, value in wanted.items():
            if existing[key] != value:
                raise ValueError(f"{self.path}: cannot append episodes with {key}={_show(value)}: "
                                 f"the dataset has {key}={_show(existing[key])}")
        self._lock = open(self.path / LOCK_FILE, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"{self.path}: another DatasetWriter is writing to this dataset") from None
        self._recover()

    # ------------------------------------------------------------------ setup
    def _create(self, info: dict) -> None:
        """Create the empty store in a temporary sibling and rename it into place."""
        if self.path.exists() and any(self.path.iterdir()):
            raise ValueError(f"{self.path}: exists and is not a uwm dataset (no zarr.json); "
                             "choose an empty or new directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            root = zarr.open_group(tmp, mode="w", zarr_format=3)
            root.attrs["uwm_dataset"] = {"version": FORMAT_VERSION, **info,
                                         "absolute_action_dims": list(info["absolute_action_dims"])}
            root.create_group(EPISODES_DIR)
            (tmp / INDEX_FILE).touch()
            if self.path.exists():
                self.path.rmdir()  # empty (checked above)
            commit_directory(tmp, self.path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise  # else another writer created it first: append to theirs
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _recover(self) -> None:
        """Remove what an interrupted writer left: staging dirs, unindexed episodes, a torn index line."""
        shutil.rmtree(self.path / STAGING_DIR, ignore_errors=True)
        entries, complete = _read_index(self.path)
        index = self.path / INDEX_FILE
        if complete != index.stat().st_size:
            with open(index, "r+b") as f:
                f.truncate(complete)
                os.fsync(f.fileno())
        indexed = {e["name"] for e in entries}
        for child in (self.path / EPISODES_DIR).iterdir():
            if child.is_dir() and child.name not in indexed:
                shutil.rmtree(child)
        self._num_episodes = len(entries)

    # ------------------------------------------------------------------ writing
    @property
    def num_episodes(self) -> int:
        return self._num_episodes

    def _write_arrays(self, staging: Path, frames: dict, actions, state) -> None:
        group = zarr.open_group(staging, mode="w", zarr_format=3)
        for cam in self.cameras:
            x = np.ascontiguousarray(frames[cam])
            group.create_array(f"frames/{cam}", shape=x.shape, dtype=np.uint8, chunks=(1, *x.shape[1:]),
                               shards=(min(len(x), FRAMES_PER_SHARD), *x.shape[1:]), compressors=COMPRESSOR,
                               config=WRITE_CONFIG)[:] = x
        for array_name, values in (("actions", actions), ("state", state)):
            if values is not None:
                group.create_array(array_name, shape=values.shape, dtype=np.float32, chunks=values.shape,
                                   compressors=COMPRESSOR)[:] = values

    def add_episode(self, frames: dict, actions: np.ndarray | None = None, task: str = "",
                    metadata: dict | None = None, state: np.ndarray | None = None) -> int:
        """Write one episode atomically and return its index.

        ``frames``: camera -> uint8 (T, H, W, 3) for every camera; ``actions``: float (T, A),
        ``actions[t]`` being the command issued at frame t, or None for an action-free episode;
        ``state``: float (T, state_dim), the proprioceptive state at frame t (required exactly
        when the dataset has state_dim > 0).
        """
        if self._lock is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        T, shapes = self._check_frames(frames)
        if actions is not None:
            actions = _numeric_rows("actions", actions, T, self.action_dim)
        if (state is None) != (self.state_dim == 0):
            raise ValueError(f"state: the dataset has state_dim={self.state_dim}, so every episode needs "
                             f"{'a' if self.state_dim else 'no'} proprioceptive state")
        if state is not None:
            state = _numeric_rows("state", state, T, self.state_dim)
        metadata = dict(metadata or {})
        try:
            json.dumps(metadata)
        except TypeError as exc:
            raise ValueError(f"metadata: must be JSON-serialisable ({exc})") from None

        name = f"ep_{self._num_episodes:06d}"
        staging = self.path / STAGING_DIR / uuid.uuid4().hex
        try:
            with zarr.config.set(BATCHED_ENCODING):
                self._write_arrays(staging, frames, actions, state)
            commit_directory(staging, self.path / EPISODES_DIR / name)
            entry = {"name": name, "length": T, "has_actions": actions is not None, "task": str(task),
                     "frame_shapes": shapes, "metadata": metadata, "action_stats": _sums(actions)}
            if state is not None:
                entry["state_stats"] = _sums(state)
            line = (json.dumps(entry) + "\n").encode()
            fd = os.open(self.path / INDEX_FILE, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)  # the commit point
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._num_episodes += 1
        return self._num_episodes - 1

    def _check_frames(self, frames: dict) -> tuple[int, dict]:
        if not isinstance(frames, dict):
            raise ValueError(f"frames: expected a dict camera -> uint8 (T, H, W, 3), got {type(frames).__name__}")
        if set(frames) != set(self.cameras):
            raise ValueError(f"frames: expected cameras {self.cameras}, got {sorted(frames)}")
        T, shapes = None, {}
        for cam in self.cameras:
            x = frames[cam]
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape:
                desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
                raise ValueError(f"frames[{cam!r}]: expected uint8 (T, H, W, 3) with T >= 1, got {desc}")
            if T is not None and x.shape[0] != T:
                raise ValueError(f"frames[{cam!r}]: {x.shape[0]} frames, but {self.cameras[0]!r} has {T}")
            T = x.shape[0]
            shapes[cam] = [int(x.shape[1]), int(x.shape[2])]
        return T, shapes

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()


def _numeric_rows(name: str, values, rows: int, dim: int) -> np.ndarray:
    """``values`` as finite float32 (rows, dim); ValueError naming ``name`` otherwise."""
    values = np.asarray(values)
    if values.shape != (rows, dim) or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array of shape ({rows}, {dim}), got {values.dtype} {values.shape}")
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: contain NaN or infinite values")
    return values


def _sums(values: np.ndarray | None) -> dict | None:
    """Per-dimension min, max, sum and sum of squares (combined over episodes by ActionStats)."""
    if values is None:
        return None
    v64 = values.astype(np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "sum": v64.sum(0).tolist(),
            "sumsq": (v64 ** 2).sum(0).tolist()}


def _show(value) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else f"{value:g}" if isinstance(value, float) else str(value)
