"""Small source datasets for the importer tests, written here (independently of uwm's exporter).

* LeRobot v3.0: written with pyarrow and PyAV following the layout of lerobot 0.4.x
  (``lerobot/datasets/utils.py``: meta/info.json, meta/tasks.parquet written as pandas does,
  meta/episodes/chunk-000/file-000.parquet, data/chunk-XXX/file-YYY.parquet holding several
  episodes, videos/<key>/chunk-XXX/file-YYY.mp4 holding several episodes back to back) with
  DROID's feature names (``lerobot/examples/port_datasets/port_droid.py``). The official
  ``lerobot`` package cannot be installed beside this workspace (it pins torch<2.11,
  huggingface-hub<0.36, av<16), so it cannot write them.
* robomimic / LIBERO HDF5: written with h5py in the robomimic layout LIBERO uses
  (``data/demo_N/obs/<camera>``, ``data/demo_N/actions``, task in the file name).
"""
from __future__ import annotations

import fractions
import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.spatial.transform import Rotation

DROID_CAMERAS = ("observation.images.exterior_1_left", "observation.images.exterior_2_left",
                 "observation.images.wrist_left")
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def scene(index: int, camera: int, height: int, width: int) -> np.ndarray:
    """A smooth frame whose content moves with the frame index (codec friendly, never repeated)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 4 + index * 5) % 256, (y * 4 + camera * 60) % 256,
                      ((x + y) * 2 + index * 3) % 256], axis=-1).astype(np.uint8)
    top, left = (index * 3) % (height - 8), (index * 5) % (width - 8)
    image[top:top + 8, left:left + 8] = (255, 255 - camera * 80, 0)
    return image


@dataclass
class DroidLike:
    """Ground truth of a written DROID-like LeRobot dataset, per episode."""

    root: Path
    fps: int
    lengths: list[int]
    tasks: list[str]
    buildings: list[str]
    state_pose: list[np.ndarray] = field(default_factory=list)  # (T, 6) measured [xyz, euler xyz]
    target_pose: list[np.ndarray] = field(default_factory=list)  # (T, 6) commanded
    velocity: list[np.ndarray] = field(default_factory=list)  # (T, 6)
    gripper: list[np.ndarray] = field(default_factory=list)  # (T,)


def write_droid_like(root: Path, lengths=(23, 31, 17, 26), fps: int = 15, size=(48, 64), episodes_per_file: int = 2,
                     codec: str = "libx264", video_shortfall: int = 0, seed: int = 0) -> DroidLike:
    """A LeRobot v3.0 dataset with DROID's features; ``video_shortfall`` frames of the last
    episode are left out of its videos (the parquet still lists them)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    tasks_by_episode = ["put the marker in the cup", "open the drawer", "put the marker in the cup", "wipe the table"]
    buildings_by_episode = ["AUTOLab", "ILIAD", "AUTOLab", "REAL"]
    truth = DroidLike(root, fps, list(lengths), [tasks_by_episode[i % 4] for i in range(len(lengths))],
                      [buildings_by_episode[i % 4] for i in range(len(lengths))])
    task_list = list(dict.fromkeys(truth.tasks))
    H, W = size
    features = {
        **{key: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"],
                 "info": {"video.height": H, "video.width": W, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                          "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}}
           for key in DROID_CAMERAS},
        "observation.state.cartesian_position": {"dtype": "float32", "shape": [6], "names": None},
        "action.cartesian_position": {"dtype": "float32", "shape": [6], "names": None},
        "action.cartesian_velocity": {"dtype": "float32", "shape": [6], "names": None},
        "action.gripper_position": {"dtype": "float32", "shape": [1], "names": None},
        "language_instruction": {"dtype": "string", "shape": [1], "names": None},
        **{key: {"dtype": "string", "shape": [1], "names": None} for key in ("task_category", "building",
                                                                              "collector_id", "date")},
        "is_episode_successful": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    total = sum(lengths)
    info = {"codebase_version": "v3.0", "robot_type": "Franka", "total_episodes": len(lengths), "total_frames": total,
            "total_tasks": len(task_list), "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": fps, "splits": {"train": f"0:{len(lengths)}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": features}
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    write_tasks(root / "meta/tasks.parquet", task_list)

    rows, start, containers = [], 0, {}
    for ep, T in enumerate(lengths):
        file = ep // episodes_per_file
        # poses: a smooth random walk; commanded target slightly ahead of the measured pose
        xyz = np.cumsum(rng.normal(0, 0.004, (T + 1, 3)), axis=0) + [0.5, 0.0, 0.3]
        wobble = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.02, (T + 1, 3)), axis=0))
        rot = Rotation.from_euler("xyz", [np.pi, 0.1, 0.2]) * wobble
        euler = rot.as_euler("xyz")
        state = np.concatenate([xyz[:-1], euler[:-1]], axis=1).astype(np.float32)
        target = np.concatenate([xyz[1:], euler[1:]], axis=1).astype(np.float32)
        velocity = rng.uniform(-1.3, 1.3, (T, 6)).astype(np.float32)
        gripper = np.clip(np.linspace(-0.2, 1.2, T) + rng.normal(0, 0.05, T), 0, 1).astype(np.float32)
        truth.state_pose.append(state)
        truth.target_pose.append(target)
        truth.velocity.append(velocity)
        truth.gripper.append(gripper)
        frame_index = np.arange(T)
        table = pa.table({
            "observation.state.cartesian_position": fixed_list(state),
            "action.cartesian_position": fixed_list(target),
            "action.cartesian_velocity": fixed_list(velocity),
            "action.gripper_position": pa.array(gripper, pa.float32()),  # shape [1]: a scalar column
            "language_instruction": [truth.tasks[ep]] * T,
            "task_category": [truth.buildings[ep]] * T,  # as port_droid.py fills it
            "building": [truth.buildings[ep]] * T,
            "collector_id": [f"collector{ep % 2}"] * T,
            "date": ["2023-04-0" + str(1 + ep)] * T,
            "is_episode_successful": pa.array([ep != 1] * T, pa.bool_()),
            "timestamp": pa.array((frame_index / fps).astype(np.float32)),
            "frame_index": pa.array(frame_index, pa.int64()),
            "episode_index": pa.array(np.full(T, ep), pa.int64()),
            "index": pa.array(start + frame_index, pa.int64()),
            "task_index": pa.array(np.full(T, task_list.index(truth.tasks[ep])), pa.int64()),
        })
        append_parquet(root / DATA_PATH.format(chunk_index=0, file_index=file), table)
        row = {"episode_index": ep, "tasks": [truth.tasks[ep]], "length": T, "data/chunk_index": 0,
               "data/file_index": file, "dataset_from_index": start, "dataset_to_index": start + T,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        shown = T - (video_shortfall if ep == len(lengths) - 1 else 0)
        for cam, key in enumerate(DROID_CAMERAS):
            path = root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=file)
            if (key, file) not in containers:
                containers[(key, file)] = open_video(path, codec, fps, W, H)
            container, stream, counter = containers[(key, file)]
            for i in range(shown):
                frame = av.VideoFrame.from_ndarray(scene(start + i, cam, H, W), format="rgb24")
                frame.pts, frame.time_base = counter + i, fractions.Fraction(1, fps)
                container.mux(stream.encode(frame))
            row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"] = 0, file
            row[f"videos/{key}/from_timestamp"] = counter / fps
            row[f"videos/{key}/to_timestamp"] = (counter + T) / fps
            containers[(key, file)] = (container, stream, counter + shown)
        rows.append(row)
        start += T
    for container, stream, _ in containers.values():
        container.mux(stream.encode())
        container.close()
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return truth


