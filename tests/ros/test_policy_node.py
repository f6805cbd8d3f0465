"""The policy lifecycle node over real DDS: a SyntheticRobot publishes three 30 Hz camera streams
and the measured pose, and drives `uwm_policy` through its change_state / get_state services."""
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node

from policy_test_helpers import assert_on_the_control_grid, pose7, same_rotation, twist6
from uwm_core.spatial import apply_delta
from uwm_teleop.command_interface import franka_msgs_available

EXECUTE_STEPS = 8  # the tiny test checkpoint's (paper-like: 16 actions, execute 8)


def expected_deltas(status, model, execute_steps):
    """The deltas the node must have sent: rows first_index..execute_steps-1 of every finished chunk,
    taken from the chunks the (recorded) model returned. Job n is model call n (call 0 = warm-up)."""
    rows = []
    for chunk in status["recent_chunks"]:
        assert chunk["executed"] == list(range(chunk["first_index"], execute_steps)), chunk
        rows.append(model.calls[chunk["id"]][2][chunk["first_index"]:execute_steps, :6])
    return np.concatenate(rows)


def assert_sent_in_order(sent, expected):
    """``expected`` appears as one contiguous run of the sent deltas (float32 actions, sent as float64),
    leaving out the zero deltas that mark holds (stalls while a chunk is computed)."""
    sent = sent[np.any(sent != 0, axis=1)]
    starts = np.flatnonzero(np.all(np.isclose(sent, expected[0], rtol=0, atol=1e-7), axis=1))
    assert starts.size, f"the first expected delta {expected[0]} was never sent"
    np.testing.assert_allclose(sent[starts[-1]:starts[-1] + len(expected)], expected, rtol=0, atol=1e-7)


def assert_quiet(robot, settle_s=0.3, watch_s=0.7):
    """No command reaches the robot any more (once those in flight have arrived)."""
    time.sleep(settle_s)
    count = len(robot.snapshot("deltas")) + len(robot.snapshot("targets"))
    time.sleep(watch_s)
    assert len(robot.snapshot("deltas")) + len(robot.snapshot("targets")) == count


def moving_since(robot, t):
    return [m for at, m in robot.snapshot("deltas") if at >= t and np.any(twist6(m) != 0)]


def test_lifecycle_commands_replanning_and_reconfigure(make_system, tiny_checkpoint, recording_loader):
    load = recording_loader()
    system = make_system(tiny_checkpoint, load_world_model=load)
    robot = system.robot
    assert robot.get_state() == "unconfigured"
    assert robot.change_state("configure")
    assert robot.get_state() == "inactive"
    time.sleep(1.0)  # cameras and pose are streaming: an inactive node commands nothing
    assert robot.snapshot("deltas") == [] and robot.snapshot("targets") == [] and robot.snapshot("gripper") == []
    assert len(load.models[0].calls) == 1  # the warm-up only

    assert robot.change_state("activate")
    assert robot.get_state() == "active"
    assert robot.wait_for(lambda: len(robot.snapshot("deltas")) >= 30, 20), robot.latest_status()
    deltas, targets = robot.snapshot("deltas"), robot.snapshot("targets")
    grippers = robot.snapshot("gripper")

    # control rate: one delta, one target and one gripper command per 0.1 s slot, never two in one
    assert_on_the_control_grid([m for _, m in deltas if np.any(twist6(m) != 0)])
    assert all(0.0 <= m.data <= 1.0 for _, m in grippers)

    # the first target is the measured pose composed with the first delta; later ones chain on the target
    position, quat = apply_delta(robot.position, robot.quat_xyzw, twist6(deltas[0][1]))
    first_position, first_quat = pose7(targets[0][1])
    np.testing.assert_allclose(first_position, position, atol=1e-12)
    assert same_rotation(first_quat, quat)
    assert targets[0][1].header.frame_id == "fr3_link0"
    for (_, previous), (_, delta), (_, target) in zip(targets[:-1], deltas[1:], targets[1:]):
        position, quat = apply_delta(*pose7(previous), twist6(delta))
        np.testing.assert_allclose(pose7(target)[0], position, atol=1e-12)
        assert same_rotation(pose7(target)[1], quat)

    # receding horizon: every chunk ran to action execute_steps - 1, then the next one took over;
    # the deltas sent are exactly those rows of the chunks the model returned
    status = robot.latest_status()
    assert len(status["recent_chunks"]) >= 3, status
    sent = np.array([twist6(m) for _, m in robot.snapshot("deltas")])
    assert_sent_in_order(sent, expected_deltas(status, load.models[0], EXECUTE_STEPS))

    # deactivate: the current target once more and a zero delta, then nothing
    assert robot.change_state("deactivate")
    time.sleep(1.0)
    deltas, targets = robot.snapshot("deltas"), robot.snapshot("targets")
    assert np.all(twist6(deltas[-1][1]) == 0)
    np.testing.assert_array_equal(pose7(targets[-1][1])[0], pose7(targets[-2][1])[0])
    assert_quiet(robot)
    assert robot.get_state() == "inactive"
    # a delta, a target and a gripper command per executed tick; a zero delta and the target per hold
    executed = [m for _, m in deltas if np.any(twist6(m) != 0)]
    assert len(deltas) == len(targets) and len(executed) == len(robot.snapshot("gripper"))

    # cleanup frees the model; a second configure loads it again and control works again
    assert robot.change_state("cleanup")
    assert robot.get_state() == "unconfigured"
    assert system.node._wm is None
    assert robot.change_state("configure") and robot.change_state("activate")
    before = len(robot.snapshot("deltas"))
    assert robot.wait_for(lambda: len(robot.snapshot("deltas")) >= before + 5, 20)
    # re-activated: seeded again from the measured pose, not from the old target
    new_first = robot.snapshot("targets")[len(targets)][1]
    position, _ = apply_delta(robot.position, robot.quat_xyzw, twist6(robot.snapshot("deltas")[before][1]))
    np.testing.assert_allclose(pose7(new_first)[0], position, atol=1e-12)


