"""LeRobot v3.0 datasets: import into uwm datasets, export uwm datasets.

The official ``lerobot`` package cannot be installed beside this workspace (it pins older torch,
diffusers, huggingface-hub and av), so the published v3.0 layout (lerobot 0.4.x,
``lerobot/datasets/utils.py``, ``lerobot_dataset.py``) is read and written here with pyarrow and
PyAV::

    meta/info.json            codebase_version "v3.0", fps, features, data_path/video_path templates
    meta/tasks.parquet        task strings (the pandas index) and task_index
    meta/episodes/chunk-XXX/file-YYY.parquet
                              one row per episode: episode_index, tasks, length,
                              dataset_from_index/to_index, data/chunk_index, data/file_index,
                              videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp},
                              meta/episodes/{chunk,file}_index, stats/<feature>/<stat>
    meta/stats.json           statistics of every numeric and visual feature
    data/chunk-XXX/file-YYY.parquet
                              frames of several episodes: the non-video features plus timestamp,
                              frame_index, episode_index, index, task_index
    videos/<key>/chunk-XXX/file-YYY.mp4
                              several episodes concatenated; episode e's frame i is the frame at
                              from_timestamp + timestamp[i] (within 1e-4 s, LeRobot's tolerance)

Import (``uwm-import lerobot``) decodes only the frames it keeps, one episode at a time (seeking
to each episode's start in the shared mp4), and maps actions with a mapping file
(``uwm_core.importers.mapping``). Export (``uwm-export lerobot``) writes that layout with every
file LeRobot reads, checked by ``uwm_core.importers.lerobot_checks``.
"""
from __future__ import annotations

import contextlib
import fractions
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..data import open_dataset
from ..spatial import ACTION_NAMES, STATE_NAMES
from .episodes import LoadedEpisode, SourceEpisode, SourceError
from .mapping import Mapping, MappingError, check_format, step_intervals, uwm_export_mapping

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILE_MB, VIDEO_FILE_MB = 100, 200  # LeRobot's defaults
TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # stats q01 .. q99, as lerobot's compute_stats
IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"  # LeRobot's proprioception feature (Diffusion Policy needs it)
UWM_METADATA_COLUMN = "uwm_metadata"  # extra episodes column: the episode's uwm metadata as JSON
# The v2.1 -> v3.0 conversion of a local dataset: lerobot 0.4.x takes the parent directory as --root,
# lerobot >= 0.5.1 moved the script and takes the dataset directory itself.
CONVERT_COMMANDS = ("lerobot 0.4.x: python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id={name} "
                    "--root={parent} --push-to-hub=false; lerobot >= 0.5.1: python -m "
                    "lerobot.scripts.convert_dataset_v21_to_v30 --repo-id={name} --root={root} --push-to-hub=false")
CONVERT_HUB_COMMAND = "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id={repo_id}"  # 0.4.x
STRUCTURAL_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index")


class LeRobotFormatError(SourceError):
    """A directory that is not a loadable LeRobot v3.0 dataset; names the file and key."""


