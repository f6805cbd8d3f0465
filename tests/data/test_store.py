"""The episodic Zarr store: round trip, append, atomic commit under SIGKILL, all-or-nothing updates, validation."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from uwm_core.data import DatasetBusyError, DatasetError, DatasetUpdate, DatasetWriter, open_dataset

CAMERAS = ["left", "right", "wrist"]
SHAPES = {"left": (18, 32), "right": (18, 32), "wrist": (24, 24)}  # cameras may differ in size


def episodes(rng, random_frames):
    """Three episodes: with actions, action-free, with actions (one longer than a shard)."""
    out = []
    for length, labelled in ((5, True), (3, False), (70, True)):
        actions = rng.normal(size=(length, 7)).astype(np.float32) if labelled else None
        if actions is not None:
            actions[:, 6] = rng.integers(0, 2, length)
        out.append(dict(frames=random_frames(rng, length, SHAPES), actions=actions,
                        task=f"task {length}", metadata={"source": f"bag{length}.mcap", "n": length}))
    return out


def assert_same(ds, i, written):
    ep = ds.episode(i)
    assert sorted(ep.frames) == sorted(CAMERAS)
    for cam in CAMERAS:
        assert ep.frames[cam].dtype == np.uint8
        assert np.array_equal(ep.frames[cam], written["frames"][cam])
    if written["actions"] is None:
        assert ep.actions is None
    else:
        assert ep.actions.dtype == np.float32
        assert ep.actions.tobytes() == written["actions"].tobytes()  # bit-identical
    assert ep.task == written["task"] and ep.metadata == written["metadata"]


def test_round_trip_is_bit_identical_and_appendable(tmp_path, random_frames):
    rng = np.random.default_rng(0)
    written = episodes(rng, random_frames)
    path = tmp_path / "demos"
    with DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=7) as w:
        assert [w.add_episode(**e) for e in written[:2]] == [0, 1]
    with DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=7) as w:  # append in a new session
        assert w.add_episode(**written[2]) == 2

    ds = open_dataset(path)
    assert (ds.num_episodes, ds.cameras, ds.fps, ds.action_dim) == (3, CAMERAS, 10, 7)
    assert ds.absolute_action_dims == (6,)  # the gripper of [dx, dy, dz, rx, ry, rz, g]
    assert ds.episode_lengths.tolist() == [5, 3, 70]
    assert ds.has_actions.tolist() == [True, False, True]
    for i, e in enumerate(written):
        assert_same(ds, i, e)
    # Partial reads in any order with repeats (what the sampler does).
    assert np.array_equal(ds.frames(2, "wrist", [66, 3, 3, 4]), written[2]["frames"]["wrist"][[66, 3, 3, 4]])
    # Action statistics over the action-labelled episodes only.
    all_actions = np.concatenate([written[0]["actions"], written[2]["actions"]])
    stats = ds.action_stats
    assert np.array_equal(stats.min, all_actions.min(0)) and np.array_equal(stats.max, all_actions.max(0))
    np.testing.assert_allclose(stats.mean, all_actions.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.std, all_actions.std(0), rtol=1e-4, atol=1e-6)
    assert stats.count == 75
    # The store is plain Zarr v3, chunked and compressed.
    frames = zarr.open_array(path / "episodes" / "ep_000002" / "frames" / "left", mode="r")
    assert frames.metadata.zarr_format == 3 and frames.chunks == (1, 18, 32, 3)
    assert frames.nbytes_stored() < frames.nbytes * 1.1  # noise barely compresses, but it is not inflated


def test_append_with_other_layout_names_both(tmp_path, random_frames):
    path = tmp_path / "demos"
    with DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=7) as w:
        w.add_episode(random_frames(np.random.default_rng(0), 2, SHAPES), None)
    with pytest.raises(ValueError, match=r"cameras=\['left', 'wrist'\].*has cameras=\['left', 'right', 'wrist'\]"):
        DatasetWriter(path, cameras=["left", "wrist"], fps=10, action_dim=7)
    with pytest.raises(ValueError, match=r"fps=15.*has fps=10"):
        DatasetWriter(path, cameras=CAMERAS, fps=15, action_dim=7)
    with pytest.raises(ValueError, match=r"action_dim=6.*has action_dim=7"):
        DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=6)
    assert open_dataset(path).num_episodes == 1


def test_proprioceptive_state_round_trip_statistics_and_rules(tmp_path, random_frames):
    rng = np.random.default_rng(3)
    path = tmp_path / "demos"
    states = [rng.normal(size=(n, 4)).astype(np.float32) for n in (6, 9)]
    with DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=7, state_dim=4) as w:
        for state in states:
            w.add_episode(random_frames(rng, len(state), SHAPES), rng.normal(size=(len(state), 7)), state=state)
        with pytest.raises(ValueError, match="state_dim=4, so every episode needs a proprioceptive state"):
            w.add_episode(random_frames(rng, 3, SHAPES), None)
        with pytest.raises(ValueError, match=r"state: expected a numeric array of shape \(3, 4\)"):
            w.add_episode(random_frames(rng, 3, SHAPES), None, state=np.zeros((3, 5)))
        with pytest.raises(ValueError, match="state: contain NaN"):
            w.add_episode(random_frames(rng, 3, SHAPES), None, state=np.full((3, 4), np.nan))
    ds = open_dataset(path)
    assert ds.num_episodes == 2 and ds.state_dim == 4
    for i, state in enumerate(states):
        assert ds.state(i).tobytes() == state.tobytes() and ds.episode(i).state.tobytes() == state.tobytes()
    every = np.concatenate(states).astype(np.float64)
    stats = ds.state_stats
    np.testing.assert_allclose(stats.mean, every.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats.std, every.std(0), atol=1e-6)
    assert np.array_equal(stats.min, every.min(0).astype(np.float32)) and stats.count == 15
    with pytest.raises(ValueError, match=r"state_dim=0.*has state_dim=4"):
        DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=7)

    # a dataset written before state existed (no state_dim in its description) has none
    with DatasetWriter(tmp_path / "old", cameras=CAMERAS, fps=10, action_dim=7) as w:
        w.add_episode(random_frames(rng, 3, SHAPES), None)
    meta = tmp_path / "old" / "zarr.json"
    info = json.loads(meta.read_text())
    del info["attributes"]["uwm_dataset"]["state_dim"]
    meta.write_text(json.dumps(info))
    old = open_dataset(tmp_path / "old")
    assert old.state_dim == 0 and old.state(0) is None and old.state_stats is None


def test_bad_episodes_are_rejected_and_leave_nothing(tmp_path, random_frames):
    rng = np.random.default_rng(1)
    path = tmp_path / "demos"
    good = random_frames(rng, 4, SHAPES)
    with DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=7) as w:
        cases = [
            (dict(frames={"left": good["left"]}), r"expected cameras"),
            (dict(frames={**good, "wrist": good["wrist"].astype(np.float32)}), r"frames\['wrist'\]: expected uint8"),
            (dict(frames={**good, "right": good["right"][:3]}), r"frames\['right'\]: 3 frames"),
            (dict(frames=good, actions=np.zeros((4, 6))), r"actions: expected .*\(4, 7\)"),
            (dict(frames=good, actions=np.full((4, 7), np.nan)), r"actions: contain NaN"),
            (dict(frames=good, metadata={"when": object()}), r"metadata: must be JSON"),
        ]
        for kwargs, message in cases:
            with pytest.raises(ValueError, match=message):
                w.add_episode(**kwargs)
        assert w.num_episodes == 0
    assert open_dataset(path).num_episodes == 0
    assert not (path / ".staging").exists() or not any((path / ".staging").iterdir())


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "demos"
    with DatasetWriter(path, cameras=["c"], fps=10, action_dim=2):
        with pytest.raises(RuntimeError, match="another writer is writing"):
            DatasetWriter(path, cameras=["c"], fps=10, action_dim=2)
    DatasetWriter(path, cameras=["c"], fps=10, action_dim=2).close()  # released


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from uwm_core.data import DatasetWriter
    path = sys.argv[1]
    rng = np.random.default_rng(0)
    with DatasetWriter(path, cameras=["left", "wrist"], fps=10, action_dim=7) as w:
        for length in (4, 6):
            frames = {c: rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8) for c in ("left", "wrist")}
            w.add_episode(frames, rng.normal(size=(length, 7)).astype(np.float32), task=str(length))
        print("committed", flush=True)
        big = {c: rng.integers(0, 256, (800, 96, 96, 3), dtype=np.uint8) for c in ("left", "wrist")}
        print("writing", flush=True)
        w.add_episode(big, None, task="never committed")
        print("finished", flush=True)
""")


