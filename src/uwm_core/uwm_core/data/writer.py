"""Writing the episodic dataset (uwm_core.data.store): one episode at a time, or all-or-nothing.

``DatasetWriter`` commits each episode on its own: it is written under ``.staging/``, fsynced,
renamed to its final name, and only then appended to ``episodes.jsonl`` as one line, the commit
point. A crash or SIGKILL at any instant leaves every earlier episode readable; the next writer
removes what was left (staging directories, unindexed episodes, a torn index line).

``DatasetUpdate`` commits all the episodes it was given together, or none (a conversion run that
must not leave half its bags in the dataset). Into an existing dataset they are written in place
like DatasetWriter's but not indexed: the commit replaces ``episodes.jsonl`` with one holding
their lines in one atomic step (``uwm_core.durable.replace_file``), and until then readers do not
see them and the next writer removes them. A new dataset is built aside, as the staging sibling
``.<name>.tmp-<8 hex>``, and renamed into place at the commit, so a killed update leaves no dataset.

Both hold the dataset's ``.writer.lock`` (an exclusive flock, released when the process dies) from
opening to closing, so a second writer of either kind is refused (``DatasetBusyError``).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import zarr

from ..durable import STAGING_NAME, commit_directory, recover_staging, replace_file, staging_path
from .store import (COMPRESSOR, EPISODES_DIR, FORMAT_VERSION, FRAMES_PER_SHARD, INDEX_FILE, LOCK_FILE, STAGING_DIR,
                    read_index, read_info)

# every chunk is written: zarr's check for chunks equal to the fill value costs a third of a write
WRITE_CONFIG = {"write_empty_chunks": True}
# a shard's frames go through the codecs in one batch, not one asyncio task each: 1.7x less CPU per write
BATCHED_ENCODING = {"codec_pipeline.batch_size": FRAMES_PER_SHARD}


class DatasetBusyError(RuntimeError):
    """Another writer holds the dataset's lock."""


def default_absolute_action_dims(action_dim: int) -> tuple[int, ...]:
    """The gripper (last dim) of the 7-D convention ``[dx, dy, dz, rx, ry, rz, g]`` is absolute."""
    return (6,) if action_dim == 7 else ()