# ====================================================================== reading the layout
def read_info(root: Path, repo_id: str | None = None) -> dict:
    """meta/info.json of a v3.0 dataset (``repo_id``: the hub repo it was fetched from, for messages)."""
    path = root / INFO_PATH
    if not path.is_file():
        raise LeRobotFormatError(f"{root}: not a LeRobot dataset ({INFO_PATH} is missing)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LeRobotFormatError(f"{path}: not valid JSON ({exc})") from None
    version = str(info.get("codebase_version", "unknown"))
    if version != CODEBASE_VERSION:
        hint = ""
        if version.startswith("v2") and repo_id:
            hint = ("; convert the hub dataset to v3.0 with LeRobot's conversion script ("
                    + CONVERT_HUB_COMMAND.format(repo_id=repo_id) + ")")
        elif version.startswith("v2"):
            root = root.resolve()
            hint = ("; convert it to v3.0 with LeRobot's conversion script ("
                    + CONVERT_COMMANDS.format(name=root.name, parent=root.parent, root=root) + ")")
        raise LeRobotFormatError(f"{path}: codebase_version is {version!r}, only LeRobot {CODEBASE_VERSION} "
                                 f"datasets are supported{hint}")
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise LeRobotFormatError(f"{path}: key {key!r} is missing")
    return info


def read_tasks(root: Path) -> list[str]:
    """Task strings by task_index. LeRobot writes tasks.parquet with pandas: the strings are the
    DataFrame index (a column named by the pandas metadata), task_index the one column."""
    path = root / TASKS_PATH
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing")
    table = pq.read_table(path)
    index_columns = (table.schema.pandas_metadata or {}).get("index_columns", [])
    names = [c for c in index_columns if isinstance(c, str)] + ["task", "__index_level_0__"]
    task_column = next((c for c in names if c in table.column_names and c != "task_index"), None)
    if task_column is None or "task_index" not in table.column_names:
        raise LeRobotFormatError(f"{path}: expected a task_index column and the task strings as the pandas index "
                                 f"(columns: {table.column_names})")
    tasks = dict(zip(table["task_index"].to_pylist(), table[task_column].to_pylist()))
    return [tasks[i] for i in sorted(tasks)]


def episode_files(root: Path) -> list[Path]:
    files = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root / EPISODES_DIR}: no episode metadata parquet files")
    return files


def read_episodes(root: Path) -> list[dict]:
    """Rows of meta/episodes/*/*.parquet in order, without the stats/* columns (as LeRobot's
    load_episodes)."""
    rows = []
    for path in episode_files(root):
        columns = [c for c in pq.read_schema(path).names if not c.startswith("stats/")]
        rows.extend(pq.read_table(path, columns=columns).to_pylist())
    return rows


def column_values(column) -> np.ndarray | list:
    """One arrow column as numpy (numbers, fixed/variable lists of numbers) or a list (others)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = array.type
    if pa.types.is_fixed_size_list(kind) and (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
        return np.asarray(array.flatten().to_numpy(zero_copy_only=False)).reshape(len(array), kind.list_size)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        values = array.to_pylist()
        try:
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            return values
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return array.to_numpy(zero_copy_only=False)
    return array.to_pylist()


def plain(value):
    """A JSON-serialisable Python value from a column entry."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# ====================================================================== video decoding
def decode_frames(path: Path, times: np.ndarray, what: str) -> np.ndarray:
    """uint8 (n, H, W, 3) RGB frames of the video at ``times`` (seconds, ascending), each the
    frame whose timestamp is within TOLERANCE_S; decodes from the keyframe before the first time
    and stops after the last. ``what`` describes the request in error messages."""
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: video file is missing ({what})")
    times = np.asarray(times, dtype=np.float64)
    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise LeRobotFormatError(f"{path}: no video stream ({what})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = stream.time_base
        container.seek(max(0, int((times[0] - TOLERANCE_S) * base.denominator / base.numerator)),
                       stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            t = float(frame.pts * base)
            if t > times[len(out)] + TOLERANCE_S:
                break  # the wanted frame was skipped: the video has no frame at that time
            if abs(t - times[len(out)]) < TOLERANCE_S:
                image = frame.to_ndarray(format="rgb24")
                while len(out) < len(times) and abs(t - times[len(out)]) < TOLERANCE_S:
                    out.append(image)
                if len(out) == len(times):
                    break
    if len(out) < len(times):
        raise LeRobotFormatError(f"{path}: no frame at {times[len(out)]:.4f} s ({what}, frame {len(out)} of "
                                 f"{len(times)} wanted): the video is shorter than its parquet says or its "
                                 f"timestamps do not match")
    return np.stack(out)


def decode_images(cells: list, what: str) -> np.ndarray:
    """uint8 (n, H, W, 3) from LeRobot image cells ({"bytes": PNG/JPEG, "path": ...})."""
    images = []
    for cell in cells:
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise LeRobotFormatError(f"{what}: image cell without embedded bytes")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise LeRobotFormatError(f"{what}: image bytes cannot be decoded")
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(images)


# ====================================================================== import
def resolve_source(root_or_repo_id: str, revision: str | None = None) -> tuple[Path, str, str | None]:
    """(local root, identity, hub repo id or None). A hub id is fetched with huggingface_hub's
    snapshot_download: only meta/ now, data and video files when an episode needs them."""
    path = Path(root_or_repo_id)
    if path.exists():
        if not path.is_dir():
            raise LeRobotFormatError(f"{path}: not a directory (a LeRobot dataset is a directory)")
        return path, str(path.resolve()), None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", root_or_repo_id):
        raise LeRobotFormatError(f"{root_or_repo_id}: no such directory, and not a hub repo id (owner/name)")
    root = hub_download(root_or_repo_id, revision, ["meta/**"], "no such local directory either; ")
    return root, root_or_repo_id, root_or_repo_id


def hub_download(repo_id: str, revision: str | None, patterns: list[str], hint: str = "") -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns))
    except Exception as exc:  # offline, no network, unknown repo, no access: one clear message
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint += "HF_HUB_OFFLINE is set." if offline else "is the network reachable and the repo id right?"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LeRobotFormatError(f"{repo_id}: cannot fetch {', '.join(patterns)} from the Hugging Face hub "
                                 f"({type(exc).__name__}: {detail}); {hint} Or download the dataset where the "
                                 f"network allows and pass its local directory") from None