def test_safety_holds_stale_camera_pose_frame_and_second_commander(make_system, tiny_checkpoint):
    system = make_system(tiny_checkpoint, params={"max_frame_age_s": 0.3, "max_pose_age_s": 0.3})
    robot = system.robot
    assert robot.change_state("configure") and robot.change_state("activate")

    def wait_moving():
        t = time.monotonic()
        assert robot.wait_for(lambda: len(moving_since(robot, t)) >= 3, 20), robot.latest_status()

    def assert_stops(stopped_at, within_s, reason_part):
        time.sleep(within_s + 1.0)
        # one command per control slot at most (the grid), so a count bounds the time it moved on
        moving = [at for at, m in robot.snapshot("deltas") if at > stopped_at and np.any(twist6(m) != 0)]
        assert len(moving) <= round(within_s / 0.1) + 1, len(moving)
        assert_quiet(robot)  # and nothing at all since
        status = robot.latest_status()
        assert status["holding"] and reason_part in status["hold_reason"], status["hold_reason"]

    # one camera stops: motion stops within max_frame_age_s
    wait_moving()
    robot.cameras["wrist"].enabled = False
    assert_stops(time.monotonic(), 0.3, "camera 'wrist'")
    robot.cameras["wrist"].enabled = True
    wait_moving()

    # the measured pose arrives in another frame: refused, the hold names the frame
    robot.pose_frame = "world"
    assert_stops(time.monotonic(), 0.1, "'world'")
    robot.pose_frame = "fr3_link0"
    wait_moving()

    # the pose topic vanishes: motion stops within max_pose_age_s
    robot.publish_pose = False
    assert_stops(time.monotonic(), 0.3, "measured pose")
    robot.publish_pose = True
    wait_moving()

    # a second node publishing on the target topic is a fault: the policy holds, naming it
    intruder = Node("intruder", namespace=system.ns)
    intruder.create_publisher(PoseStamped, system.target_topic, 10)
    try:
        assert_stops(time.monotonic(), 1.2, f"{system.ns}/intruder")
    finally:
        intruder.destroy_node()
    wait_moving()


