"""The LeRobot v3.0 dataset layout: its file names and conventions, and reading its metadata files.

The official ``lerobot`` package cannot be installed beside this workspace (it pins older torch,
diffusers, huggingface-hub and av), so the published v3.0 layout (lerobot 0.4.x,
``lerobot/datasets/utils.py``, ``lerobot_dataset.py``) is read and written here with pyarrow and
PyAV: read by ``uwm_core.importers.lerobot`` (``uwm-import lerobot``), checked by
``uwm_core.importers.lerobot_checks`` and written by ``uwm_core.exporters.lerobot``
(``uwm-export lerobot``)::

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
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .episodes import SourceError

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
TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"  # LeRobot's proprioception feature (Diffusion Policy needs it)
UWM_METADATA_COLUMN = "uwm_metadata"  # extra episodes column: the episode's uwm metadata as JSON
STRUCTURAL_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index")
# The v2.1 -> v3.0 conversion of a local dataset: lerobot 0.4.x takes the parent directory as --root,
# lerobot >= 0.5.1 moved the script and takes the dataset directory itself.
CONVERT_COMMANDS = ("lerobot 0.4.x: python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id={name} "
                    "--root={parent} --push-to-hub=false; lerobot >= 0.5.1: python -m "
                    "lerobot.scripts.convert_dataset_v21_to_v30 --repo-id={name} --root={root} --push-to-hub=false")
CONVERT_HUB_COMMAND = "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id={repo_id}"  # 0.4.x


class LeRobotFormatError(SourceError):
    """A directory that is not a loadable LeRobot v3.0 dataset; names the file and key."""


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