@dataclass
class LeRobotSource:
    """A LeRobot v3.0 dataset as an importer Source (``uwm_core.importers.episodes``)."""

    root: Path
    name: str
    mapping: Mapping
    fps: float
    repo_id: str | None = None
    revision: str | None = None
    info: dict = field(default_factory=dict)
    tasks: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    @classmethod
    def open(cls, root_or_repo_id: str, mapping: Mapping | None, fps: float | None = None,
             revision: str | None = None, with_actions: bool = True, cameras: dict | None = None,
             flip: str | None = None) -> "LeRobotSource":
        """``mapping`` None: the cameras under their short names, actions only for uwm exports;
        ``cameras`` / ``flip`` replace the mapping's."""
        root, name, repo_id = resolve_source(root_or_repo_id, revision)
        info = read_info(root, repo_id)
        if mapping is None:
            mapping = default_mapping(root, info["features"], with_actions)
        check_format(mapping, "lerobot")
        mapping.cameras = cameras or mapping.cameras
        mapping.flip = flip or mapping.flip
        if not with_actions:
            mapping.actions = None
        source_fps = float(info["fps"])
        source = cls(root, name, mapping, float(fps or mapping.fps or source_fps), repo_id, revision, info,
                     read_tasks(root), read_episodes(root))
        source.check_mapping()
        step_intervals(1, source_fps, source.fps)  # refuses upsampling now, not at the first episode
        return source

    @property
    def cameras(self) -> list[str]:
        return list(self.mapping.cameras)

    @property
    def features(self) -> dict:
        return self.info["features"]

    def check_mapping(self) -> None:
        info_path = self.root / INFO_PATH
        visual = [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]
        for ours, key in self.mapping.cameras.items():
            if key not in visual:
                raise LeRobotFormatError(f"{info_path}: no camera feature {key!r} (camera {ours!r} of "
                                         f"{self.mapping.path}); camera features: {visual}")
        needed = [ref.name for ref in (self.mapping.actions.columns if self.mapping.actions else [])]
        for name in needed + self.mapping.metadata:
            if name not in self.features:
                raise LeRobotFormatError(f"{info_path}: no feature {name!r}, which {self.mapping.path} uses "
                                         f"(features: {sorted(self.features)})")

    # ------------------------------------------------------------------ Source
    def episodes(self, metadata_keys: set[str]) -> list[SourceEpisode]:
        episodes = []
        for row in self.rows:
            metadata = {k: plain(v) for k, v in row.items() if is_metadata_column(k, v)}
            metadata.update(json.loads(row.get(UWM_METADATA_COLUMN) or "{}"))
            tasks = row.get("tasks") or [""]
            episodes.append(SourceEpisode(self.name, int(row["episode_index"]), str(tasks[0]), metadata))
        missing = sorted(k for k in metadata_keys if not any(k in e.metadata for e in episodes))
        unknown = [k for k in missing if k not in self.features]
        if unknown:
            raise LeRobotFormatError(f"{self.root / INFO_PATH}: no episode column or feature {unknown[0]!r} to select "
                                     f"on (episode columns: {sorted(episodes[0].metadata) if episodes else []})")
        if missing:
            self.scan_frame_columns(episodes, missing)
        return episodes

    def scan_frame_columns(self, episodes: list[SourceEpisode], keys: list[str]) -> None:
        """Copy per-frame columns (their first value per episode) into the episodes' metadata."""
        by_index = {e.key: e for e in episodes}
        files = sorted({(r["data/chunk_index"], r["data/file_index"]) for r in self.rows})
        for chunk, file in tqdm(files, desc="read episode metadata", unit="file", disable=len(files) < 3):
            path = self.file(self.info["data_path"].format(chunk_index=chunk, file_index=file))
            table = pq.read_table(path, columns=["episode_index", *keys])
            indices = column_values(table["episode_index"])
            found, first = np.unique(indices, return_index=True)
            for key in keys:
                values = column_values(table[key])
                for index, row in zip(found, first):
                    if int(index) in by_index:
                        by_index[int(index)].metadata[key] = plain(values[row])

    def load(self, episode: SourceEpisode) -> LoadedEpisode:
        row = self.row(episode.key)
        data_path = self.file(self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                            file_index=row["data/file_index"]))
        camera_columns = [k for k in self.mapping.cameras.values() if self.features[k]["dtype"] == "image"]
        action_columns = [ref.name for ref in self.mapping.actions.columns] if self.mapping.actions else []
        columns = sorted({"frame_index", "timestamp", *action_columns, *self.mapping.metadata, *camera_columns})
        table = pq.read_table(data_path, columns=columns, filters=[("episode_index", "=", episode.key)])
        table = table.sort_by("frame_index")
        what = f"episode {episode.key} in {data_path}"
        if table.num_rows != row["length"]:
            raise LeRobotFormatError(f"{data_path}: episode {episode.key} has {table.num_rows} rows, "
                                     f"{EPISODES_DIR} says length {row['length']}")
        values = {name: column_values(table[name]) for name in columns if name not in camera_columns}
        starts, ends = step_intervals(table.num_rows, float(self.info["fps"]), self.fps)
        frames = {}
        for ours, key in self.mapping.cameras.items():
            if key in camera_columns:
                images = decode_images([table[key][int(i)].as_py() for i in starts], f"{data_path}: {key}, {what}")
            else:
                video = self.file(self.info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                                 file_index=row[f"videos/{key}/file_index"]))
                times = row[f"videos/{key}/from_timestamp"] + np.asarray(values["timestamp"], np.float64)[starts]
                images = decode_frames(video, times, f"camera {key}, {what}")
            frames[ours] = self.mapping.flip_frames(images)
        actions = None
        if self.mapping.actions is not None:
            try:
                actions = self.mapping.actions.actions(values, starts, ends)
            except MappingError as exc:
                raise LeRobotFormatError(f"{data_path}: {what}: {exc} ({self.mapping.path})") from None
        metadata = {key: plain(values[key][0]) for key in self.mapping.metadata}
        metadata["source_fps"] = float(self.info["fps"])
        return LoadedEpisode(frames, actions, metadata)

    # ------------------------------------------------------------------ files
    def row(self, episode_index: int) -> dict:
        row = self.rows[episode_index] if episode_index < len(self.rows) else None
        if row is None or row["episode_index"] != episode_index:
            row = next((r for r in self.rows if r["episode_index"] == episode_index), None)
        if row is None:
            raise LeRobotFormatError(f"{self.root / EPISODES_DIR}: no episode {episode_index}")
        return row

    def file(self, relative: str) -> Path:
        """A dataset file, fetched from the hub first when the dataset is a hub repo."""
        path = self.root / relative
        if not path.exists() and self.repo_id is not None:
            self.root = hub_download(self.repo_id, self.revision, [relative])
            path = self.root / relative
        if not path.is_file():
            raise LeRobotFormatError(f"{path}: missing (referenced by {EPISODES_DIR})")
        return path


