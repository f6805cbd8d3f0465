"""``uwm-export lerobot``: a uwm dataset written as a LeRobot v3.0 dataset directory.

Every file LeRobotDataset reads is written (layout: ``uwm_core.importers.lerobot_format``; files:
``lerobot_files``; statistics: ``lerobot_stats``) and the result is checked by
``uwm_core.importers.lerobot_checks``. The directory is built in a staging directory beside the
output and committed into place when complete (``uwm_core.durable``), so an interrupted export
leaves no output.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..data import open_dataset
from ..durable import commit_directory, staging_path
from ..importers.lerobot_format import (CHUNKS_SIZE, CODEBASE_VERSION, DATA_PATH, DEFAULT_FEATURES, IMAGE_PREFIX,
                                        INFO_PATH, STATE_KEY, STATS_PATH, TASKS_PATH, UWM_METADATA_COLUMN,
                                        VIDEO_PATH)
from ..spatial import ACTION_NAMES, STATE_NAMES
from .lerobot_files import (RollingParquet, RollingVideo, arrow_column, codec_options, tasks_table, video_info,
                            write_episode_rows)
from .lerobot_stats import aggregate_stats, feature_stats, image_stats, stats_columns

DATA_FILE_MB, VIDEO_FILE_MB = 100, 200  # LeRobot's defaults


@dataclass
class ExportReport:
    episodes: int = 0
    frames: int = 0
    data_files: int = 0
    video_files: int = 0


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
    directory is built beside ``out`` and committed into place when complete.
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

    staging = staging_path(out)
    staging.mkdir(parents=True)
    data = RollingParquet(staging, DATA_PATH, pa.schema(data_fields), data_file_mb)
    videos = {cam: RollingVideo(staging, key, fps, vcodec, codec_options(vcodec, crf, gop), video_file_mb)
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
        write_episode_rows(staging, rows, data_file_mb)
        pq.write_table(tasks_table(list(tasks)), staging / TASKS_PATH)
        # images: lerobot's aggregation of episode statistics; numeric features: over every frame
        # (a count-weighted mean of episode medians is no median: a binary gripper's would be 0.39)
        stats = aggregate_stats(all_stats)
        stats.update({name: feature_stats(np.concatenate(values)) for name, values in numeric.items()})
        stats = {k: {n: v.tolist() for n, v in s.items()} for k, s in stats.items()}
        (staging / STATS_PATH).write_text(json.dumps(stats, indent=4))
        for key in video_keys.values():
            first_video = staging / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            features[key]["info"] = video_info(first_video, fps)
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": report.episodes,
                "total_frames": report.frames, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": whole(data_file_mb), "video_files_size_in_mb": whole(video_file_mb), "fps": fps,
                "splits": {"train": f"0:{report.episodes}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": features}
        (staging / INFO_PATH).write_text(json.dumps(info, indent=4))
        if out.exists():
            out.rmdir()  # the empty directory given as the output (checked above)
        commit_directory(staging, out)
    except BaseException:
        data.close()
        for video in videos.values():
            try:
                video.close()
            except Exception:  # the original error matters, not closing a half-written file
                pass
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.data_files = data.files
    report.video_files = sum(v.files for v in videos.values())
    return report


def whole(value: float) -> int | float:
    """info.json sizes are integers in LeRobot's files; keep a fractional test limit as it is."""
    return int(value) if float(value).is_integer() else value
