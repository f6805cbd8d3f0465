"""uwm-import lerobot: LeRobot v3.0 datasets (written by importer_fixtures with pyarrow + PyAV in
the published lerobot 0.4.x layout, DROID's feature names) -> uwm datasets.

Frames are compared pixel-exactly with a start-to-end PyAV decode of the same mp4 (the importer
seeks into files that hold several episodes); actions with the documented mappings
(config/import/droid.yaml, droid_velocity.yaml) computed here from the source columns.
"""
import functools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.spatial.transform import Rotation

from importer_fixtures import DROID_CAMERAS, VIDEO_PATH, decode_all, write_droid_like, write_tasks
from uwm_core.data import open_dataset
from uwm_core.importers import LeRobotFormatError, LeRobotSource, Selection, load_mapping, run_import
from uwm_core.importers.cli import import_main
from uwm_core.importers.episodes import SourceError

LEFT, RIGHT, WRIST = DROID_CAMERAS
UWM_IMPORT = str(Path(sys.executable).parent / "uwm-import")  # the console script of this venv


@functools.lru_cache(maxsize=None)
def decoded(path):
    return decode_all(path)


def source_frames(truth, episode: int, key: str) -> np.ndarray:
    """The episode's frames of camera ``key``, cut out of a full decode of its mp4."""
    row = pq.read_table(truth.root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()[episode]
    path = truth.root / VIDEO_PATH.format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                          file_index=row[f"videos/{key}/file_index"])
    first = round(row[f"videos/{key}/from_timestamp"] * truth.fps)
    return decoded(str(path))[first:first + row["length"]]


def resampled(length: int, ratio: float):
    starts = [s for s in (math.floor(k * ratio + 1e-9) for k in range(length)) if s < length]
    return np.array(starts), np.array(starts[1:] + [length])


def target_pose_actions(truth, episode: int, starts, ends) -> np.ndarray:
    """droid.yaml: change of the commanded pose over each step (from the measured pose at first)."""
    state = truth.state_pose[episode].astype(np.float64)
    target = truth.target_pose[episode].astype(np.float64)
    pose = lambda i: state[0] if i < 0 else target[i]  # noqa: E731
    rows = []
    for s, e in zip(starts, ends):
        p0, p1 = pose(s - 1), pose(e - 1)
        rotation = Rotation.from_euler("xyz", p1[3:]) * Rotation.from_euler("xyz", p0[3:]).inv()
        rows.append([*(p1[:3] - p0[:3]), *rotation.as_rotvec(), truth.gripper[episode][e - 1]])
    return np.array(rows, dtype=np.float32)


def import_droid(truth, out, mapping="droid", selection=None, **kwargs):
    source = LeRobotSource.open(str(truth.root), load_mapping(mapping), **kwargs)
    return run_import(source, out, selection or Selection(), progress=False)


def test_droid_at_source_rate_frames_and_actions_exact(droid, tmp_path):
    report = import_droid(droid, tmp_path / "ds", fps=15)
    ds = open_dataset(tmp_path / "ds")
    assert (report.imported, ds.num_episodes, ds.fps, ds.cameras) == (4, 4, 15.0, ["left", "right", "wrist"])
    for ep, T in enumerate(droid.lengths):
        episode = ds.episode(ep)
        for ours, key in zip(("left", "right", "wrist"), DROID_CAMERAS):
            np.testing.assert_array_equal(episode.frames[ours], source_frames(droid, ep, key))
        steps = np.arange(T)
        np.testing.assert_allclose(episode.actions, target_pose_actions(droid, ep, steps, steps + 1), rtol=0, atol=2e-7)
        assert episode.task == droid.tasks[ep]
        assert episode.metadata["building"] == droid.buildings[ep]
        assert (episode.metadata["source"], episode.metadata["source_episode"]) == (str(droid.root.resolve()), ep)
        assert episode.metadata["source_fps"] == 15.0