def test_skewed_stamps_prevent_inference(make_system, tiny_checkpoint, recording_loader):
    load = recording_loader()
    system = make_system(tiny_checkpoint, load_world_model=load, params={"max_frame_skew_s": 0.01})
    robot = system.robot
    robot.cameras["right"].stamp_offset_s = -0.016  # half a frame period out of phase with the others
    assert robot.change_state("configure") and robot.change_state("activate")
    time.sleep(2.0)
    assert robot.snapshot("deltas") == [] and robot.snapshot("targets") == []
    assert len(load.models[0].calls) == 1  # warm-up only: no inference on unsynchronised frames
    status = robot.latest_status()
    assert "not synchronised" in status["hold_reason"] and "camera 'right'" in status["hold_reason"]
    robot.cameras["right"].stamp_offset_s = 0.0  # in phase again: the same node runs
    assert robot.wait_for(lambda: len(robot.snapshot("deltas")) >= 3, 20)
    assert robot.latest_status()["frame_skew_s"] <= 0.01


def test_bad_encoding_reported_and_robot_holds(make_system, tiny_checkpoint, capfd):
    system = make_system(tiny_checkpoint)
    robot = system.robot
    robot.cameras["left"].encoding = "yuv422"
    assert robot.change_state("configure") and robot.change_state("activate")
    time.sleep(1.5)
    assert robot.snapshot("deltas") == [] and robot.snapshot("targets") == []
    status = robot.latest_status()
    assert "camera 'left'" in status["hold_reason"] and "'yuv422'" in status["hold_reason"]
    assert "unsupported image encoding 'yuv422'" in capfd.readouterr().err

    # a good encoding (bgr8 with padded rows) lets it run; a bad one mid-run stops it at once
    robot.cameras["left"].encoding, robot.cameras["left"].pad_bytes = "bgr8", 5
    t = time.monotonic()
    assert robot.wait_for(lambda: len(moving_since(robot, t)) >= 3, 20), robot.latest_status()
    robot.cameras["left"].encoding = "16UC1"
    stopped = time.monotonic()
    time.sleep(1.0)
    moving = [at for at, m in robot.snapshot("deltas") if at > stopped and np.any(twist6(m) != 0)]
    assert len(moving) <= 3, len(moving)  # slots until the first bad frame arrives, then nothing
    assert "'16UC1'" in robot.latest_status()["hold_reason"]


def test_delta_mode_mixed_image_transports_and_predicted_frames(make_system, tiny_checkpoint, recording_loader):
    load = recording_loader()
    system = make_system(tiny_checkpoint, load_world_model=load,
                         camera_suffix={"wrist": "/compressed"},
                         params={"command_mode": "delta", "publish_predicted_frames": True,
                                 "predicted_frames_period_s": 0.5})
    robot = system.robot
    robot.cameras["left"].encoding = "mono8"
    robot.cameras["right"].encoding, robot.cameras["right"].pad_bytes = "bgra8", 4
    assert robot.change_state("configure") and robot.change_state("activate")
    assert robot.wait_for(lambda: len(robot.snapshot("deltas")) >= 30 and robot.snapshot("predicted_frames"), 30)
    assert robot.snapshot("targets") == []
    assert system.node.count_publishers(system.target_topic) == 0  # delta mode never publishes a target
    assert_on_the_control_grid([m for _, m in robot.snapshot("deltas") if np.any(twist6(m) != 0)])
    status = robot.latest_status()
    sent = np.array([twist6(m) for _, m in robot.snapshot("deltas")])
    assert_sent_in_order(sent, expected_deltas(status, load.models[0], EXECUTE_STEPS))

    # the preview: one column per camera, the current frame above the two predicted next frames
    _, frame = robot.snapshot("predicted_frames")[-1]
    assert (frame.encoding, frame.height, frame.width) == ("rgb8", 3 * 32, 3 * 32)
    assert frame.header.frame_id.startswith("chunk_")


