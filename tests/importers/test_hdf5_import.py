"""uwm-import hdf5: robomimic / LIBERO demonstration files (written by importer_fixtures with h5py
in the robomimic layout LIBERO uses) -> one multitask uwm dataset.

HDF5 stores raw arrays, so frames must equal the stored ones flipped upright exactly, and actions
the documented LIBERO mapping (config/import/libero.yaml) of the stored actions.
"""
import json

import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from importer_fixtures import LIBERO_FILES
from uwm_core.data import open_dataset
from uwm_core.importers import HDF5Source, Selection, load_mapping, run_import
from uwm_core.importers.cli import import_main
from uwm_core.importers.episodes import SourceError

TASKS = ("turn on the stove and put the moka pot on it", "put both the alphabet soup and the tomato sauce in the basket")


def libero_actions(stored: np.ndarray) -> np.ndarray:
    """libero.yaml: OSC_POSE command -> metres, radians (rotation vector), gripper 0 open .. 1 closed."""
    a = stored.astype(np.float64)
    return np.concatenate([a[:, :3] * 0.05, a[:, 3:6] * 0.5, (a[:, 6:] + 1) / 2], axis=1).astype(np.float32)


def test_libero_files_merge_into_one_multitask_dataset(libero, tmp_path, capsys):
    folder, stored = libero
    import_main(["hdf5", str(folder), "--out", str(tmp_path / "ds"), "--mapping", "libero"])
    assert "imported 5 episode(s)" in capsys.readouterr().out
    ds = open_dataset(tmp_path / "ds")
    assert (ds.num_episodes, ds.cameras, ds.fps, ds.action_dim) == (5, ["agentview", "wrist"], 20.0, 7)
    order = [(LIBERO_FILES[0], f"demo_{d}") for d in range(3)] + [(LIBERO_FILES[1], f"demo_{d}") for d in range(2)]
    for i, (name, demo) in enumerate(order):
        episode, source = ds.episode(i), stored[(name, demo)]
        np.testing.assert_array_equal(episode.frames["agentview"], source["agentview"][:, ::-1])  # upright
        np.testing.assert_array_equal(episode.frames["wrist"], source["wrist"][:, ::-1])
        np.testing.assert_array_equal(episode.actions, libero_actions(source["actions"]))
        assert episode.task == TASKS[LIBERO_FILES.index(name)]
        assert (episode.metadata["source"], episode.metadata["source_episode"]) == (str((folder / name).resolve()), demo)
        assert episode.metadata["num_samples"] == len(source["actions"])
    assert set(np.unique(ds.actions(0)[:, 6])) <= {0.0, 1.0}


def test_resampled_actions_compose_the_source_steps(libero, tmp_path):
    folder, stored = libero
    source = HDF5Source.open([folder / LIBERO_FILES[1]], load_mapping("libero"), fps=10)
    run_import(source, tmp_path / "ds", Selection(indices=[1]), progress=False)
    episode = open_dataset(tmp_path / "ds").episode(0)
    raw = stored[(LIBERO_FILES[1], "demo_1")]
    T = len(raw["actions"])  # 12 steps at 20 Hz -> 6 at 10 Hz, frames 0, 2, 4, ...
    np.testing.assert_array_equal(episode.frames["wrist"], raw["wrist"][::2, ::-1])
    a = raw["actions"].astype(np.float64)
    for k in range(T // 2):
        first, second = a[2 * k], a[2 * k + 1]
        rotation = Rotation.from_rotvec(second[3:6] * 0.5) * Rotation.from_rotvec(first[3:6] * 0.5)
        expected = [*(first[:3] + second[:3]) * 0.05, *rotation.as_rotvec(), (second[6] + 1) / 2]
        np.testing.assert_allclose(episode.actions[k], np.float32(expected), rtol=0, atol=1e-7)


def test_selection_and_resume_across_files(libero, tmp_path):
    folder, _ = libero
    mapping = load_mapping("libero")
    source = HDF5Source.open([folder], mapping)
    keys = lambda s: [(e.metadata["file"], e.key) for e in s.apply(source.episodes(set()))]  # noqa: E731
    assert keys(Selection(task="stove")) == [(LIBERO_FILES[0], f"demo_{d}") for d in range(3)]
    assert keys(Selection(indices=[0, 4])) == [(LIBERO_FILES[0], "demo_0"), (LIBERO_FILES[1], "demo_1")]
    assert keys(Selection(where={"file": [LIBERO_FILES[1]], "demo": ["demo_0"]})) == [(LIBERO_FILES[1], "demo_0")]
    # one file first, then the folder: the second import adds only what is missing
    first = run_import(HDF5Source.open([folder / LIBERO_FILES[0]], mapping), tmp_path / "ds", Selection(), progress=False)
    second = run_import(source, tmp_path / "ds", Selection(), progress=False)
    assert (first.imported, second.imported, second.already_present) == (3, 2, 3)
    ds = open_dataset(tmp_path / "ds")
    identities = [(ds.metadata(i)["source"], ds.metadata(i)["source_episode"]) for i in range(ds.num_episodes)]
    assert len(identities) == len(set(identities)) == 5


def test_robomimic_task_from_env_args(tmp_path):
    path = tmp_path / "image.hdf5"
    rng = np.random.default_rng(2)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "PickPlaceCan", "env_kwargs": {"control_freq": 20}})
        images = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
        data.create_dataset("demo_0/obs/agentview_image", data=images)
        data.create_dataset("demo_0/obs/robot0_eye_in_hand_image", data=images)
        data.create_dataset("demo_0/actions", data=rng.uniform(-1, 1, (5, 7)))
    run_import(HDF5Source.open([path], load_mapping("robomimic")), tmp_path / "ds", Selection(), progress=False)
    episode = open_dataset(tmp_path / "ds").episode(0)
    assert episode.task == "PickPlaceCan"
    np.testing.assert_array_equal(episode.frames["agentview"], images[:, ::-1])


def test_file_without_data_group(tmp_path):
    path = tmp_path / "KITCHEN_SCENE1_open_the_drawer_demo.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("mask/train", data=np.array([b"demo_0"]))
    with pytest.raises(SourceError) as error:
        run_import(HDF5Source.open([path], load_mapping("libero")), tmp_path / "ds", Selection(), progress=False)
    assert str(error.value) == (f"{path}: no 'data' group, so not a robomimic/LIBERO demonstration file "
                                "(top-level keys: ['mask'])")


def test_missing_camera_key(libero, tmp_path):
    folder, _ = libero
    source = HDF5Source.open([folder / LIBERO_FILES[1]], load_mapping("libero"))
    source.mapping.cameras = {"agentview": "agentview_rgb", "wrist": "robot0_eye_in_hand_image"}
    with pytest.raises(SourceError) as error:
        run_import(source, tmp_path / "ds", Selection(), progress=False)
    message = str(error.value)
    assert message.startswith(f"{folder / LIBERO_FILES[1]}: data/demo_0/obs has no camera 'robot0_eye_in_hand_image'")
    assert "['agentview_rgb', 'ee_pos', 'eye_in_hand_rgb']" in message