def test_droid_resampled_to_10hz(droid, tmp_path):
    import_droid(droid, tmp_path / "ds")  # droid.yaml: fps 10
    ds = open_dataset(tmp_path / "ds")
    assert ds.fps == 10.0
    for ep, T in enumerate(droid.lengths):
        starts, ends = resampled(T, 1.5)
        episode = ds.episode(ep)
        assert episode.length == len(starts) == math.ceil(T / 1.5)
        np.testing.assert_array_equal(episode.frames["wrist"], source_frames(droid, ep, WRIST)[starts])
        np.testing.assert_allclose(episode.actions, target_pose_actions(droid, ep, starts, ends), rtol=0, atol=2e-7)


def test_droid_velocity_mapping(droid, tmp_path):
    import_droid(droid, tmp_path / "ds", mapping="droid_velocity", fps=15, selection=Selection(indices=[1]))
    actions = open_dataset(tmp_path / "ds").actions(0)
    velocity = droid.velocity[1].astype(np.float64)
    expected = []
    for part, scale in ((velocity[:, :3], 0.075), (velocity[:, 3:], 0.15)):
        norm = np.linalg.norm(part, axis=1, keepdims=True)
        expected.append(np.where(norm > 1, part / norm, part) * scale)  # DROID: longer than 1 -> length 1
    expected = np.concatenate([*expected, droid.gripper[1][:, None]], axis=1).astype(np.float32)
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-8)
    assert np.abs(velocity).max() > 1  # the clipping was exercised


def test_selection_by_index_task_metadata_and_location_sample(droid):
    source = LeRobotSource.open(str(droid.root), load_mapping("droid"))
    episodes = source.episodes({"building"})
    keys = lambda s: [e.key for e in s.apply(episodes)]  # noqa: E731
    assert keys(Selection(indices=[1, 2])) == [1, 2]
    assert keys(Selection(task="DRAWER|wipe")) == [1, 3]
    assert keys(Selection(where={"building": ["AUTOLab"]})) == [0, 2]
    assert keys(Selection(where={"building": ["AUTOLab", "REAL"]}, task="marker")) == [0, 2]
    first = keys(Selection(sample=2, seed=3))
    assert len(first) == 2 and first == keys(Selection(sample=2, seed=3))  # seeded: reproducible
    for seed in range(5):  # by location: 3 of 3 buildings, whatever the seed
        picked = Selection(sample=3, sample_by="building", seed=seed).apply(episodes)
        assert sorted(e.metadata["building"] for e in picked) == ["AUTOLab", "ILIAD", "REAL"]
    with pytest.raises(SourceError, match="--where floor: no episode has this metadata key"):
        Selection(where={"floor": ["1"]}).apply(episodes)