def fixed_list(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1).astype(np.float32)), values.shape[1])


def append_parquet(path: Path, table: pa.Table) -> None:
    """Several episodes per data file, as LeRobot's ParquetWriter leaves them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        table = pa.concat_tables([pq.read_table(path), table])
    pq.write_table(table, path)


def open_video(path: Path, codec: str, fps: int, width: int, height: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=fps, options={"g": "2", "crf": "23"})
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return container, stream, 0


def write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as ``pandas.DataFrame({"task_index": ...}, index=tasks).to_parquet()`` writes it."""
    metadata = {"index_columns": ["__index_level_0__"], "column_indexes": [],
                "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                             "numpy_type": "int64", "metadata": None},
                            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                             "numpy_type": "object", "metadata": None}],
                "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={b"pandas": json.dumps(metadata).encode()})
    pq.write_table(pa.table({"task_index": np.arange(len(tasks)), "__index_level_0__": tasks}, schema=schema), path)


def decode_all(path: Path) -> np.ndarray:
    """Every frame of a video, decoded start to end (the reference for pixel-exact comparisons)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ====================================================================== HDF5
LIBERO_FILES = ("KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it_demo.hdf5",
                "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket_demo.hdf5")


def write_libero_like(folder: Path, demos_per_file=(3, 2), lengths=(9, 14, 11, 8, 12), size=(24, 32), seed: int = 0) -> dict:
    """LIBERO-like files; returns {(file name, demo): {"agentview": ..., "wrist": ..., "actions": ...}}
    holding the arrays as stored (images upside down, as LIBERO stores them)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stored, k = {}, 0
    for name, count in zip(LIBERO_FILES, demos_per_file):
        with h5py.File(folder / name, "w") as f:
            data = f.create_group("data")
            data.attrs["problem_info"] = json.dumps({"language_instruction": "unused by the importer"})
            for d in range(count):
                T = lengths[k]
                agentview = rng.integers(0, 256, (T, *size, 3), dtype=np.uint8)
                wrist = rng.integers(0, 256, (T, *size, 3), dtype=np.uint8)
                actions = np.concatenate([rng.uniform(-1, 1, (T, 6)), rng.choice([-1.0, 1.0], (T, 1))], axis=1)
                demo = data.create_group(f"demo_{d}")
                demo.attrs["num_samples"] = T
                demo.create_dataset("obs/agentview_rgb", data=agentview)
                demo.create_dataset("obs/eye_in_hand_rgb", data=wrist)
                demo.create_dataset("obs/ee_pos", data=rng.normal(size=(T, 3)))
                demo.create_dataset("actions", data=actions)
                stored[(name, f"demo_{d}")] = {"agentview": agentview, "wrist": wrist, "actions": actions}
                k += 1
    return stored
