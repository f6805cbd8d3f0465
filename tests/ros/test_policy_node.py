"""The policy lifecycle node over real DDS: a SyntheticRobot publishes three 30 Hz camera streams
and the measured pose, and drives `uwm_policy` through its change_state / get_state services."""
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node

from doubles.synthetic_robot import twist6
from policy_test_helpers import assert_on_the_control_grid, make_checkpoint, pose7, same_rotation
from uwm_core.spatial import STATE_DIM, apply_delta, proprio_state
from uwm_ros.robot.franka_gripper import franka_msgs_available

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


def test_future_stamps_and_bad_quaternions_hold_and_one_bad_frame_blocks_nothing(make_system, tiny_checkpoint,
                                                                                capfd):
    system = make_system(tiny_checkpoint, params={"max_pose_age_s": 0.3})
    robot = system.robot
    assert robot.change_state("configure") and robot.change_state("activate")

    def wait_moving(within_s=20):
        t = time.monotonic()
        assert robot.wait_for(lambda: len(moving_since(robot, t)) >= 3, within_s), robot.latest_status()

    def assert_holds(reason_part):
        assert robot.wait_for(lambda: reason_part in ((robot.latest_status() or {}).get("hold_reason") or ""), 5), \
            robot.latest_status()
        time.sleep(0.5)
        held_at = time.monotonic()
        time.sleep(1.0)
        assert moving_since(robot, held_at) == []  # no motion while the fault lasts

    wait_moving()
    # the robot's clock runs 10 s ahead, then its pose topic dies: never taken for a fresh pose
    robot.pose_stamp_offset_s = 10.0
    assert_holds("stamped 10.00 s in the future")
    robot.publish_pose = False
    assert_holds("measured pose")
    robot.pose_stamp_offset_s, robot.publish_pose = 0.0, True
    wait_moving()

    # quaternions far from unit norm are refused, not silently normalised
    for norm in (2.0, 0.1):
        robot.quat_xyzw = np.array([1.0, 0.0, 0.0, 0.0]) * norm
        assert_holds(f"quaternion of norm {norm:.3g}")
        robot.quat_xyzw = np.array([1.0, 0.0, 0.0, 0.0])
        wait_moving()

    # frames stamped an hour ahead: refused with a message, the good frames after them are used at once
    log = []

    def refusals():
        log.extend(capfd.readouterr().err.splitlines())
        return [line for line in log if "frame stamped" in line]

    wrist = robot.cameras["wrist"]
    wrist.stamp_offset_s = 3600.0
    # sensor-data QoS keeps only the newest frames: one bad frame can be replaced before the node takes
    # it, so bad frames go out until the node has refused one
    assert robot.wait_for(refusals, 5), log
    wrist.stamp_offset_s = 0.0
    wait_moving(within_s=10)  # an hour ahead would block for an hour if such a frame were kept
    assert all("camera 'wrist'" in line and "in the future" in line for line in refusals()), refusals()


def test_speed_limits_and_parameter_changes_while_configured(make_system, tiny_checkpoint, capfd):
    from rclpy.parameter import Parameter

    for params, message in (
            ({"max_translation_per_step": 5.0}, "max_translation_per_step=5 and control_rate_hz=10 allow 50 m/s, "
                                                "above the Franka's Cartesian limit of 1.7 m/s"),
            ({"max_rotation_per_step": 0.5}, "allow 5 rad/s, above the Franka's Cartesian limit of 2.5 rad/s"),
            ({"control_rate_hz": 1000.0}, "control_rate_hz=1000 is above 100 Hz")):
        system = make_system(tiny_checkpoint, params=params)
        assert not system.robot.change_state("configure")
        assert message in capfd.readouterr().err
    swapped = make_system(tiny_checkpoint)
    topics = list(swapped.camera_topics.values())
    swapped.node.set_parameters([Parameter("camera_topics", value=[topics[1], topics[0], topics[2]])])
    assert not swapped.robot.change_state("configure")
    assert "camera_topics are not in the checkpoint's camera order ['left', 'right', 'wrist']" in capfd.readouterr().err
    swapped.node.set_parameters([Parameter("check_camera_names", value=False)])
    assert swapped.robot.change_state("configure")  # the user says these are the right views

    system = make_system(tiny_checkpoint)
    node, robot = system.node, system.robot
    assert robot.change_state("configure") and robot.change_state("activate")
    result = node.set_parameters([Parameter("max_translation_per_step", value=0.001)])[0]
    assert not result.successful and "read at configure, the node is active" in result.reason
    assert node._cmd.settings.max_translation_per_step == 0.02 and node.get_parameter(
        "max_translation_per_step").value == 0.02  # refused, not silently ignored
    assert robot.change_state("deactivate") and robot.change_state("cleanup")
    assert node.set_parameters([Parameter("max_translation_per_step", value=0.001),
                                Parameter("workspace_min", value=[0.9, 0.0, 0.0])])[0].successful
    assert not robot.change_state("configure")  # the inverted box is refused at configure, naming it
    assert "workspace_min=[0.9, 0.0, 0.0] and workspace_max" in capfd.readouterr().err
    assert node.set_parameters([Parameter("workspace_min", value=[0.25, -0.45, 0.02])])[0].successful
    assert robot.change_state("configure")
    assert node._cmd.settings.max_translation_per_step == 0.001  # applied at the next configure