def test_sigkill_mid_episode_keeps_earlier_episodes(tmp_path):
    path = tmp_path / "demos"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "committed"
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 120
        # Kill once the third episode has data on disk, i.e. really in the middle of writing it.
        while not list((path / ".staging").glob("*/frames/left/c/*")):
            assert proc.poll() is None and time.monotonic() < deadline, "writer ended before it was killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL

    ds = open_dataset(path)  # consistent: the half-written episode is invisible
    assert ds.num_episodes == 2 and ds.episode_lengths.tolist() == [4, 6]
    rng = np.random.default_rng(0)
    for i, length in enumerate((4, 6)):
        frames = {c: rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8) for c in ("left", "wrist")}
        actions = rng.normal(size=(length, 7)).astype(np.float32)
        ep = ds.episode(i)
        assert all(np.array_equal(ep.frames[c], frames[c]) for c in frames)
        assert ep.actions.tobytes() == actions.tobytes()
    assert any((path / ".staging").iterdir())  # the remains are there until the next writer
    with DatasetWriter(path, cameras=["left", "wrist"], fps=10, action_dim=7) as w:
        assert not (path / ".staging").exists()
        assert w.add_episode({c: np.zeros((2, 8, 8, 3), np.uint8) for c in ("left", "wrist")}) == 2
    assert open_dataset(path).num_episodes == 3