class DatasetWriter:
    """Append episodes to a dataset, creating it if needed; one writer per dataset at a time.

    Appending to an existing dataset requires the same cameras, fps, action_dim, absolute
    action dims and state_dim (ValueError naming both otherwise). With ``state_dim`` > 0 every
    episode carries its proprioceptive state.
    """

    def __init__(self, path: str | os.PathLike, cameras: list[str], fps: float, action_dim: int,
                 absolute_action_dims: tuple[int, ...] | None = None, state_dim: int = 0):
        self.path = Path(path)
        self._lock = None
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
        self._open_store(self.path, {"cameras": cameras, "fps": self.fps, "action_dim": self.action_dim,
                                     "absolute_action_dims": absolute_action_dims, "state_dim": self.state_dim})

    # ------------------------------------------------------------------ setup
    def _open_store(self, root: Path, wanted: dict) -> None:
        """Write into the store at ``root`` (created if missing): check it holds ``wanted``, lock it
        and clear what an interrupted writer left there."""
        self._root = root
        created_lock = None if (root / "zarr.json").exists() else _create_store(root, wanted)
        existing = read_info(root)
        for key, value in wanted.items():
            if existing[key] != value:
                raise ValueError(f"{self.path}: cannot append episodes with {key}={_show(value)}: "
                                 f"the dataset has {key}={_show(existing[key])}")
        self._lock = created_lock or _lock_exclusively(root / LOCK_FILE)
        if self._lock is None:
            raise DatasetBusyError(f"{self.path}: another writer is writing to this dataset")
        self._recover()

    def _recover(self) -> None:
        """Remove what an interrupted writer left: staging dirs, unindexed episodes, a torn index line."""
        shutil.rmtree(self._root / STAGING_DIR, ignore_errors=True)
        recover_staging(self._root)  # an index replacement that never happened
        entries, complete = read_index(self._root)
        index = self._root / INDEX_FILE
        if complete != index.stat().st_size:
            with open(index, "r+b") as f:
                f.truncate(complete)
                os.fsync(f.fileno())
        indexed = {e["name"] for e in entries}
        for child in (self._root / EPISODES_DIR).iterdir():
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
        self._check_open()
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
        staging = self._root / STAGING_DIR / uuid.uuid4().hex
        try:
            with zarr.config.set(BATCHED_ENCODING):
                self._write_arrays(staging, frames, actions, state)
            commit_directory(staging, self._root / EPISODES_DIR / name)
            entry = {"name": name, "length": T, "has_actions": actions is not None, "task": str(task),
                     "frame_shapes": shapes, "metadata": metadata, "action_stats": _sums(actions)}
            if state is not None:
                entry["state_stats"] = _sums(state)
            self._append_to_index((json.dumps(entry) + "\n").encode())
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._num_episodes += 1
        return self._num_episodes - 1

    def _append_to_index(self, line: bytes) -> None:
        """The commit point of one episode: its complete line at the end of the index."""
        fd = os.open(self._root / INDEX_FILE, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

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

    def _check_open(self) -> None:
        if self._lock is None:
            raise RuntimeError(f"{self.path}: writer is closed")

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


class DatasetUpdate(DatasetWriter):
    """Append episodes all-or-nothing: those added become part of the dataset together, at ``commit``.

    ``abort``, an exception inside ``with`` or a killed process leave the dataset as it was (a new
    dataset does not appear; one that gets no episode is not created). ``num_episodes`` and the
    indices ``add_episode`` returns count the uncommitted episodes too. ``commit`` and ``abort``
    close the update; one merely closed leaves its episodes for the next writer to remove.
    """

    def __init__(self, path: str | os.PathLike, cameras: list[str], fps: float, action_dim: int,
                 absolute_action_dims: tuple[int, ...] | None = None, state_dim: int = 0):
        self._pending: list[bytes] = []  # index lines of the episodes added, in order
        super().__init__(path, cameras, fps, action_dim, absolute_action_dims, state_dim)

    def _open_store(self, root: Path, wanted: dict) -> None:
        if not (root / "zarr.json").exists():  # a new dataset: built aside, renamed into place by commit
            _check_creatable(root)
            _remove_abandoned_stages(root)
            root = staging_path(root)
        super()._open_store(root, wanted)

    def _append_to_index(self, line: bytes) -> None:
        self._pending.append(line)

    def commit(self) -> None:
        """Make every episode added part of the dataset in one atomic step, and close the update."""
        self._check_open()
        try:
            index = self._root / INDEX_FILE
            if self._pending:
                replace_file(index, index.read_bytes() + b"".join(self._pending))
            if self._root != self.path:
                self._publish_new_dataset()
        except BaseException:
            self.abort()
            raise
        self._pending = []
        self.close()

    def _publish_new_dataset(self) -> None:
        if not self._pending:
            shutil.rmtree(self._root)
            return
        try:
            commit_directory(self._root, self.path)  # replaces an empty directory, never a dataset
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(exc.errno, f"{self.path}: another writer created this dataset while this "
                                                 "update was being written; the update was not applied") from None
            raise

    def abort(self) -> None:
        """Drop every episode added (the dataset stays as it was) and close the update."""
        if self._lock is None:
            return
        self._pending = []
        if self._root == self.path:
            self._recover()  # the episodes added are the unindexed ones
        else:
            shutil.rmtree(self._root, ignore_errors=True)
        self.close()

    def __enter__(self) -> "DatasetUpdate":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _check_creatable(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: exists and is not a uwm dataset (no zarr.json); "
                         "choose an empty or new directory")


def _create_store(root: Path, info: dict):
    """Create the empty store aside and rename it to ``root`` (replacing an empty directory there);
    its writer lock, taken before the store appears under ``root``, so no other process can take it
    (or remove an abandoned-looking stage) in between. None when another writer created it first."""
    _check_creatable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(root)
    lock = None
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.attrs["uwm_dataset"] = {"version": FORMAT_VERSION, **info,
                                      "absolute_action_dims": list(info["absolute_action_dims"])}
        group.create_group(EPISODES_DIR)
        (tmp / INDEX_FILE).touch()
        lock = _lock_exclusively(tmp / LOCK_FILE)  # nobody else can see tmp yet: always granted
        if root.exists():
            root.rmdir()  # empty (checked above)
        commit_directory(tmp, root)
        return lock
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.close()
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        return None  # another writer created it first: append to theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.close()
        raise


def _lock_exclusively(path: Path):
    """``path`` opened and flocked (released on close or when the process dies); None while another
    process holds the lock."""
    lock = open(path, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _remove_abandoned_stages(final: Path) -> None:
    """Remove the new datasets that killed updates were building beside ``final``: stages whose
    writer lock nobody holds (a stage has its lock file, held, from the moment it has its name)."""
    if not final.parent.is_dir():
        return
    for stage in final.parent.iterdir():
        match = STAGING_NAME.match(stage.name)
        if match is None or match["final"] != final.name or match["kind"] != "tmp":
            continue
        if (stage / LOCK_FILE).is_file() and (lock := _lock_exclusively(stage / LOCK_FILE)) is not None:
            shutil.rmtree(stage, ignore_errors=True)
            lock.close()


def _numeric_rows(name: str, values, rows: int, dim: int) -> np.ndarray:
    """``values`` as finite float32 (rows, dim); ValueError naming ``name`` otherwise."""
    values = np.asarray(values)
    if values.shape != (rows, dim) or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array of shape ({rows}, {dim}), "
                         f"got {values.dtype} {values.shape}")
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
    if isinstance(value, (list, tuple)):
        return str(list(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