def test_slow_model_keeps_tick_period_and_skips_late_actions(make_system, tiny_checkpoint, recording_loader):
    load = recording_loader(delay_s=0.2)  # every chunk takes longer than two control periods
    # the whole 16-action chunk as execution window: pipelining stays possible on a loaded CPU
    system = make_system(tiny_checkpoint, load_world_model=load, params={"execute_steps": 16})
    robot = system.robot
    assert robot.change_state("configure") and robot.change_state("activate")
    def finished_chunks():
        return len((robot.latest_status() or {}).get("recent_chunks", []))

    assert robot.wait_for(lambda: finished_chunks() >= 5, 30), robot.latest_status()
    status = robot.latest_status()
    # ticks keep to their grid although each inference spans several of them (timing: bench/node_timing.py)
    assert_on_the_control_grid([m for _, m in robot.snapshot("deltas") if np.any(twist6(m) != 0)])
    assert status["inference_latency_p50_s"] > 0.2
    # a chunk that takes over from a moving robot starts at the action for the current tick: the
    # actions for the ticks that passed during its inference are skipped, never executed late
    skipping = [c for c in status["recent_chunks"] if c["first_index"] > 0]
    assert len(skipping) >= 3 and all(c["first_index"] >= 2 for c in skipping), status["recent_chunks"]
    assert status["actions_skipped"] >= sum(c["first_index"] for c in skipping)
    sent = np.array([twist6(m) for _, m in robot.snapshot("deltas")])
    assert_sent_in_order(sent, expected_deltas(status, load.models[0], 16))


def test_non_finite_actions_stop_robot_and_error_transition(make_system, tiny_checkpoint, recording_loader):
    def nan_from_third_chunk(call, actions):
        if call >= 3:
            actions = actions.copy()
            actions[5, 1] = np.nan
        return actions

    load = recording_loader(alter=nan_from_third_chunk)
    system = make_system(tiny_checkpoint, load_world_model=load)
    robot = system.robot
    assert robot.change_state("configure") and robot.change_state("activate")
    assert robot.wait_for(lambda: robot.get_state() == "unconfigured", 30)
    transitions = [t for _, t in robot.snapshot("transitions")]
    assert ("deactivating", "errorprocessing") in transitions and ("errorprocessing", "unconfigured") in transitions
    deltas, targets = robot.snapshot("deltas"), robot.snapshot("targets")
    assert deltas and all(np.isfinite(twist6(m)).all() for _, m in deltas)
    assert all(np.isfinite(pose7(m)[0]).all() for _, m in targets)
    np.testing.assert_array_equal(pose7(targets[-1][1])[0], pose7(targets[-2][1])[0])  # held
    assert system.node._wm is None
    assert_quiet(robot)


def test_bad_configuration_fails_configure_with_one_clear_line(make_system, tiny_checkpoint, tmp_path, capfd):
    from rclpy.parameter import Parameter

    missing = str(tmp_path / "no_such_checkpoint")
    system = make_system(missing)
    robot = system.robot
    assert not robot.change_state("configure")
    assert robot.get_state() == "unconfigured"
    err = capfd.readouterr().err
    assert err.count("configure failed") == 1 and f"{missing}: checkpoint directory does not exist" in err

    node = system.node
    two_topics = list(system.camera_topics.values())[:2]
    node.set_parameters([Parameter("checkpoint", value=tiny_checkpoint), Parameter("camera_topics", value=two_topics)])
    assert not robot.change_state("configure")
    err = capfd.readouterr().err
    assert "camera_topics has 2 topics" in err and "3 cameras ['left', 'right', 'wrist']" in err

    node.set_parameters([Parameter("camera_topics", value=list(system.camera_topics.values())),
                         Parameter("command_mode", value="joint_velocity")])
    assert not robot.change_state("configure")
    assert "command_mode='joint_velocity'" in capfd.readouterr().err

    if not franka_msgs_available():
        node.set_parameters([Parameter("command_mode", value="pose_target"),
                             Parameter("gripper_mode", value="franka_action")])
        assert not robot.change_state("configure")
        assert "gripper_mode='franka_action' needs the franka_msgs package" in capfd.readouterr().err

    # nothing was left half-built: the corrected node configures and runs
    node.set_parameters([Parameter("command_mode", value="pose_target"), Parameter("gripper_mode", value="topic")])
    assert robot.change_state("configure") and robot.change_state("activate")
    assert robot.wait_for(lambda: len(robot.snapshot("deltas")) >= 3, 20)
    assert len(list(node.subscriptions)) == len(system.camera_topics) + 1  # cameras + pose: no leftovers
