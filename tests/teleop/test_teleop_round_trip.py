"""Round trip with real nodes: fake robot + the teleop node driven by keys through a pty + the
recorder (two episodes: success, failure) -> uwm-bag2dataset -> a training sample that matches
what was published."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import time

import numpy as np
import torch
from doubles.commander import wait_for
from teleop_test_helpers import BIN, teleop_robot

from uwm_core.data import open_dataset
from uwm_core.data.samples import EpisodeSamples, SampleSpec, Window
from uwm_core.processing import ActionNormalizer, frames_to_float
from uwm_teleop.bag_reading import Bag, header_stamp_ns
from uwm_teleop.frame_loading import to_dataset_resolution

TOPICS = {"pose": "/robot/current_pose", "target": "/robot/target_pose", "delta": "/teleop/delta_ee",
          "gripper": "/gripper/command"}
CAMERAS = {"left": ("/test/left/image", (24, 32), "rgb8"), "wrist": ("/test/wrist/image", (48, 64), "bgr8")}
IMAGE_SIZE = [24, 32]  # left is stored as published, wrist is resized


def recorder_params(output_dir) -> dict:
    return {"output_dir": str(output_dir), "camera_names": list(CAMERAS),
            "camera_topics": [topic for topic, _, _ in CAMERAS.values()],
            "pose_topic": TOPICS["pose"], "delta_topic": TOPICS["delta"], "target_topic": TOPICS["target"],
            "gripper_topic": TOPICS["gripper"], "status_period_s": 0.5, "discovery_period_s": 0.2}


def teleop_params() -> dict:
    return {"task": "push the red block", "ee_pose_topic": TOPICS["pose"], "target_pose_topic": TOPICS["target"],
            "gripper_topic": TOPICS["gripper"], "base_frame": "fr3_link0", "max_pose_age_s": 2.0,
            "key_hold_s": 0.35, "speed_scale": 1.0, "max_linear_speed": 0.1, "max_angular_speed": 0.5}


def press(master: int, keys: str, times: int = 1, every: float = 0.1) -> None:
    for _ in range(times):
        os.write(master, keys.encode())
        time.sleep(every)


def episode_dirs(output_dir):
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and not p.name.endswith(".partial"))


def test_teleop_record_convert_round_trip(ros, node_processes, tmp_path):
    bags = tmp_path / "bags"
    robot = teleop_robot(CAMERAS, camera_rate_hz=15.0, keep_published=True)
    try:
        recorder = node_processes("uwm-recorder", recorder_params(bags), tmp_path, "recorder")
        master, slave = pty.openpty()
        teleop = node_processes("uwm-teleop", teleop_params(), tmp_path, "teleop", stdin=slave)
        os.close(slave)
        wait_for(lambda: len(robot.deltas()) > 3, 60, "the teleop node to command the robot")
        wait_for(lambda: "subscribed to /gripper/command" in recorder.output()
                 and recorder.output().count("subscribed to") == 6, 60, "the recorder to subscribe to all topics")

        press(master, "n")  # episode 1
        wait_for(lambda: list(bags.glob("*.partial")), 20, "episode 1 to start")
        press(master, "w", 10)  # +x for about a second
        g_pressed = len(robot.grippers())
        press(master, "g")  # close the gripper
        press(master, "a", 6)  # +y
        press(master, "j", 6)  # yaw
        time.sleep(0.6)
        press(master, "y")  # stop: success
        wait_for(lambda: len(episode_dirs(bags)) == 1, 30, "episode 1 to be saved")

        press(master, "n")  # episode 2
        wait_for(lambda: list(bags.glob("*.partial")), 20, "episode 2 to start")
        press(master, "r", 8)
        press(master, "b")  # stop: failure
        wait_for(lambda: len(episode_dirs(bags)) == 2, 30, "episode 2 to be saved")

        press(master, " ")  # clutch: the robot holds (one zero delta), motion keys do nothing
        time.sleep(0.5)
        paused_at = len(robot.deltas())
        press(master, "w", 5)
        time.sleep(0.3)
        assert len(robot.deltas()) == paused_at and np.allclose(robot.deltas()[-1][1], 0.0)
        press(master, " ")  # resume
        press(master, "w", 5)
        wait_for(lambda: any(d[0] > 0.001 for _, d in robot.deltas()[paused_at:]), 10, "motion after the clutch")

        deltas_before_eof = len(robot.deltas())
        os.close(master)  # the terminal goes away: safe stop
        assert teleop.proc.wait(20) == 1, teleop.output()[-3000:]
        time.sleep(0.5)
        after_eof = [d for _, d in robot.deltas()[deltas_before_eof:]]
        assert after_eof and np.allclose(after_eof[-1], 0.0), "the last command after input loss must be a hold"
        assert "keyboard input" in teleop.output() and "the robot holds" in teleop.output()
        assert recorder.stop() == 0, recorder.output()[-3000:]
        assert "Traceback" not in teleop.output() + recorder.output()
    finally:
        robot.close()

    # the bags carry task, outcome and topics
    first, second = episode_dirs(bags)
    with Bag(first) as bag:
        assert bag.custom["uwm.task"] == "push the red block" and bag.custom["uwm.outcome"] == "success"
        assert json.loads(bag.custom["uwm.topics"])["cameras"] == {n: t for n, (t, _, _) in CAMERAS.items()}
        assert "uwm_teleop" in bag.custom["uwm.software"]
        recorded = {name: np.array([header_stamp_ns(raw) for _, _, raw in bag.messages([topic])])
                    for name, (topic, _, _) in CAMERAS.items()}
    with Bag(second) as bag:
        assert bag.custom["uwm.outcome"] == "failure"

    config = tmp_path / "convert.yaml"
    config.write_text(json.dumps({"cameras": {n: t for n, (t, _, _) in CAMERAS.items()}, "image_size": IMAGE_SIZE,
                                  "max_frame_gap_s": 0.25}))
    dataset_dir = tmp_path / "dataset"
    convert = [str(BIN / "uwm-bag2dataset"), str(bags), "--out", str(dataset_dir), "--config", str(config)]
    result = subprocess.run(convert, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 episode(s)" in result.stdout and "1 skipped by outcome" in result.stdout, result.stdout
    assert "outcome failure (use --include-failed" in result.stderr

    ds = open_dataset(dataset_dir)
    assert ds.num_episodes == 1 and ds.cameras == list(CAMERAS) and ds.fps == 10
    episode = ds.episode(0)
    meta = episode.metadata
    assert episode.task == "push the red block" and meta["outcome"] == "success"
    steps = np.array(meta["step_times_ns"])
    assert len(steps) >= 20

    # frames: the latest recorded frame at or before each step, pixel-exact (wrist: exactly resized)
    for name in CAMERAS:
        frame_times = np.array(meta["frame_times_ns"][name])
        assert (frame_times <= steps).all() and (steps - frame_times <= 0.25e9).all()
        expected_index = np.searchsorted(recorded[name], steps, side="right") - 1
        np.testing.assert_array_equal(frame_times, recorded[name][expected_index])
        for k, stamp in enumerate(frame_times):
            published = robot.published[name][int(stamp)]
            np.testing.assert_array_equal(episode.frames[name][k], to_dataset_resolution(published, IMAGE_SIZE))
    np.testing.assert_array_equal(episode.frames["left"][3], robot.published["left"][meta["frame_times_ns"]["left"][3]])

    # actions: the published delta of each step; the gripper closes at the step where g took effect
    published = {stamp: delta for stamp, delta in robot.deltas()}
    expected = np.stack([published[int(s)] for s in steps])
    np.testing.assert_allclose(episode.actions[:, :6], expected, atol=1e-6)
    assert np.abs(expected[:, 0]).max() > 0.005 and np.abs(expected[:, 5]).max() > 0.02  # it moved and turned
    first_closed = next(t for t, g in robot.grippers()[g_pressed:] if g == 1.0)
    gripper = episode.actions[:, 6]
    closing_step = int(np.argmax(gripper == 1.0))
    np.testing.assert_array_equal(gripper, np.arange(len(steps)) >= closing_step)  # open, then closed
    # the closing step is the last command sent before the robot got the first "closed"
    assert steps[closing_step] <= first_closed < steps[closing_step + 1], (steps[closing_step], first_closed)

    # a training sample drawn from the dataset shows the same pixels and actions
    spec = SampleSpec(Window(obs_horizon=2, action_horizon=4, execute_steps=2), tuple(CAMERAS), image_size=24,
                      resize_shape=tuple(IMAGE_SIZE), crop_multiple=1)
    samples = EpisodeSamples(ds, [0], spec, ActionNormalizer.identity(7))
    t = 5
    sample = samples[t]
    assert sample["sample_id"].tolist() == [0, 0, t]
    left_t = robot.published["left"][meta["frame_times_ns"]["left"][t]]
    torch.testing.assert_close(sample["obs"][0, 1], frames_to_float(left_t)[:, :, 4:28])
    torch.testing.assert_close(sample["actions"], torch.from_numpy(np.concatenate(
        [expected[t:t + 4], episode.actions[t:t + 4, 6:]], axis=1)).float(), atol=1e-6, rtol=0)

    # re-running adds nothing; --include-failed adds the failed episode only
    again = subprocess.run(convert + ["--include-failed"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "1 already in the dataset" in again.stdout, again.stdout + again.stderr
    ds = open_dataset(dataset_dir)
    assert ds.num_episodes == 2 and ds.episode(1).metadata["outcome"] == "failure"