def test_cli_no_actions_camera_choice_and_exclude(droid, tmp_path, capsys):
    robot, video = tmp_path / "robot", tmp_path / "video"
    common = ["lerobot", str(droid.root), "--mapping", "droid", "--fps", "15"]
    import_main(common + ["--out", str(robot), "--sample", "2", "--sample-by", "building"])
    assert "imported 2 episode(s)" in capsys.readouterr().out
    # the console script itself, once (a separate process pays the torch import: ~10 s here)
    done = subprocess.run([UWM_IMPORT, *common, "--out", str(video), "--no-actions", "--exclude", str(robot),
                           "--camera", "front=" + RIGHT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    robot_ds, video_ds = open_dataset(robot), open_dataset(video)
    taken = {robot_ds.metadata(i)["source_episode"] for i in range(2)}
    rest = [video_ds.metadata(i)["source_episode"] for i in range(video_ds.num_episodes)]
    assert sorted(rest) == sorted({0, 1, 2, 3} - taken)  # the cotraining videos are the other trajectories
    assert video_ds.cameras == ["front"] and not video_ds.has_actions.any() and video_ds.action_stats is None
    np.testing.assert_array_equal(video_ds.episode(0).frames["front"], source_frames(droid, rest[0], RIGHT))


class Interrupting:
    """The real source, with Ctrl-C arriving while the third episode is being read."""

    def __init__(self, source, after: int):
        self.source, self.after, self.loaded = source, after, 0
        self.name, self.cameras, self.fps = source.name, source.cameras, source.fps

    def episodes(self, keys):
        return self.source.episodes(keys)

    def load(self, episode):
        if self.loaded == self.after:
            raise KeyboardInterrupt
        self.loaded += 1
        return self.source.load(episode)


def test_interrupted_import_resumes_without_duplicates(droid, tmp_path):
    source = LeRobotSource.open(str(droid.root), load_mapping("droid"))
    with pytest.raises(KeyboardInterrupt):
        run_import(Interrupting(source, after=2), tmp_path / "ds", Selection(), progress=False)
    assert open_dataset(tmp_path / "ds").num_episodes == 2
    report = run_import(source, tmp_path / "ds", Selection(), progress=False)
    assert (report.imported, report.already_present) == (2, 2)
    again = run_import(source, tmp_path / "ds", Selection(), progress=False)
    assert (again.imported, again.already_present) == (0, 4)
    ds = open_dataset(tmp_path / "ds")
    assert [ds.metadata(i)["source_episode"] for i in range(ds.num_episodes)] == [0, 1, 2, 3]
    np.testing.assert_array_equal(ds.episode(3).frames["left"], source_frames(droid, 3, LEFT)[resampled(26, 1.5)[0]])


def test_image_features_and_flip(tmp_path):
    """LeRobot ``image`` features (PNG bytes in the parquet, as HuggingFaceVLA/libero) with
    libero_lerobot.yaml: horizontal flip, LIBERO's OSC action scaling."""
    root = tmp_path / "libero_hub"
    rng = np.random.default_rng(1)
    T, images = 6, rng.integers(0, 256, (6, 2, 16, 20, 3), dtype=np.uint8)
    actions = np.concatenate([rng.uniform(-1, 1, (T, 6)), [[-1.0], [1.0]] * 3], axis=1).astype(np.float32)
    png = lambda im: {"bytes": cv2.imencode(".png", im[..., ::-1])[1].tobytes(), "path": None}  # noqa: E731
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    features = {"observation.images.image": {"dtype": "image", "shape": [16, 20, 3], "names": None},
                "observation.images.image2": {"dtype": "image", "shape": [16, 20, 3], "names": None},
                "action": {"dtype": "float32", "shape": [7], "names": None},
                **{k: {"dtype": d, "shape": [1], "names": None} for k, d in
                   (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                    ("index", "int64"), ("task_index", "int64"))}}
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 10, "features": features,
                                                    "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                                                    "video_path": None}))
    write_tasks(root / "meta/tasks.parquet", ["put both moka pots on the stove"])
    pq.write_table(pa.Table.from_pylist([{"episode_index": 0, "tasks": ["put both moka pots on the stove"], "length": T,
                                          "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": 0,
                                          "dataset_to_index": T}]), root / "meta/episodes/chunk-000/file-000.parquet")
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table({
        "observation.images.image": [png(im) for im in images[:, 0]],
        "observation.images.image2": [png(im) for im in images[:, 1]],
        "action": pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), 7),
        "timestamp": pa.array(np.arange(T) / 10, pa.float32()), "frame_index": np.arange(T),
        "episode_index": np.zeros(T, np.int64), "index": np.arange(T), "task_index": np.zeros(T, np.int64)}),
        root / "data/chunk-000/file-000.parquet")
    source = LeRobotSource.open(str(root), load_mapping("libero_lerobot"))
    run_import(source, tmp_path / "ds", Selection(), progress=False)
    episode = open_dataset(tmp_path / "ds").episode(0)
    np.testing.assert_array_equal(episode.frames["agentview"], images[:, 0, :, ::-1])
    np.testing.assert_array_equal(episode.frames["wrist"], images[:, 1, :, ::-1])
    a = actions.astype(np.float64)
    expected = np.concatenate([a[:, :3] * 0.05, a[:, 3:6] * 0.5, (a[:, 6:] + 1) / 2], axis=1).astype(np.float32)
    np.testing.assert_array_equal(episode.actions, expected)
    assert episode.task == "put both moka pots on the stove"