def test_corrupt_jpeg_frames_hold_with_a_steady_reason_and_recover(make_system, tiny_checkpoint):
    system = make_system(tiny_checkpoint, camera_suffix={"wrist": "/compressed"})
    robot = system.robot
    # every wrist frame damaged: libjpeg reports "Corrupt JPEG data" (a warning OpenCV let through) or a
    # hard error, depending on where the bytes fall (the codec tests pin the warning case)
    robot.cameras["wrist"].corrupt_bytes = 200
    assert robot.change_state("configure") and robot.change_state("activate")
    assert robot.wait_for(lambda: "cannot decode JPEG" in ((robot.latest_status() or {}).get("hold_reason") or ""), 20)
    started = time.monotonic()
    time.sleep(2.0)
    assert moving_since(robot, 0.0) == []  # never moved on a garbled picture
    reasons = [s.get("hold_reason") or "" for at, s in robot.snapshot("status") if at > started]
    assert any("camera 'wrist'" in r and "cannot decode JPEG" in r for r in reasons), reasons
    assert not any("waiting for" in r for r in reasons), reasons  # the reason does not flip between chunks
    robot.cameras["wrist"].corrupt_bytes = 0
    t = time.monotonic()
    assert robot.wait_for(lambda: len(moving_since(robot, t)) >= 3, 20), robot.latest_status()


def test_skewed_stamps_prevent_inference(make_system, tiny_checkpoint, recording_loader, capfd):
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
    warnings = [line for line in capfd.readouterr().err.splitlines() if "no usable observation for" in line]
    assert warnings and "[WARN]" in warnings[0] and "not synchronised" in warnings[0]
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
    diagnostics = []
    robot.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 50)
    assert robot.change_state("configure") and robot.change_state("activate")
    assert robot.wait_for(lambda: robot.get_state() == "unconfigured", 30)
    # the fault is the last word on ~/status and /diagnostics, in one line
    assert robot.wait_for(lambda: (robot.latest_status() or {}).get("fault"), 5), robot.latest_status()
    last = robot.latest_status()
    assert last["state"] == "errorprocessing" and "non-finite actions (first at step 5, dim 1)" in last["fault"]
    assert "\n" not in last["fault"]
    mine = [d.status[0] for d in list(diagnostics) if d.status[0].name.startswith(f"{system.ns}/uwm_policy")]
    assert mine[-1].level == DiagnosticStatus.ERROR and mine[-1].message.startswith("fault: model produced")
    transitions = [t for _, t in robot.snapshot("transitions")]
    assert ("deactivating", "errorprocessing") in transitions and ("errorprocessing", "unconfigured") in transitions
    deltas, targets = robot.snapshot("deltas"), robot.snapshot("targets")
    assert deltas and all(np.isfinite(twist6(m)).all() for _, m in deltas)
    assert all(np.isfinite(pose7(m)[0]).all() for _, m in targets)
    np.testing.assert_array_equal(pose7(targets[-1][1])[0], pose7(targets[-2][1])[0])  # held
    assert system.node._wm is None
    assert_quiet(robot)


def test_proprioceptive_state_of_each_frame_set_reaches_the_model(make_system, tmp_path, recording_loader):
    """A checkpoint trained with state gets, per frame set, the measured pose at the frames' time
    and the gripper command in force, as uwm-bag2dataset stores them."""
    checkpoint = make_checkpoint(tmp_path / "state", "tiny", {"action_horizon": 16, "execute_steps": 8,
                                                              "use_state": True, "state_dim": STATE_DIM})
    load = recording_loader()
    system = make_system(checkpoint, load_world_model=load)
    robot = system.robot
    robot.follow_target = True  # its measured pose moves to each target it receives
    start = proprio_state(robot.position, robot.quat_xyzw, 0.0)
    assert robot.change_state("configure") and robot.change_state("activate")
    assert robot.wait_for(lambda: len(load.models[0].calls) >= 4, 30), robot.latest_status()
    assert robot.change_state("deactivate")
    calls = load.models[0].calls
    np.testing.assert_array_equal(calls[0][3], np.zeros((2, STATE_DIM)))  # the warm-up
    # the measured pose is the latest target the robot received (or where it started)
    reachable = [start] + [proprio_state(*pose7(m), 0.0) for _, m in robot.snapshot("targets")]
    grippers = {0.0} | {m.data for _, m in robot.snapshot("gripper")}
    for _, _, _, state in calls[1:]:
        assert state.shape == (2, STATE_DIM)
        for row in state:
            assert min(np.abs(row[:9] - r[:9]).max() for r in reachable) < 1e-6, row
            assert any(abs(row[9] - g) < 1e-6 for g in grippers), row[9]
    np.testing.assert_allclose(calls[1][3][0], start, atol=1e-6)  # before the first command
    assert np.abs(calls[-1][3][-1, :3] - start[:3]).max() > 0  # later chunks see the arm where it moved to
    sent = [m.data for _, m in robot.snapshot("gripper")]
    assert min(abs(calls[-1][3][-1, 9] - g) for g in sent) < 1e-6  # a gripper command the node sent


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