def is_metadata_column(name: str, value) -> bool:
    """Episode columns offered for selection: scalars that are not layout bookkeeping."""
    return (name not in STRUCTURAL_EPISODE_COLUMNS and name != UWM_METADATA_COLUMN
            and not name.startswith(("data/", "videos/", "meta/", "stats/"))
            and (value is None or isinstance(value, (str, int, float, bool))))


def default_mapping(root: Path, features: dict, with_actions: bool) -> Mapping:
    """Without --mapping: every camera feature under its short name; actions only for datasets
    written by ``uwm-export`` (whose ``action`` names are the uwm convention)."""
    cameras = {key.removeprefix(IMAGE_PREFIX): key for key, f in features.items() if f.get("dtype") in ("video", "image")}
    mapping = uwm_export_mapping(cameras)
    action_names = (features.get("action") or {}).get("names")
    if with_actions and list(action_names or []) != list(ACTION_NAMES):
        raise LeRobotFormatError(f"{root / INFO_PATH}: the action features are not in the uwm convention "
                                 f"(action names {action_names}): give --mapping (e.g. droid) to map them, or "
                                 f"--no-actions to import video only")
    return mapping


# ====================================================================== export
@dataclass
class ExportReport:
    episodes: int = 0
    frames: int = 0
    data_files: int = 0
    video_files: int = 0