# ====================================================================== bad inputs
def test_v21_dataset_names_the_conversion(tmp_path, capsys):
    root = tmp_path / "old_droid"
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 15, "features": {}}))
    with pytest.raises(SystemExit) as exit_status:
        import_main(["lerobot", str(root), "--out", str(tmp_path / "ds"), "--mapping", "droid"])
    assert exit_status.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith(f"uwm-import: error: {root / 'meta/info.json'}: codebase_version is 'v2.1'")
    assert (f"lerobot 0.4.x: python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=old_droid "
            f"--root={tmp_path.resolve()} --push-to-hub=false") in message
    assert (f"lerobot >= 0.5.1: python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=old_droid "
            f"--root={root.resolve()} --push-to-hub=false") in message
    assert not (tmp_path / "ds").exists()


def test_missing_camera_key_names_file_and_key(droid):
    with pytest.raises(LeRobotFormatError) as error:
        LeRobotSource.open(str(droid.root), load_mapping("droid"), cameras={"left": "observation.images.exterior_3_left"})
    message = str(error.value)
    assert str(droid.root / "meta/info.json") in message and "'observation.images.exterior_3_left'" in message
    assert LEFT in message  # lists the cameras there are


def test_video_shorter_than_parquet(tmp_path):
    truth = write_droid_like(tmp_path / "short", lengths=(12, 10), video_shortfall=3)
    source = LeRobotSource.open(str(truth.root), load_mapping("droid"), fps=15)
    with pytest.raises(LeRobotFormatError) as error:
        run_import(source, tmp_path / "ds", Selection(), progress=False)
    message = str(error.value)
    video = truth.root / VIDEO_PATH.format(video_key=LEFT, chunk_index=0, file_index=0)
    assert str(video) in message and f"camera {LEFT}" in message and "episode 1" in message
    assert "shorter than its parquet says" in message and "frame 7 of 10" in message
    assert open_dataset(tmp_path / "ds").num_episodes == 1  # the complete episode before it is kept


def test_hub_repo_id_from_the_hub_cache(droid, tmp_path):
    """A repo id goes through huggingface_hub.snapshot_download; offline it resolves to the local
    hub cache (a real uwm-import process with HF_HUB_CACHE holding the dataset as a snapshot)."""
    repo = tmp_path / "hub/datasets--uwm-tests--droid_like"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text(commit)
    shutil.copytree(droid.root, repo / "snapshots" / commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([UWM_IMPORT, "lerobot", "uwm-tests/droid_like", "--out", str(tmp_path / "ds"), "--mapping",
                           "droid", "--episodes", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    episode = open_dataset(tmp_path / "ds").episode(0)
    assert (episode.metadata["source"], episode.metadata["source_episode"]) == ("uwm-tests/droid_like", 2)
    np.testing.assert_array_equal(episode.frames["right"], source_frames(droid, 2, RIGHT)[resampled(17, 1.5)[0]])


def test_hub_repo_id_without_network_is_a_clear_error():
    with pytest.raises(LeRobotFormatError) as error:
        LeRobotSource.open("uwm-tests/not-a-cached-dataset", load_mapping("droid"))
    message = str(error.value)
    assert message.startswith("uwm-tests/not-a-cached-dataset: cannot fetch meta/**") and "HF_HUB_OFFLINE" in message


def test_action_mapping_needs_its_columns(droid, tmp_path):
    mapping = tmp_path / "bad.yaml"
    mapping.write_text("format: lerobot\ncameras: {left: " + LEFT + "}\nactions:\n  kind: delta\n"
                       "  translation: action.ee_delta[0:3]\n  rotation: action.ee_delta[3:6]\n"
                       "  gripper: action.gripper_position\n")
    with pytest.raises(LeRobotFormatError, match=r"meta/info.json: no feature 'action.ee_delta', which .*bad.yaml uses"):
        LeRobotSource.open(str(droid.root), load_mapping(mapping))
    with pytest.raises(LeRobotFormatError, match="action features are not in the uwm convention.*--mapping"):
        LeRobotSource.open(str(droid.root), None)