def test_crash_between_commit_steps_is_recovered(tmp_path, random_frames):
    """An episode renamed into place without its index line, and a torn index line, are ignored."""
    path = tmp_path / "demos"
    rng = np.random.default_rng(2)
    with DatasetWriter(path, cameras=["c"], fps=10, action_dim=2) as w:
        w.add_episode(random_frames(rng, 3, {"c": (8, 8)}), np.zeros((3, 2)))
        w.add_episode(random_frames(rng, 3, {"c": (8, 8)}), np.zeros((3, 2)))
    index = path / "episodes.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(lines[0] + lines[1][:25])  # the second line's append was cut short
    ds = open_dataset(path)
    assert ds.num_episodes == 1  # ep_000001 exists on disk but is not committed
    with DatasetWriter(path, cameras=["c"], fps=10, action_dim=2) as w:
        assert w.add_episode(random_frames(rng, 5, {"c": (8, 8)}), None) == 1
    ds = open_dataset(path)
    assert ds.num_episodes == 2 and ds.episode_lengths.tolist() == [3, 5]
    assert index.read_bytes().count(b"\n") == 2 and index.read_bytes().endswith(b"\n")


def files_of(path: Path) -> dict:
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_update_commits_all_or_nothing(tmp_path, random_frames):
    """Into an existing dataset: invisible until the commit, then all at once; an abort or an
    exception leaves every file as it was."""
    path, rng = tmp_path / "demos", np.random.default_rng(5)
    with DatasetWriter(path, cameras=["c"], fps=10, action_dim=2) as w:
        w.add_episode(random_frames(rng, 3, {"c": (8, 8)}), np.zeros((3, 2)), task="first")
    before = files_of(path)

    update = DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2)
    assert [update.add_episode(random_frames(rng, n, {"c": (8, 8)}), np.ones((n, 2))) for n in (4, 5)] == [1, 2]
    assert open_dataset(path).num_episodes == 1  # not yet committed
    update.abort()
    assert files_of(path) == before and open_dataset(path).num_episodes == 1

    with pytest.raises(KeyError):
        with DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2) as update:
            update.add_episode(random_frames(rng, 4, {"c": (8, 8)}), np.ones((4, 2)))
            raise KeyError("a bad bag")
    assert files_of(path) == before

    with DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2) as update:
        for n in (4, 5):
            update.add_episode(random_frames(rng, n, {"c": (8, 8)}), np.ones((n, 2)), task=f"task {n}")
    ds = open_dataset(path)
    assert ds.episode_lengths.tolist() == [3, 4, 5] and [ds.task(i) for i in range(3)] == ["first", "task 4", "task 5"]
    assert not list(path.glob(".episodes.jsonl.tmp-*"))  # the index was replaced, nothing left aside
    with pytest.raises(RuntimeError, match="closed"):
        update.add_episode(random_frames(rng, 2, {"c": (8, 8)}), None)


def test_update_creates_a_new_dataset_only_at_commit(tmp_path, random_frames):
    path, rng = tmp_path / "new", np.random.default_rng(6)
    update = DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2)
    update.add_episode(random_frames(rng, 3, {"c": (8, 8)}), np.zeros((3, 2)))
    assert not path.exists()  # built aside
    update.abort()
    assert os.listdir(tmp_path) == []
    DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2).commit()  # no episode: no dataset
    assert os.listdir(tmp_path) == []
    with DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2) as update:
        assert update.add_episode(random_frames(rng, 3, {"c": (8, 8)}), np.zeros((3, 2))) == 0
        assert not path.exists()
    assert open_dataset(path).num_episodes == 1 and os.listdir(tmp_path) == ["new"]

    (tmp_path / "other").mkdir()  # a directory that is not a dataset is never replaced
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"other: exists and is not a uwm dataset"):
        DatasetUpdate(tmp_path / "other", cameras=["c"], fps=10, action_dim=2)
    update = DatasetUpdate(tmp_path / "raced", cameras=["c"], fps=10, action_dim=2)
    update.add_episode(random_frames(rng, 3, {"c": (8, 8)}), np.zeros((3, 2)))
    DatasetWriter(tmp_path / "raced", cameras=["c"], fps=10, action_dim=2).close()  # created meanwhile
    with pytest.raises(FileExistsError, match="another writer created this dataset"):
        update.commit()
    assert open_dataset(tmp_path / "raced").num_episodes == 0
    assert sorted(os.listdir(tmp_path)) == ["new", "other", "raced"]


