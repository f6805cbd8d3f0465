"""LeRobot v3.0 datasets as an importer Source (``uwm-import lerobot``).

The layout is described and its metadata read in ``uwm_core.importers.lerobot_format``. Import
decodes only the frames it keeps, one episode at a time (seeking to each episode's start in the
shared mp4, ``uwm_core.importers.video``), and maps actions with a mapping file
(``uwm_core.importers.mapping``). A hub repo id is fetched file by file as episodes need them
(``uwm_core.importers.lerobot_hub``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from ..image_codec import ImageDecodeError, decode_compressed
from ..spatial import ACTION_NAMES
from .episodes import LoadedEpisode, SourceEpisode
from .lerobot_format import (EPISODES_DIR, IMAGE_PREFIX, INFO_PATH, STRUCTURAL_EPISODE_COLUMNS, TOLERANCE_S,
                             UWM_METADATA_COLUMN, LeRobotFormatError, column_values, read_episodes, read_info,
                             read_tasks)
from .lerobot_hub import hub_download, resolve_source
from .mapping import Mapping, MappingError, check_format, step_intervals, uwm_export_mapping
from .video import VideoError, frames_at


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
                images = decode_video(video, times, f"camera {key}, {what}")
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


def plain(value):
    """A JSON-serialisable Python value from a column entry."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_video(path: Path, times: np.ndarray, what: str) -> np.ndarray:
    """uint8 (n, H, W, 3) RGB frames of the mp4 at ``times`` (seconds, ascending), each the frame
    whose timestamp is within TOLERANCE_S. ``what`` describes the request in error messages."""
    try:
        frames = frames_at(path, times, TOLERANCE_S)
    except VideoError as exc:
        raise LeRobotFormatError(f"{path}: {exc} ({what})") from None
    if len(frames) < len(times):
        raise LeRobotFormatError(f"{path}: no frame at {times[len(frames)]:.4f} s ({what}, frame {len(frames)} of "
                                 f"{len(times)} wanted): the video is shorter than its parquet says or its "
                                 f"timestamps do not match")
    return np.stack(frames)


def decode_images(cells: list, what: str) -> np.ndarray:
    """uint8 (n, H, W, 3) from LeRobot image cells ({"bytes": PNG/JPEG, "path": ...})."""
    images = []
    for cell in cells:
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise LeRobotFormatError(f"{what}: image cell without embedded bytes")
        try:
            images.append(decode_compressed("image cell", data))
        except ImageDecodeError:
            raise LeRobotFormatError(f"{what}: image bytes cannot be decoded") from None
    return np.stack(images)
