"""Consistency checks of a LeRobot v3.0 directory: what LeRobotDataset relies on when it loads one.

LeRobot itself cannot be installed here (see ``uwm_core.importers.lerobot_format``), so this module
checks, with pyarrow and PyAV, the facts its loader and video decoder depend on:

* meta/info.json: codebase_version v3.0, integer fps, the default features (timestamp,
  frame_index, episode_index, index, task_index) with their dtypes, no '/' in feature names,
  video features with a 3-D shape and encoding info, path templates with chunk/file indices;
* meta/tasks.parquet: task_index 0..n-1 with the task strings as the pandas index, n = total_tasks;
* meta/episodes: episode_index 0..N-1 in order (N = total_episodes), contiguous
  dataset_from_index/to_index matching ``length`` and summing to total_frames, the file/video
  index columns of every video key, per-episode stats columns, tasks that exist;
* data files: the columns are exactly the non-video features, with matching types; each
  episode's rows have episode_index, index = dataset_from_index + frame_index, frame_index
  0..length-1, timestamp = frame_index / fps (within 1e-4 s) and a task_index of its tasks;
* videos: each file exists with the feature's resolution; every frame an episode's parquet
  rows query (from_timestamp + timestamp) has a video frame within 1e-4 s and the episode's
  [from_timestamp, to_timestamp) holds exactly ``length`` frames (packet timestamps, no decode);
* meta/stats.json: min/max/mean/std/count for every non-string feature, image stats (3, 1, 1).

``check_lerobot_dataset`` lists every problem found; ``validate_lerobot_dataset`` raises them.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .lerobot_format import (CODEBASE_VERSION, DEFAULT_FEATURES, EPISODES_DIR, INFO_PATH, STATS_PATH, TASKS_PATH,
                             TOLERANCE_S, LeRobotFormatError, column_values, episode_files, read_tasks)
from .video import VideoError, open_video

REQUIRED_INFO = ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames",
                 "total_tasks", "chunks_size", "splits")
REQUIRED_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                            "dataset_from_index", "dataset_to_index", "meta/episodes/chunk_index",
                            "meta/episodes/file_index")
REQUIRED_STATS = ("min", "max", "mean", "std", "count")
ARROW_DTYPES = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
                "bool": pa.bool_(), "string": pa.string()}


def validate_lerobot_dataset(root: str | Path) -> None:
    problems = check_lerobot_dataset(root)
    if problems:
        raise LeRobotFormatError(f"{root}: not a valid LeRobot {CODEBASE_VERSION} dataset:\n  " + "\n  ".join(problems))


def check_lerobot_dataset(root: str | Path) -> list[str]:
    root = Path(root)
    problems: list[str] = []
    try:
        info = json.loads((root / INFO_PATH).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{root / INFO_PATH}: cannot be read ({exc})"]
    check_info(root, info, problems)
    if problems:  # the rest is read through info
        return problems
    try:
        tasks = read_tasks(root)
        episodes = read_all_episodes(root)
    except (LeRobotFormatError, OSError, pa.ArrowException) as exc:
        return problems + [str(exc)]
    check_tasks(root, info, tasks, problems)
    check_episodes(root, info, tasks, episodes, problems)
    if not problems:
        check_data(root, info, episodes, problems)
        check_videos(root, info, episodes, problems)
    check_stats(root, info, problems)
    return problems


def read_all_episodes(root: Path) -> list[dict]:
    rows = []
    for path in episode_files(root):
        for row in pq.read_table(path).to_pylist():
            row["_file"] = path.relative_to(root).as_posix()
            rows.append(row)
    return rows


def video_keys(info: dict) -> list[str]:
    return [k for k, f in info["features"].items() if f.get("dtype") == "video"]


# ====================================================================== meta
def check_info(root: Path, info: dict, problems: list[str]) -> None:
    where = root / INFO_PATH
    missing = [k for k in REQUIRED_INFO if k not in info]
    if missing:
        problems.append(f"{where}: missing keys {missing}")
        return
    if info["codebase_version"] != CODEBASE_VERSION:
        problems.append(f"{where}: codebase_version is {info['codebase_version']!r}, not {CODEBASE_VERSION!r}")
    if not isinstance(info["fps"], int) or info["fps"] <= 0:
        problems.append(f"{where}: fps must be a positive integer, got {info['fps']!r}")
    features = info["features"]
    for name, spec in DEFAULT_FEATURES.items():
        if name not in features:
            problems.append(f"{where}: default feature {name!r} is missing")
        elif features[name].get("dtype") != spec["dtype"]:
            problems.append(f"{where}: feature {name!r} has dtype {features[name].get('dtype')!r}, "
                            f"LeRobot writes {spec['dtype']!r}")
    for name, feature in features.items():
        if "/" in name:
            problems.append(f"{where}: feature name {name!r} contains '/'")
        if not {"dtype", "shape"} <= set(feature):
            problems.append(f"{where}: feature {name!r} lacks dtype or shape")
            continue
        if feature["dtype"] in ("video", "image") and len(feature["shape"]) != 3:
            problems.append(f"{where}: feature {name!r} shape {feature['shape']} is not 3-D")
        if feature["dtype"] == "video":
            info_keys = {"video.height", "video.width", "video.codec", "video.pix_fmt", "video.fps"}
            if not info_keys <= set(feature.get("info") or {}):
                problems.append(f"{where}: video feature {name!r} lacks info {sorted(info_keys)}")
    for key in ("data_path", *(["video_path"] if video_keys(info) else [])):
        template = info.get(key) or ""
        if "{chunk_index" not in template or "{file_index" not in template:
            problems.append(f"{where}: {key} {template!r} lacks {{chunk_index}}/{{file_index}}")
    if video_keys(info) and "{video_key}" not in (info.get("video_path") or ""):
        problems.append(f"{where}: video_path lacks {{video_key}}")


def check_tasks(root: Path, info: dict, tasks: list[str], problems: list[str]) -> None:
    table = pq.read_table(root / TASKS_PATH)
    indices = table["task_index"].to_pylist()
    if sorted(indices) != list(range(len(indices))):
        problems.append(f"{root / TASKS_PATH}: task_index is not 0..{len(indices) - 1}")
    if len(set(tasks)) != len(tasks):
        problems.append(f"{root / TASKS_PATH}: task strings are not unique")
    if len(tasks) != info["total_tasks"]:
        problems.append(f"{root / TASKS_PATH}: {len(tasks)} tasks, info.json total_tasks is {info['total_tasks']}")


def check_episodes(root: Path, info: dict, tasks: list[str], episodes: list[dict], problems: list[str]) -> None:
    where = root / EPISODES_DIR
    required = list(REQUIRED_EPISODE_COLUMNS)
    for key in video_keys(info):
        required += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    for name, feature in info["features"].items():
        if feature["dtype"] != "string":
            required += [f"stats/{name}/{s}" for s in REQUIRED_STATS]
    columns = set().union(*(row.keys() for row in episodes)) if episodes else set()
    missing = [c for c in required if c not in columns]
    if missing:
        problems.append(f"{where}: columns missing: {missing}")
        return
    indices = [row["episode_index"] for row in episodes]
    if indices != list(range(len(episodes))):
        first = next(i for i, e in enumerate(indices) if e != i) if len(indices) == len(episodes) else 0
        problems.append(f"{where}: episode_index is not 0..{len(episodes) - 1} in order "
                        f"(position {first} holds {indices[first] if first < len(indices) else None})")
    if len(episodes) != info["total_episodes"]:
        problems.append(f"{where}: {len(episodes)} episodes, info.json total_episodes is {info['total_episodes']}")
    expected_from = 0
    for row in episodes:
        ep, path = row["episode_index"], root / row["_file"]
        if row["dataset_from_index"] != expected_from:
            problems.append(f"{path}: episode {ep} dataset_from_index {row['dataset_from_index']} should be "
                            f"{expected_from} (the previous episode's dataset_to_index)")
        if row["dataset_to_index"] - row["dataset_from_index"] != row["length"]:
            problems.append(f"{path}: episode {ep} dataset_to_index - dataset_from_index != length {row['length']}")
        expected_from = row["dataset_to_index"]
        unknown = [t for t in row["tasks"] or [] if t not in tasks]
        if unknown:
            problems.append(f"{path}: episode {ep} has tasks {unknown} not in {TASKS_PATH}")
        chunk, file = row["meta/episodes/chunk_index"], row["meta/episodes/file_index"]
        if row["_file"] != f"{EPISODES_DIR}/chunk-{chunk:03d}/file-{file:03d}.parquet":
            problems.append(f"{path}: episode {ep} records meta/episodes chunk {chunk} file {file}")
    total = sum(row["length"] for row in episodes)
    if total != info["total_frames"]:
        problems.append(f"{where}: lengths sum to {total}, info.json total_frames is {info['total_frames']}")


# ====================================================================== data
def expected_arrow_type(feature: dict):
    dtype, shape = feature["dtype"], list(feature["shape"])
    if dtype == "image":
        return "image"
    base = ARROW_DTYPES.get(dtype)
    if base is None:
        return None
    return base if shape == [1] else ("list", base, int(np.prod(shape)))


def type_matches(actual: pa.DataType, expected) -> bool:
    if expected == "image":
        return pa.types.is_struct(actual) and "bytes" in [actual.field(i).name for i in range(actual.num_fields)]
    if isinstance(expected, tuple):
        _, base, size = expected
        if pa.types.is_fixed_size_list(actual):
            return actual.list_size == size and actual.value_type == base
        return pa.types.is_list(actual) and actual.value_type == base
    if expected == pa.string():
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    return actual == expected


def check_data(root: Path, info: dict, episodes: list[dict], problems: list[str]) -> None:
    features = {k: f for k, f in info["features"].items() if f["dtype"] != "video"}
    by_file = defaultdict(list)
    for row in episodes:
        by_file[info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])].append(row)
    on_disk = {p.relative_to(root).as_posix() for p in (root / "data").glob("*/*.parquet")}
    for extra in sorted(on_disk - set(by_file)):
        problems.append(f"{root / extra}: data file referenced by no episode")
    fps, task_strings = info["fps"], read_tasks(root)
    for relative, rows in sorted(by_file.items()):
        path = root / relative
        if not path.is_file():
            problems.append(f"{path}: missing (episodes {[r['episode_index'] for r in rows][:5]} reference it)")
            continue
        schema = pq.read_schema(path)
        names = set(schema.names)
        if names != set(features):
            problems.append(f"{path}: columns {sorted(names)} differ from the non-video features {sorted(features)} "
                            f"(missing {sorted(set(features) - names)}, extra {sorted(names - set(features))})")
            continue
        for name, feature in features.items():
            expected = expected_arrow_type(feature)
            if expected is not None and not type_matches(schema.field(name).type, expected):
                problems.append(f"{path}: column {name!r} has type {schema.field(name).type}, feature is "
                                f"{feature['dtype']} {list(feature['shape'])}")
        table = pq.read_table(path, columns=["episode_index", "index", "frame_index", "timestamp", "task_index"])
        values = {c: column_values(table[c]) for c in table.column_names}
        present = set(np.unique(values["episode_index"]).tolist())
        stray = present - {r["episode_index"] for r in rows}
        if stray:
            problems.append(f"{path}: holds rows of episodes {sorted(stray)[:5]} whose metadata points elsewhere")
        for row in rows:
            check_episode_rows(path, row, values, fps, task_strings, problems)


def check_episode_rows(path: Path, row: dict, values: dict, fps: int, tasks: list[str], problems: list[str]) -> None:
    ep, length = row["episode_index"], row["length"]
    mask = values["episode_index"] == ep
    frame_index = values["frame_index"][mask]
    order = np.argsort(frame_index, kind="stable")
    frame_index = frame_index[order]
    if len(frame_index) != length:
        problems.append(f"{path}: episode {ep} has {len(frame_index)} rows, its length is {length}")
        return
    if not np.array_equal(frame_index, np.arange(length)):
        problems.append(f"{path}: episode {ep} frame_index is not 0..{length - 1}")
    if not np.array_equal(values["index"][mask][order], row["dataset_from_index"] + np.arange(length)):
        problems.append(f"{path}: episode {ep} index is not dataset_from_index {row['dataset_from_index']} + frame_index")
    drift = np.abs(values["timestamp"][mask][order].astype(np.float64) - frame_index / fps)
    if drift.max() >= TOLERANCE_S:
        problems.append(f"{path}: episode {ep} timestamp differs from frame_index / fps by up to {drift.max():.2e} s "
                        f"(tolerance {TOLERANCE_S} s)")
    episode_tasks = set(row["tasks"] or [])
    used = {tasks[i] if 0 <= i < len(tasks) else None for i in np.unique(values["task_index"][mask]).tolist()}
    if not used <= episode_tasks:
        problems.append(f"{path}: episode {ep} task_index values name tasks outside its tasks {sorted(episode_tasks)}")


# ====================================================================== videos
def check_videos(root: Path, info: dict, episodes: list[dict], problems: list[str]) -> None:
    fps = info["fps"]
    for key in video_keys(info):
        feature = info["features"][key]
        height, width = image_size(feature)
        by_file = defaultdict(list)
        for row in episodes:
            by_file[info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                              file_index=row[f"videos/{key}/file_index"])].append(row)
        for relative, rows in sorted(by_file.items()):
            path = root / relative
            if not path.is_file():
                problems.append(f"{path}: missing (episodes {[r['episode_index'] for r in rows][:5]} of {key} reference it)")
                continue
            try:
                times, size = packet_times(path)
            except (av.FFmpegError, VideoError) as exc:
                problems.append(f"{path}: unreadable video ({exc})")
                continue
            if size != (height, width):
                problems.append(f"{path}: frames are {size[0]}x{size[1]}, feature {key} says {height}x{width}")
            for row in rows:
                start, end = row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"]
                inside = int(np.count_nonzero((times >= start - TOLERANCE_S) & (times < end - TOLERANCE_S)))
                if inside != row["length"]:
                    problems.append(f"{path}: episode {row['episode_index']} has {inside} frames in "
                                    f"[{start:.4f}, {end:.4f}) s of {key}, its length is {row['length']}")
                    continue
                queries = start + np.arange(row["length"]) / fps
                after = np.clip(np.searchsorted(times, queries), 0, len(times) - 1)
                before = np.clip(after - 1, 0, len(times) - 1)
                gap = np.minimum(np.abs(times[after] - queries), np.abs(times[before] - queries))
                if gap.max() >= TOLERANCE_S:
                    problems.append(f"{path}: episode {row['episode_index']} frame {int(gap.argmax())} of {key} has no "
                                    f"video frame within {TOLERANCE_S} s of {queries[gap.argmax()]:.4f} s")


def image_size(feature: dict) -> tuple[int, int]:
    """(H, W) of a visual feature: shape (H, W, C), or (C, H, W) when its names start with the channel."""
    names = feature.get("names") or [None]
    shape = list(feature["shape"])
    return tuple(shape[1:3]) if names[0] in ("channel", "channels") else tuple(shape[:2])


def packet_times(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Sorted presentation times (s) of the video's frames, from packets (no decoding), and (H, W)."""
    with open_video(path) as (container, stream):
        times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None and p.size]
        return np.sort(np.asarray(times)), (stream.height, stream.width)


# ====================================================================== stats
def check_stats(root: Path, info: dict, problems: list[str]) -> None:
    path = root / STATS_PATH
    try:
        stats = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: cannot be read ({exc})")
        return
    for name, feature in info["features"].items():
        if feature["dtype"] == "string":
            continue
        if name not in stats:
            problems.append(f"{path}: no statistics for feature {name!r}")
            continue
        for stat in REQUIRED_STATS:
            if stat not in stats[name]:
                problems.append(f"{path}: {name}/{stat} is missing")
                continue
            shape = np.asarray(stats[name][stat]).shape
            if stat == "count":
                expected = (1,)
            elif feature["dtype"] in ("video", "image"):
                expected = (3, 1, 1)
            else:
                expected = tuple(feature["shape"])
            if shape != expected:
                problems.append(f"{path}: {name}/{stat} has shape {shape}, expected {expected}")