class RollingParquet:
    """Tables appended to chunk-XXX/file-YYY.parquet files, a new file once one holds limit_mb."""

    def __init__(self, root: Path, template: str, schema: pa.Schema, limit_mb: float):
        self.root, self.template, self.schema, self.limit = root, template, schema, limit_mb * 2**20
        self.chunk, self.file, self.writer, self.bytes, self.files = 0, 0, None, 0, 0

    def write(self, table: pa.Table) -> tuple[int, int]:
        if self.writer is None:
            path = self.root / self.template.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema, compression="snappy")
            self.files += 1
        self.writer.write_table(table.cast(self.schema))
        self.bytes += table.nbytes
        location = (self.chunk, self.file)
        if self.bytes >= self.limit:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
        return location

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.bytes = None, 0


class RollingVideo:
    """One camera's episodes in concatenated mp4 files, as LeRobot builds them: each episode is
    encoded on its own (starting with a keyframe), then its packets are copied into the current
    file after the previous episodes (a new file once one would exceed limit_mb). Episode frame i
    is at from_timestamp + i / fps of its file."""

    def __init__(self, root: Path, key: str, fps: int, codec: str, options: dict, limit_mb: float):
        self.root, self.key, self.fps, self.codec, self.options = root, key, fps, codec, options
        self.limit, self.chunk, self.file = limit_mb * 2**20, 0, 0
        self.container = self.stream = None
        self.frames_in_file, self.bytes, self.files = 0, 0, 0
        self.scratch = root / f".episode-{key}.mp4"

    def write(self, frames: np.ndarray) -> dict:
        self.encode(frames, self.scratch)
        size = self.scratch.stat().st_size
        if self.container is not None and self.bytes + size >= self.limit:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
        with av.open(str(self.scratch)) as episode:
            source = episode.streams.video[0]
            if self.container is None:
                path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.container = av.open(str(path), "w", options={"movflags": "faststart"})
                self.stream = self.container.add_stream_from_template(template=source, opaque=True)
                self.stream.time_base = source.time_base
                self.frames_in_file, self.bytes, self.files = 0, 0, self.files + 1
            offset = round(fractions.Fraction(self.frames_in_file, self.fps) / source.time_base)
            for packet in episode.demux(source):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.pts += offset
                packet.dts += offset
                packet.stream = self.stream
                self.container.mux(packet)
        start = self.frames_in_file
        self.frames_in_file += len(frames)
        self.bytes += size
        return {f"videos/{self.key}/chunk_index": self.chunk, f"videos/{self.key}/file_index": self.file,
                f"videos/{self.key}/from_timestamp": start / self.fps,
                f"videos/{self.key}/to_timestamp": self.frames_in_file / self.fps}

    def encode(self, frames: np.ndarray, path: Path) -> None:
        with thread_scheduling_kept(), av.open(str(path), "w") as container:
            stream = container.add_stream(self.codec, rate=self.fps, options=self.options)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts, frame.time_base = i, fractions.Fraction(1, self.fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def finish(self) -> None:
        self.close()
        self.scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def thread_scheduling_kept():
    """Restore the calling thread's scheduling policy on exit. SVT-AV1 (libsvtav1, LeRobot's
    encoder) switches the thread that opens it to SCHED_FIFO priority 99 when run as root: a
    real-time thread that keeps computing starves every other thread on its core (ROS executors,
    DDS) and passes the policy on to the processes it starts."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


def arrow_column(values: np.ndarray) -> pa.Array:
    """A numpy column as arrow: (T,) -> scalars, (T, n) -> fixed-size lists (LeRobot's Sequence)."""
    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def codec_options(codec: str, crf: int, gop: int) -> dict:
    """LeRobot's encoder settings: a keyframe every ``gop`` frames for fast random access."""
    options = {"g": str(gop), "crf": str(crf)}
    if codec == "libsvtav1":
        options["preset"] = "12"
    return options


def video_info(path: Path, fps: int) -> dict:
    """The features[<video>]["info"] LeRobot stores (read back from the encoded file)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"video.height": stream.height, "video.width": stream.width,
                "video.codec": stream.codec_context.codec.canonical_name, "video.pix_fmt": stream.pix_fmt,
                "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}


def feature_stats(values: np.ndarray) -> dict:
    """min/max/mean/std/count/quantiles over axis 0 of (T,) or (T, n) values, as lerobot's
    compute_episode_stats (1-D features keep a (1,) shape)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for q in QUANTILES:
        stats[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0)
    return stats


def image_stats(frames: np.ndarray, max_frames: int = 100) -> dict:
    """Per-channel statistics in [0, 1], shape (3, 1, 1), over up to max_frames evenly spaced frames;
    exact (np.quantile's linear interpolation included) from each channel's 256-bin histogram."""
    picked = frames[np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(int)]
    values = np.arange(256) / 255.0
    channels = []
    for c in range(3):
        counts = np.bincount(picked[..., c].ravel(), minlength=256)
        n, cumulative, present = counts.sum(), np.cumsum(counts), np.flatnonzero(counts)
        mean = (counts * values).sum() / n
        sorted_value = lambda k: values[np.searchsorted(cumulative, k, side="right")]  # noqa: E731 (k-th smallest)
        stats = {"min": values[present[0]], "max": values[present[-1]], "mean": mean,
                 "std": np.sqrt((counts * (values - mean) ** 2).sum() / n)}
        for q in QUANTILES:
            position = q * (n - 1)
            low, high = sorted_value(np.floor(position)), sorted_value(np.ceil(position))
            stats[f"q{int(round(q * 100)):02d}"] = low + (position - np.floor(position)) * (high - low)
        channels.append(stats)
    result = {k: np.array([s[k] for s in channels]).reshape(3, 1, 1) for k in channels[0]}
    result["count"] = np.array([len(picked)])
    return result


def aggregate_stats(per_episode: list[dict]) -> dict:
    """Dataset statistics from episode statistics (counts weight means, variances and quantiles;
    the variance by the parallel formula), as lerobot's aggregate_stats."""
    total = {}
    for key in per_episode[0]:
        stats = [s[key] for s in per_episode]
        counts = np.array([s["count"][0] for s in stats], dtype=np.float64)
        weights = counts.reshape(-1, *([1] * stats[0]["mean"].ndim)) / counts.sum()
        means = np.stack([s["mean"] for s in stats])
        mean = (weights * means).sum(0)
        variance = (weights * (np.stack([s["std"] for s in stats]) ** 2 + (means - mean) ** 2)).sum(0)
        total[key] = {"min": np.min([s["min"] for s in stats], axis=0), "max": np.max([s["max"] for s in stats], axis=0),
                      "mean": mean, "std": np.sqrt(variance), "count": np.array([int(counts.sum())])}
        for q in [k for k in stats[0] if re.fullmatch(r"q\d\d", k)]:
            total[key][q] = (weights * np.stack([s[q] for s in stats])).sum(0)
    return total


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas writes a DataFrame indexed by task string (what
    LeRobot's pd.read_parquet expects): the index stored as a column, named in the pandas metadata."""
    pandas_metadata = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_metadata).encode()})
    return pa.table({"task_index": np.arange(len(tasks), dtype=np.int64), "__index_level_0__": tasks}, schema=schema)


