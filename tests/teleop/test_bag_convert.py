"""uwm-bag2dataset on bags written directly with rosbags: storage formats, encodings, rates and
jitter (the alignment rule checked frame by frame), action sources, re-runs and appends."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from bagfactory import BagBuilder, rewrite_mcap
from scipy.spatial.transform import Rotation

from uwm_core.data import open_dataset
from uwm_core.image_codec import decode_compressed, encode_compressed
from uwm_core.spatial import STATE_DIM, apply_delta, proprio_state
from uwm_teleop.bag2dataset import ConversionError, convert, main
from uwm_teleop.bag_reading import HEADER_BYTES, Bag
from uwm_teleop.conversion_config import ConvertConfig
from uwm_teleop.frame_loading import to_dataset_resolution

T0 = 1_700_000_000 * 10**9
MS = 1_000_000
DT = 100 * MS
LEFT, WRIST = "/cam/left/image", "/cam/wrist/image"
DELTA, TARGET, POSE, GRIPPER = "/teleop/delta_ee", "/robot/target", "/robot/pose", "/gripper/command"


def config(**overrides) -> ConvertConfig:
    values = dict(cameras={"left": LEFT, "wrist": WRIST}, image_size=None, delta_topic=DELTA,
                  target_topic=TARGET, pose_topic=POSE, gripper_topic=GRIPPER, max_frame_gap_s=0.15,
                  state=False)  # most bags here have no measured pose; test_state_* set it
    values.update(overrides)
    return ConvertConfig(**values).validate()


def commands(bag: BagBuilder, steps: int, rng, start=T0 + 40 * MS, jitter=0, topics=("delta",)):
    """A command stream like the command interface's: delta, target, gripper per step; returns
    (stamps, deltas, grippers, targets)."""
    position, quat = np.array([0.5, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 1.0])
    if "target" in topics:
        bag.pose(POSE, start - 30 * MS, position, quat)  # the measured pose the target is seeded from
    stamps, deltas, grippers = [], [], []
    for k in range(steps):
        stamp = start + k * DT + (int(rng.integers(-jitter, jitter + 1)) if jitter else 0)
        delta = np.concatenate([rng.normal(0, 0.01, 3), rng.normal(0, 0.05, 3)])
        gripper = float(k >= steps // 2)
        position, quat = apply_delta(position, quat, delta)
        if "delta" in topics:
            bag.twist(DELTA, stamp, delta)
        if "target" in topics:
            bag.pose(TARGET, stamp, position, quat)
        if "pose" in topics:  # the robot reaches it 50 ms later
            bag.pose(POSE, stamp + 50 * MS, position, quat)
        bag.gripper(GRIPPER, stamp + 2 * MS, gripper)
        stamps.append(stamp), deltas.append(delta), grippers.append(gripper)
    return np.array(stamps), np.array(deltas), np.array(grippers)


def camera(bag, topic, count, period, rng, shape=(12, 16), jitter=0, start=T0, kind="rgb8", pad=0):
    """Frames with random pixels; returns {stamp: expected RGB after decoding}."""
    frames = {}
    for i in range(count):
        stamp = start + i * period + (int(rng.integers(-jitter, jitter + 1)) if jitter else 0)
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        if kind in ("jpeg", "png"):
            bag.compressed(topic, stamp, rgb, kind)
            rgb = decode_compressed(kind, encode_compressed(rgb, kind))
        else:
            if kind == "mono8":
                rgb = np.repeat(rgb[..., :1], 3, axis=2)
            bag.image(topic, stamp, rgb, kind, pad=pad)
        frames[stamp] = rgb
    return frames


def latest_at_or_before(stamps, t):
    """The alignment rule, written out plainly for the check."""
    earlier = [s for s in stamps if s <= t]
    return max(earlier) if earlier else None


def test_rates_jitter_and_a_camera_that_stops_align_frame_by_frame(tmp_path):
    rng = np.random.default_rng(0)
    bag = BagBuilder(tmp_path / "multi_rate")
    left = camera(bag, LEFT, 180, 33 * MS, rng, jitter=4 * MS)  # 30 Hz, jittered
    wrist = camera(bag, WRIST, 30, 83 * MS, rng, jitter=6 * MS)  # 12 Hz, stops after 2.5 s
    stamps, deltas, grippers = commands(bag, 55, rng, jitter=8 * MS)
    bag.close()

    # the wrist camera's stop drops half the steps: refused, naming the bag, camera and ratio ...
    with pytest.raises(ConversionError, match=r"multi_rate: 5\d% of its 55 steps would be dropped \(camera wrist: "
                                              r"no frame within 0.15 s: 2\d\), more than max_drop_ratio=0.1"):
        convert([tmp_path / "multi_rate"], tmp_path / "ds", config(), progress=False)
    assert not (tmp_path / "ds").exists()
    # ... unless asked for
    reports = convert([tmp_path / "multi_rate"], tmp_path / "ds", config(), progress=False, allow_drops=True)
    report, = reports
    assert report.status == "converted", report.detail
    episode = open_dataset(tmp_path / "ds").episode(0)
    steps = episode.metadata["step_times_ns"]
    kept = []
    for k, t in enumerate(stamps):  # one step per command, dropped when the wrist frame is too old
        wrist_stamp = latest_at_or_before(wrist, t)
        if wrist_stamp is not None and t - wrist_stamp <= 150 * MS:
            kept.append(k)
    assert steps == [int(stamps[k]) for k in kept]
    assert len(kept) < 30 and report.steps == len(kept)  # the steps after the wrist stopped are gone
    assert report.dropped == {"camera wrist: no frame within 0.15 s": 55 - len(kept)}
    for row, k in enumerate(kept):
        t = stamps[k]
        for name, frames in (("left", left), ("wrist", wrist)):
            stamp = latest_at_or_before(frames, t)
            assert episode.metadata["frame_times_ns"][name][row] == stamp
            np.testing.assert_array_equal(episode.frames[name][row], frames[stamp])
    np.testing.assert_allclose(episode.actions[:, :6], deltas[kept], atol=1e-6)
    np.testing.assert_array_equal(episode.actions[:, 6], grippers[kept])
    assert report.max_frame_gap_s["wrist"] <= 0.15 and report.max_frame_gap_s["left"] <= 0.04


@pytest.mark.parametrize("storage,kind,pad", [("sqlite3", "bgr8", 5), ("mcap", "jpeg", 0), ("mcap", "png", 0),
                                              ("sqlite3", "mono8", 3), ("mcap", "rgba8", 0), ("mcap", "bgra8", 2)])
def test_storage_formats_and_encodings(tmp_path, storage, kind, pad):
    rng = np.random.default_rng(1)
    bag = BagBuilder(tmp_path / f"bag_{kind}", storage=storage)
    left = camera(bag, LEFT, 20, 50 * MS, rng, kind=kind, pad=pad)
    wrist = camera(bag, WRIST, 20, 50 * MS, rng, shape=(24, 32))  # resized to 12x16
    stamps, deltas, _ = commands(bag, 9, rng)
    bag.close()
    report, = convert([tmp_path / f"bag_{kind}"], tmp_path / "ds", config(image_size=[12, 16]), progress=False)
    assert report.status == "converted", report.detail
    episode = open_dataset(tmp_path / "ds").episode(0)
    assert episode.actions.shape == (9, 7)
    for row, t in enumerate(stamps):
        np.testing.assert_array_equal(episode.frames["left"][row], left[latest_at_or_before(left, t)])
        resized = to_dataset_resolution(wrist[latest_at_or_before(wrist, t)], (12, 16))
        np.testing.assert_array_equal(episode.frames["wrist"][row], resized)
    assert episode.metadata["source"].endswith(f"bag_{kind}")


def test_actions_from_deltas_targets_and_measured_poses_agree(tmp_path):
    sources = {"delta": ("delta",), "target": ("target",), "pose": ("pose",)}
    results = {}
    for name, topics in sources.items():
        rng = np.random.default_rng(2)  # the same trajectory each time
        bag = BagBuilder(tmp_path / name)
        camera(bag, LEFT, 80, 20 * MS, rng)
        camera(bag, WRIST, 80, 20 * MS, rng)
        stamps, deltas, grippers = commands(bag, 12, rng, topics=topics)
        bag.close()
        report, = convert([tmp_path / name], tmp_path / f"ds_{name}", config(), progress=False)
        assert report.status == "converted" and report.action_source == name, report.detail
        results[name] = open_dataset(tmp_path / f"ds_{name}").episode(0)
    np.testing.assert_allclose(results["delta"].actions[:, :6], deltas, atol=1e-6)
    np.testing.assert_allclose(results["target"].actions, results["delta"].actions, atol=1e-6)
    # measured poses: a grid from the first pose (which already shows command 0), so step k's
    # action is the motion to the next grid time, command k + 1
    pose = results["pose"]
    assert pose.metadata["step_times_ns"] == [int(stamps[0] + 50 * MS + k * DT) for k in range(11)]
    np.testing.assert_allclose(pose.actions[:, :6], deltas[1:], atol=1e-6)
    np.testing.assert_array_equal(pose.actions[:, 6], grippers[1:])


def test_state_is_the_latest_measured_pose_and_the_gripper_command_before_each_step(tmp_path):
    rng = np.random.default_rng(5)
    bag = BagBuilder(tmp_path / "bag")
    camera(bag, LEFT, 80, 20 * MS, rng)
    camera(bag, WRIST, 80, 20 * MS, rng)
    stamps, deltas, grippers = commands(bag, 12, rng, topics=("delta", "pose"))
    bag.close()
    report, = convert([tmp_path / "bag"], tmp_path / "ds", config(state=True), progress=False)
    assert report.status == "converted", report.detail
    # step 0 comes before the first measured pose (50 ms after command 0): dropped and reported
    assert report.dropped == {"pose: no measured pose within 0.15 s": 1}
    ds = open_dataset(tmp_path / "ds")
    ep = ds.episode(0)
    assert ds.state_dim == STATE_DIM and ep.state.shape == (11, STATE_DIM)
    assert ep.metadata["step_times_ns"] == stamps[1:].tolist()
    position, quat = np.array([0.5, 0.0, 0.3]), np.array([0.0, 0.0, 0.0, 1.0])
    measured, quats = [], []  # the pose published after command k (the robot reached its target)
    for delta in deltas:
        position, quat = apply_delta(position, quat, delta)
        measured.append(proprio_state(position, quat, 0.0))
        quats.append(quat)
    for row, k in enumerate(range(1, 12)):  # step k: the pose after command k - 1, gripper command k - 1
        np.testing.assert_allclose(ep.state[row, :9], measured[k - 1][:9], atol=1e-6)
        assert ep.state[row, 9] == grippers[k - 1]
    rotation = Rotation.from_quat(quats[10]).as_matrix()  # the columns are the rotation matrix's first two
    np.testing.assert_allclose(ep.state[-1, 3:9], np.concatenate([rotation[:, 0], rotation[:, 1]]), atol=1e-6)
    np.testing.assert_allclose(ds.state_stats.max, ep.state.max(axis=0), atol=1e-6)

    # without a measured pose the state cannot be made: refused, naming the topic and the setting
    bag = BagBuilder(tmp_path / "no_pose")
    camera(bag, LEFT, 80, 20 * MS, rng)
    camera(bag, WRIST, 80, 20 * MS, rng)
    commands(bag, 12, rng)
    bag.close()
    report, = convert([tmp_path / "no_pose"], tmp_path / "ds2", config(state=True), progress=False, skip_bad=True)
    assert report.status == "error" and POSE in report.detail and "state: false" in report.detail
    # and a dataset with state is not appended to without it
    with pytest.raises(ValueError, match="state_dim 10"):
        convert([tmp_path / "no_pose"], tmp_path / "ds", config(), progress=False)


def test_a_camera_gap_mid_bag_splits_the_episode_or_refuses_the_bag(tmp_path, capsys):
    rng = np.random.default_rng(6)
    bag = BagBuilder(tmp_path / "gap")
    left = camera(bag, LEFT, 360, 33 * MS, rng)  # 12 s at 30 Hz ...
    for stamp in [s for s in left if T0 + 5 * 10**9 <= s < T0 + 6 * 10**9]:
        del left[stamp]  # ... with the left camera silent for 1 s after 5 s
    bag.items = [item for item in bag.items if item[1] != LEFT or item[0] in left]
    camera(bag, WRIST, 360, 33 * MS, rng)
    stamps, deltas, _ = commands(bag, 120, rng)
    bag.close()

    report, = convert([tmp_path / "gap"], tmp_path / "ds", config(), progress=False)
    assert report.status == "converted" and report.episodes == 2, report.detail
    assert len(report.cuts) == 1 and "camera left: no frame within 0.15 s" in report.cuts[0], report.cuts
    assert re.match(r"(4\.9|5\.0)\.\.\.6\.0 s: ", report.cuts[0]), report.cuts  # seconds into the bag
    assert "split into 2 episodes at gaps" in report.line()
    ds = open_dataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and sum(ds.episode_lengths) == report.steps < 120
    for i in range(2):  # every written episode is contiguous: one control period between steps
        steps = np.array(ds.metadata(i)["step_times_ns"])
        assert (np.diff(steps) <= 1.5 * DT).all() and ds.metadata(i)["segment"]["index"] == i
        rows = [int(np.flatnonzero(stamps == t)[0]) for t in steps]
        np.testing.assert_allclose(ds.actions(i)[:, :6], deltas[rows], atol=1e-6)
    assert ds.metadata(0)["step_times_ns"][-1] < T0 + 5 * 10**9 + 150 * MS < ds.metadata(1)["step_times_ns"][0]

    # on_gap: refuse names the bag and where the steps are missing, and writes nothing
    assert main([str(tmp_path / "gap"), "--out", str(tmp_path / "refused"), "--config",
                 str(_config_file(tmp_path, on_gap="refuse"))]) == 1
    printed = capsys.readouterr()
    assert re.search(r"gap: steps are missing mid-bag \((4\.9|5\.0|5\.1)\.\.\.6\.0 s: camera left", printed.err)
    assert "on_gap: refuse" in printed.err and "nothing was written" in printed.out
    assert not (tmp_path / "refused").exists()


def test_unconfigured_command_topic_and_still_pose_are_refused_naming_what_the_bag_has(tmp_path, capsys):
    rng = np.random.default_rng(7)
    bag = BagBuilder(tmp_path / "still")
    camera(bag, LEFT, 60, 33 * MS, rng)
    camera(bag, WRIST, 60, 33 * MS, rng)
    for k in range(20):  # the commands went to a topic the config does not name; the pose never moved
        bag.twist("/spacemouse/delta", T0 + 40 * MS + k * DT, rng.normal(0, 0.01, 6))
        bag.pose(POSE, T0 + 45 * MS + k * DT, [0.5, 0.0, 0.3], [0.0, 0.0, 0.0, 1.0])
    bag.close()
    report, = convert([tmp_path / "still"], tmp_path / "ds", config(gripper_topic=""), progress=False, skip_bad=True)
    assert report.status == "error" and not (tmp_path / "ds").exists()
    assert "every action taken from pose (/robot/pose) is zero in translation and rotation" in report.detail
    assert "/spacemouse/delta (geometry_msgs/msg/TwistStamped)" in report.detail and "set delta_topic" in report.detail

    # --skip-bad converts the others but still exits 1 when a bag was refused, unless --ok-if-skipped
    good = BagBuilder(tmp_path / "bags" / "good")
    camera(good, LEFT, 60, 33 * MS, rng)
    camera(good, WRIST, 60, 33 * MS, rng)
    commands(good, 15, rng)
    good.close()
    shutil.move(tmp_path / "still", tmp_path / "bags" / "still")
    argv = [str(tmp_path / "bags"), "--out", str(tmp_path / "mixed"), "--config", str(_config_file(tmp_path)),
            "--skip-bad"]
    assert main(argv) == 1
    printed = capsys.readouterr()
    assert "1 bag(s) refused" in printed.err and "1 bag(s) converted into" in printed.out and "1 bad" in printed.out
    assert open_dataset(tmp_path / "mixed").num_episodes == 1
    assert main([*argv[:2], str(tmp_path / "mixed2"), *argv[3:], "--ok-if-skipped"]) == 0


def test_faster_commands_are_composed_per_control_step(tmp_path):
    rng = np.random.default_rng(3)
    bag = BagBuilder(tmp_path / "fast")
    camera(bag, LEFT, 60, 33 * MS, rng)
    camera(bag, WRIST, 60, 33 * MS, rng)
    deltas = []
    for k in range(45):  # 30 Hz commands, 10 Hz dataset
        delta = np.concatenate([np.full(3, 0.001 * (k + 1)), [0.0, 0.0, 0.01]])
        bag.twist(DELTA, T0 + 40 * MS + k * 33_333_333, delta)
        deltas.append(delta)
    bag.close()
    report, = convert([tmp_path / "fast"], tmp_path / "ds", config(gripper_topic=""), progress=False)
    assert report.status == "converted", report.detail
    actions = open_dataset(tmp_path / "ds").episode(0).actions
    assert actions.shape == (15, 7)
    expected = np.array([np.sum(deltas[3 * k:3 * k + 3], axis=0) for k in range(15)])  # z rotations commute
    np.testing.assert_allclose(actions[:, :6], expected, atol=1e-6)
    assert (actions[:, 6] == 0).all()  # no gripper topic: gripper_default


def test_rerun_and_append_rules(tmp_path, capsys):
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        bag = BagBuilder(tmp_path / "bags" / name, custom={"uwm.task": f"task {name}", "uwm.outcome": "success",
                                                           "uwm.episode_id": f"id-{name}"})
        camera(bag, LEFT, 20, 50 * MS, rng)
        camera(bag, WRIST, 20, 50 * MS, rng)
        commands(bag, 8, rng)
        bag.close()
    out = tmp_path / "dataset"
    dry = ["--out", str(out), "--config", str(_config_file(tmp_path)), "--dry-run", "--json-report",
           str(tmp_path / "report.json")]
    assert main([str(tmp_path / "bags")] + dry) == 0 and not out.exists()  # dry run: checked, nothing written
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(r["status"], r["task"], r["steps"]) for r in report] == [("checked", "task a", 8), ("checked", "task b", 8)]
    assert "2 bag(s) with 16 steps checked (dry run" in capsys.readouterr().out
    assert main([str(tmp_path / "bags" / "a"), "--out", str(out), "--config", str(_config_file(tmp_path))]) == 0
    assert main([str(tmp_path / "bags"), "--out", str(out), "--config", str(_config_file(tmp_path))]) == 0
    printed = capsys.readouterr()
    assert "1 already in the dataset" in printed.out and "[   present]" in printed.err
    ds = open_dataset(out)
    assert [ds.task(i) for i in range(2)] == ["task a", "task b"]
    assert [ds.metadata(i)["source_id"] for i in range(2)] == ["id-a", "id-b"]

    # a copy of a bag elsewhere is the same recording: not added twice
    shutil.copytree(tmp_path / "bags" / "a", tmp_path / "copy_of_a")
    assert main([str(tmp_path / "copy_of_a"), "--out", str(out), "--config", str(_config_file(tmp_path))]) == 0
    assert open_dataset(out).num_episodes == 2

    # another fps: refused before anything is written, naming both
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main([str(tmp_path / "bags"), "--out", str(out), "--config", str(_config_file(tmp_path, fps=5))]) == 2
    assert "fps 10" in capsys.readouterr().err and sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dataset")]


def _config_file(tmp_path, **overrides):
    values = {"cameras": {"left": LEFT, "wrist": WRIST}, "image_size": None, "delta_topic": DELTA,
              "gripper_topic": GRIPPER, "state": False, **overrides}
    path = tmp_path / f"convert_{len(overrides)}_{overrides.get('fps', '')}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_shipped_config_equals_builtin_defaults():
    shipped = ConvertConfig.load(Path(__file__).parents[2] / "config" / "convert.yaml")
    assert shipped == ConvertConfig()


KILLED_CONVERSION = textwrap.dedent("""
    import os, signal, sys
    from uwm_core.data import DatasetUpdate
    from uwm_teleop.bag2dataset import main
    DatasetUpdate.commit = lambda self: os.kill(os.getpid(), signal.SIGKILL)  # killed just before committing
    main(sys.argv[1:])