def test_update_and_writer_exclude_each_other(tmp_path):
    path = tmp_path / "demos"
    DatasetWriter(path, cameras=["c"], fps=10, action_dim=2).close()
    with DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2):
        with pytest.raises(DatasetBusyError, match="another writer is writing"):
            DatasetWriter(path, cameras=["c"], fps=10, action_dim=2)
    with DatasetWriter(path, cameras=["c"], fps=10, action_dim=2):
        with pytest.raises(DatasetBusyError, match="another writer is writing"):
            DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2)


KILLED_UPDATE = textwrap.dedent("""
    import os, signal, sys, numpy as np
    from uwm_core.data import DatasetUpdate
    updates = [DatasetUpdate(path, cameras=["c"], fps=10, action_dim=2) for path in sys.argv[1:]]
    for update in updates:
        update.add_episode({"c": np.zeros((4, 8, 8, 3), np.uint8)}, np.ones((4, 2)))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_killed_update_leaves_the_datasets_as_they_were(tmp_path, random_frames):
    existing, new = tmp_path / "existing", tmp_path / "new"
    with DatasetWriter(existing, cameras=["c"], fps=10, action_dim=2) as w:
        w.add_episode(random_frames(np.random.default_rng(7), 3, {"c": (8, 8)}), np.zeros((3, 2)))
    before = files_of(existing)
    proc = subprocess.run([sys.executable, "-c", KILLED_UPDATE, str(existing), str(new)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert open_dataset(existing).episode_lengths.tolist() == [3] and not new.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new.tmp-")]  # the killed update's stage

    with DatasetUpdate(existing, cameras=["c"], fps=10, action_dim=2):  # the next writer clears the remains
        assert files_of(existing) == before
    DatasetUpdate(new, cameras=["c"], fps=10, action_dim=2).abort()
    assert sorted(os.listdir(tmp_path)) == ["existing"]


def test_validation_names_the_broken_episode_and_array(tmp_path, random_frames):
    rng = np.random.default_rng(3)
    path = tmp_path / "demos"
    with DatasetWriter(path, cameras=CAMERAS, fps=10, action_dim=7) as w:
        for _ in range(3):
            w.add_episode(random_frames(rng, 4, SHAPES), rng.normal(size=(4, 7)))
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    shutil.rmtree(broken / "episodes" / "ep_000001" / "frames" / "right")
    with pytest.raises(DatasetError, match=r"episode 1 \(episodes/ep_000001\) array frames/right: array is missing"):
        open_dataset(broken)

    shutil.rmtree(broken)
    shutil.copytree(path, broken)  # an array replaced by one of another shape
    group = zarr.open_group(broken / "episodes" / "ep_000002", mode="a")
    del group["actions"]
    group.create_array("actions", shape=(4, 6), dtype=np.float32)[:] = 0
    ds = open_dataset(broken)
    assert np.array_equal(ds.episode(0).actions, open_dataset(path).episode(0).actions)
    with pytest.raises(DatasetError, match=r"episode 2 \(episodes/ep_000002\) array actions: expected float32\[4, 7\]"):
        ds.episode(2)

    shutil.rmtree(broken)
    shutil.copytree(path, broken)  # corrupt chunk data
    shard = next((broken / "episodes" / "ep_000000" / "frames" / "wrist" / "c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(DatasetError, match=r"episode 0 \(episodes/ep_000000\) array frames/wrist: cannot read"):
        open_dataset(broken).frames(0, "wrist")

    shutil.rmtree(broken)
    shutil.copytree(path, broken)  # a damaged index line
    lines = (broken / "episodes.jsonl").read_text().splitlines()
    lines[1] = "#" + lines[1][1:]
    (broken / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"episodes.jsonl: line 2 is not valid JSON"):
        open_dataset(broken)


def test_missing_or_foreign_paths(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: dataset does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: not a uwm dataset \(zarr.json is missing\)"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"other: exists and is not a uwm dataset"):
        DatasetWriter(tmp_path / "other", cameras=["c"], fps=10, action_dim=2)
    assert os.listdir(tmp_path / "other") == ["notes.txt"]
    # A new dataset in an existing empty directory is fine, and an empty dataset opens with 0 episodes.
    DatasetWriter(tmp_path / "empty", cameras=["c"], fps=10, action_dim=2).close()
    ds = open_dataset(tmp_path / "empty")
    assert ds.num_episodes == 0 and ds.action_stats is None
    assert json.loads((Path(tmp_path) / "empty" / "zarr.json").read_text())["attributes"]["uwm_dataset"]["fps"] == 10