def stats_columns(stats: dict) -> dict:
    """Flattened ``stats/<feature>/<stat>`` episode columns."""
    return {f"stats/{feature}/{name}": value.tolist() for feature, s in stats.items() for name, value in s.items()}


def export_lerobot(dataset: str | Path, out: str | Path, episodes: list[int] | None = None,
                   vcodec: str = "libsvtav1", crf: int = 30, gop: int = 2, robot_type: str | None = None,
                   data_file_mb: float = DATA_FILE_MB, video_file_mb: float = VIDEO_FILE_MB,
                   progress: bool = True) -> ExportReport:
    """Write the uwm dataset ``dataset`` as a LeRobot v3.0 dataset directory ``out``.

    Cameras become ``observation.images.<camera>`` videos; the proprioceptive state (when the
    dataset has one) ``observation.state``; actions the ``action`` feature (names
    dx .. gripper) when every exported episode has actions (a dataset mixing action-free episodes
    is refused: export robot and video data separately). A camera's frames of another size than
    in the first exported episode are resized to it (LeRobot features have one shape). The
    directory is built beside ``out`` and renamed into place when complete.
    """
    ds = open_dataset(dataset)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; choose a new directory")
    indices = list(range(ds.num_episodes)) if episodes is None else list(episodes)
    if not indices:
        raise ValueError(f"{ds.path}: no episodes to export")
    if any(not 0 <= i < ds.num_episodes for i in indices):
        raise ValueError(f"--episodes: out of range for {ds.path} ({ds.num_episodes} episodes)")
    fps = int(round(ds.fps))
    if abs(ds.fps - fps) > 1e-9:
        raise ValueError(f"{ds.path}: fps {ds.fps:g} is not an integer, which LeRobot requires")
    with_actions = bool(ds.has_actions[indices].all())
    if ds.has_actions[indices].any() and not with_actions:
        raise ValueError(f"{ds.path}: {int(ds.has_actions[indices].sum())} of {len(indices)} episodes have actions: "
                         "LeRobot features cannot be absent for some episodes; export with --episodes "
                         "selecting only robot or only action-free episodes")
    if ds.action_dim != len(ACTION_NAMES) and with_actions:
        raise ValueError(f"{ds.path}: action_dim {ds.action_dim} is not the 7-D uwm convention")
    shapes = {cam: ds.frame_shape(indices[0], cam) for cam in ds.cameras}
    for cam, (h, w) in shapes.items():
        if h % 2 or w % 2:
            raise ValueError(f"{ds.path}: camera {cam!r} frames are {h}x{w}; yuv420p video needs even sizes")
    try:
        av.codec.Codec(vcodec, "w")
    except Exception:
        raise ValueError(f"--vcodec: {vcodec!r} is not an encoder available in this PyAV build") from None
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stderr otherwise

    video_keys = {cam: IMAGE_PREFIX + cam for cam in ds.cameras}
    features = {key: {"dtype": "video", "shape": [*shapes[cam], 3], "names": ["height", "width", "channels"]}
                for cam, key in video_keys.items()}
    if with_actions:
        features["action"] = {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)}
    if ds.state_dim:
        names = list(STATE_NAMES) if ds.state_dim == len(STATE_NAMES) else [f"state_{i}" for i in range(ds.state_dim)]
        features[STATE_KEY] = {"dtype": "float32", "shape": [ds.state_dim], "names": names}
    features.update(json.loads(json.dumps(DEFAULT_FEATURES)))
    data_fields = [("action", pa.list_(pa.float32(), len(ACTION_NAMES)))] if with_actions else []
    data_fields += [(STATE_KEY, pa.list_(pa.float32(), ds.state_dim))] if ds.state_dim else []
    data_fields += [("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
                    ("index", pa.int64()), ("task_index", pa.int64())]

    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    data = RollingParquet(tmp, DATA_PATH, pa.schema(data_fields), data_file_mb)
    videos = {cam: RollingVideo(tmp, key, fps, vcodec, codec_options(vcodec, crf, gop), video_file_mb)
              for cam, key in video_keys.items()}
    rows, all_stats, tasks, report = [], [], {}, ExportReport()
    numeric = {}  # feature -> per-episode values: dataset quantiles exactly, not averaged per episode
    try:
        for new_index, i in enumerate(tqdm(indices, desc="export lerobot", unit="episode", disable=not progress)):
            episode = ds.episode(i)
            T = episode.length
            task_index = tasks.setdefault(episode.task, len(tasks))
            frame_index = np.arange(T, dtype=np.int64)
            columns = {"timestamp": (frame_index / fps).astype(np.float32), "frame_index": frame_index,
                       "episode_index": np.full(T, new_index, np.int64),
                       "index": report.frames + frame_index, "task_index": np.full(T, task_index, np.int64)}
            if ds.state_dim:
                columns = {STATE_KEY: episode.state.astype(np.float32), **columns}
            if with_actions:
                columns = {"action": episode.actions.astype(np.float32), **columns}
            chunk, file = data.write(pa.table({name: arrow_column(values) for name, values in columns.items()}))
            stats = {name: feature_stats(values) for name, values in columns.items()}
            for name, values in columns.items():
                numeric.setdefault(name, []).append(values)
            row = {"episode_index": new_index, "tasks": [episode.task], "length": T,
                   "data/chunk_index": chunk, "data/file_index": file,
                   "dataset_from_index": report.frames, "dataset_to_index": report.frames + T}
            for cam, key in video_keys.items():
                frames = episode.frames[cam]
                if frames.shape[1:3] != tuple(shapes[cam]):
                    frames = np.stack([cv2.resize(f, shapes[cam][::-1], interpolation=cv2.INTER_AREA) for f in frames])
                row.update(videos[cam].write(frames))
                stats[key] = image_stats(frames)
            row[UWM_METADATA_COLUMN] = json.dumps(episode.metadata)
            rows.append({**row, **stats_columns(stats)})
            all_stats.append(stats)
            report.episodes += 1
            report.frames += T
        data.close()
        for video in videos.values():
            video.finish()
        write_episode_rows(tmp, rows, data_file_mb)
        pq.write_table(tasks_table(list(tasks)), tmp / TASKS_PATH)
        # images: lerobot's aggregation of episode statistics; numeric features: over every frame
        # (a count-weighted mean of episode medians is no median: a binary gripper's would be 0.39)
        stats = aggregate_stats(all_stats)
        stats.update({name: feature_stats(np.concatenate(values)) for name, values in numeric.items()})
        stats = {k: {n: v.tolist() for n, v in s.items()} for k, s in stats.items()}
        (tmp / STATS_PATH).write_text(json.dumps(stats, indent=4))
        for cam, key in video_keys.items():
            features[key]["info"] = video_info(tmp / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), fps)
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": report.episodes,
                "total_frames": report.frames, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": whole(data_file_mb), "video_files_size_in_mb": whole(video_file_mb), "fps": fps,
                "splits": {"train": f"0:{report.episodes}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": features}
        (tmp / INFO_PATH).write_text(json.dumps(info, indent=4))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        data.close()
        for video in videos.values():
            try:
                video.close()
            except Exception:  # the original error matters, not closing a half-written file
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.data_files = data.files
    report.video_files = sum(v.files for v in videos.values())
    return report


def whole(value: float) -> int | float:
    """info.json sizes are integers in LeRobot's files; keep a fractional test limit as it is."""
    return int(value) if float(value).is_integer() else value


def write_episode_rows(root: Path, rows: list[dict], limit_mb: float) -> None:
    """meta/episodes parquet files; each row records the file it is in (meta/episodes/*_index)."""
    chunk, file, start, size = 0, 0, 0, 0.0
    for end, row in enumerate(rows, start=1):
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
        size += len(json.dumps(row)) / 2**20
        if size >= limit_mb or end == len(rows):
            path = root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows[start:end]), path)
            chunk, file = next_file(chunk, file)
            start, size = end, 0.0