""")


def test_a_killed_conversion_leaves_the_dataset_as_it_was(tmp_path):
    rng = np.random.default_rng(6)
    for name in ("a", "b"):
        bag = BagBuilder(tmp_path / "bags" / name, custom={"uwm.episode_id": f"id-{name}"})
        camera(bag, LEFT, 20, 50 * MS, rng)
        camera(bag, WRIST, 20, 50 * MS, rng)
        commands(bag, 8, rng)
        bag.close()
    out = tmp_path / "dataset"
    options = ["--out", str(out), "--config", str(_config_file(tmp_path))]

    def killed_conversion(bag: Path) -> None:
        proc = subprocess.run([sys.executable, "-c", KILLED_CONVERSION, str(bag), *options],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr

    killed_conversion(tmp_path / "bags" / "a")  # into a new dataset: none appears
    assert not out.exists()
    assert main([str(tmp_path / "bags" / "a"), *options]) == 0  # and the killed run's remains are removed
    assert sorted(os.listdir(tmp_path)) == ["bags", "convert_0_.yaml", "dataset"]
    killed_conversion(tmp_path / "bags" / "b")  # into an existing one: it stays as it was
    ds = open_dataset(out)
    assert ds.num_episodes == 1 and ds.metadata(0)["source_id"] == "id-a"
    reports = convert([tmp_path / "bags"], out, config(), progress=False)
    assert [r.status for r in reports] == ["present", "converted"]
    ds = open_dataset(out)
    assert [ds.metadata(i)["source_id"] for i in range(ds.num_episodes)] == ["id-a", "id-b"]
    assert sorted(os.listdir(out / "episodes")) == ["ep_000000", "ep_000001", "zarr.json"]
    assert sorted(os.listdir(tmp_path)) == ["bags", "convert_0_.yaml", "dataset"]


def test_mcap_messages_match_rosbags_order_and_bytes(tmp_path):
    """MCAP messages are read with the mcap library (fast path), sqlite3 with rosbags: both give
    the messages of the topics asked for, in log-time order, byte for byte as rosbags reads them."""
    rng = np.random.default_rng(3)
    for storage in ("mcap", "sqlite3"):
        bag = BagBuilder(tmp_path / storage, storage=storage)
        camera(bag, LEFT, 40, 33 * MS, rng, jitter=3 * MS)
        camera(bag, WRIST, 40, 33 * MS, rng, start=T0 + 5 * MS)
        commands(bag, 12, rng)
        bag.gripper(GRIPPER, T0 + 40 * MS, 1.0)  # the same log time as another topic's message
        bag.close()
        with Bag(tmp_path / storage) as reader:
            assert (reader._mcap_files() is not None) == (storage == "mcap")
            for topics in ([LEFT, DELTA, GRIPPER], [WRIST], list(reader.topics)):
                fast = [(t, ns, bytes(raw)) for t, ns, raw in reader.messages(topics)]
                reference = [(t, ns, bytes(raw)) for t, ns, raw in reader._rosbags_messages(topics)]
                assert [ns for _, ns, _ in fast] == sorted(ns for _, ns, _ in fast)
                assert sorted(fast) == sorted(reference) and len(fast) == sum(reader.message_counts[t] for t in topics)
                for topic in topics:  # each topic's own order is exactly rosbags'
                    assert [m for m in fast if m[0] == topic] == [m for m in reference if m[0] == topic]


@pytest.mark.parametrize("files, compression", [(1, ""), (3, ""), (2, "zstd")])
def test_partial_reads_give_the_same_messages_split_or_compressed(tmp_path, files, compression):
    """Indexed, uncompressed MCAP is read through its message indexes (pass 1 reads a frame's header
    only, pass 2 only the frames it uses); split files are numbered across the bag; compressed
    chunks are read whole, with the same results."""
    for name in ("original", "bag"):
        rng = np.random.default_rng(4)
        bag = BagBuilder(tmp_path / name)
        camera(bag, LEFT, 30, 33 * MS, rng)
        camera(bag, WRIST, 30, 33 * MS, rng, start=T0 + 5 * MS)
        commands(bag, 9, rng)
        bag.close()
    if files > 1 or compression:
        rewrite_mcap(tmp_path / "bag", files, compression)
    with Bag(tmp_path / "bag") as reader:
        assert len(reader._mcap_files()) == files
        assert (reader._indexed_files() is not None) == (not compression)
        reference = [(t, ns, bytes(raw)) for t, ns, raw in reader._rosbags_messages([LEFT, WRIST, DELTA])]
        heads = [(t, ns, bytes(raw)) for t, ns, raw in reader.messages([LEFT, WRIST, DELTA], head_only=[LEFT])]
        assert [(t, ns) for t, ns, _ in heads] == [(t, ns) for t, ns, _ in reference]
        for (topic, _, head), (_, _, whole) in zip(heads, reference):
            assert whole.startswith(head) and (head == whole if topic != LEFT or compression else
                                               len(head) == HEADER_BYTES < len(whole))
        numbers = {LEFT: [0, 7, 8, 29, 30, 500], WRIST: [12]}  # beyond the last: nothing
        chosen = [(t, ns, bytes(raw)) for t, ns, raw in reader.messages([LEFT, WRIST, DELTA], only=numbers)]
        expected = [m for m in reference if m[0] == DELTA]
        for topic, wanted in numbers.items():
            mine = [m for m in reference if m[0] == topic]
            expected += [mine[n] for n in wanted if n < len(mine)]
        assert sorted(chosen) == sorted(expected) and [m[1] for m in chosen] == sorted(m[1] for m in chosen)
    # and the rewritten bag converts exactly as the original
    episodes = []
    for name in ("original", "bag"):
        reports = convert([tmp_path / name], tmp_path / f"{name}_dataset", config(), progress=False)
        assert [r.status for r in reports] == ["converted"], reports[0].line()
        episodes.append(open_dataset(tmp_path / f"{name}_dataset").episode(0))
    assert np.array_equal(episodes[0].actions, episodes[1].actions) and len(episodes[0].actions) == 9
    for cam in ("left", "wrist"):
        assert np.array_equal(episodes[0].frames[cam], episodes[1].frames[cam])
