"""uwm_ros.robot.command_interface (shared by the policy and teleop nodes) over real DDS: clamps,
workspace box, pose checks, hold and reset, delta mode."""
import threading
import time

import numpy as np
import pytest
import rclpy.duration
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from std_msgs.msg import Float32

from doubles.synthetic_robot import twist6
from policy_test_helpers import pose7, same_rotation
from uwm_core.spatial import apply_delta
from uwm_ros.robot import CommandInterface
from uwm_ros.robot.command_settings import declare_command_parameters
from uwm_ros.robot.franka_gripper import franka_msgs_available
from uwm_ros.robot.spinning import spin

START = (np.array([0.5, 0.0, 0.3]), np.array([1.0, 0.0, 0.0, 0.0]))


class Bench:
    """A node with a CommandInterface, a measured-pose publisher and recorders of what it sends."""

    count = 0

    def __init__(self, **params):
        Bench.count += 1
        ns = f"/ci{Bench.count}"
        values = {"ee_pose_topic": f"{ns}/pose", "target_pose_topic": f"{ns}/target", "gripper_topic": f"{ns}/grip",
                  "max_translation_per_step": 0.01, "max_rotation_per_step": 0.05,
                  "workspace_min": [0.3, -0.2, 0.1], "workspace_max": [0.6, 0.2, 0.5], **params}
        self.node = Node("commander", namespace=ns,
                         parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        declare_command_parameters(self.node)
        self.out = CommandInterface(self.node)
        self.probe = Node("probe", namespace=ns)
        self.pose_pub = self.probe.create_publisher(PoseStamped, f"{ns}/pose", qos_profile_sensor_data)
        self.received = {"delta": [], "target": [], "grip": []}
        subscriptions = {
            "delta": self.probe.create_subscription(TwistStamped, f"{ns}/commander/delta_ee",
                                                    lambda m: self.received["delta"].append(m), 10),
            "target": self.probe.create_subscription(PoseStamped, f"{ns}/target",
                                                     lambda m: self.received["target"].append(m), 10),
            "grip": self.probe.create_subscription(Float32, f"{ns}/grip", lambda m: self.received["grip"].append(m), 10),
        }
        self.measured = None  # (position, quat, frame) published at 50 Hz once set
        self.stamp_offset_s = 0.0  # added to the measured pose's stamp
        self.probe.create_timer(0.02, self._publish_measured)
        # One thread, callbacks in arrival order. A MultiThreadedExecutor's spin thread polls ready
        # entities of a busy mutually exclusive group in a loop and starved the pose timer for 0.4-0.7 s;
        # only the gripper action server (its execute blocks) needs a second thread.
        self.executor = (MultiThreadedExecutor(num_threads=2) if values.get("gripper_mode") == "franka_action"
                         else SingleThreadedExecutor())
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self.thread.start()
        # discovery: every publisher the commander has is matched with the probe (and the pose with it)
        expected = [subscriptions["delta"]]
        expected += [subscriptions["target"]] if values.get("command_mode", "pose_target") != "delta" else []
        expected += [subscriptions["grip"]] if values.get("gripper_mode") != "none" else []
        deadline = time.monotonic() + 10
        while not (all(sub.get_publisher_count() for sub in expected) and self.pose_pub.get_subscription_count()):
            assert time.monotonic() < deadline, "commander and probe did not discover each other within 10 s"
            time.sleep(0.01)

    def publish_pose(self, position, quat, frame="fr3_link0"):
        """Publish this pose from now on and wait until the interface has taken it in (or, in
        another frame, refused it): discovery may take longer than one publishing period."""
        self.measured = (position, quat, frame)

        def arrived():
            if frame != "fr3_link0":
                return f"frame {frame!r}" in (self.out.pose_problem() or "")
            pose = self.out.measured_pose()
            return pose is not None and np.allclose(pose.position, position) and self.out.pose_problem() is None

        deadline = time.monotonic() + 10
        while not arrived():
            assert time.monotonic() < deadline, f"the measured pose {position} in {frame} never reached the interface"
            time.sleep(0.01)

    def _publish_measured(self):
        if self.measured is None:
            return
        position, quat, frame = self.measured
        msg = PoseStamped()
        stamp = self.probe.get_clock().now() + rclpy.duration.Duration(nanoseconds=int(self.stamp_offset_s * 1e9))
        msg.header.stamp, msg.header.frame_id = stamp.to_msg(), frame
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
        o = msg.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in quat)
        self.pose_pub.publish(msg)

    def settle(self, count, kind="delta"):
        deadline = time.monotonic() + 5
        while len(self.received[kind]) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received[kind]

    def close(self):
        self.executor.shutdown()
        self.thread.join(5)
        self.out.destroy()
        self.node.destroy_node()
        self.probe.destroy_node()


@pytest.fixture
def bench(ros):
    made = []

    def make(**params):
        made.append(Bench(**params))
        return made[-1]

    yield make
    for b in made:
        b.close()


def test_pose_target_clamps_chains_and_keeps_the_workspace_box(bench):
    b = bench()
    assert b.out.send([0.01, 0, 0, 0, 0, 0, 0.0]) is None  # no measured pose yet: nothing is sent
    assert "no measured pose" in b.out.hold_reason
    b.publish_pose(*START)
    sent = b.out.send([0.05, 0.0, 0.0, 0.0, 0.0, 0.2, 1.0])  # 5 cm and 0.2 rad: clamped to 1 cm, 0.05 rad
    np.testing.assert_allclose(sent.delta, [0.01, 0, 0, 0, 0, 0.05])
    position, quat = apply_delta(*START, [0.01, 0, 0, 0, 0, 0.05])
    np.testing.assert_allclose(sent.target_position, position)
    holds = []
    for _ in range(20):  # keep pushing +x: the target stops at workspace_max x = 0.6
        time.sleep(0.02)  # a control rate, not a burst (the publisher keeps the last 10)
        sent = b.out.send([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
        holds += [b.out.hold_reason] if sent is None else []
    assert not holds, holds
    assert sent.target_position[0] == pytest.approx(0.6) and sent.delta[0] == 0.0
    targets = b.settle(21, "target")
    deltas = b.settle(21)
    assert len(targets) == 21 and all(m.header.frame_id == "fr3_link0" for m in targets)
    for previous, delta, target in zip(targets[:-1], deltas[1:], targets[1:]):  # each target = last one + delta
        position, quat = apply_delta(*pose7(previous), twist6(delta))
        np.testing.assert_allclose(pose7(target)[0], position, atol=1e-12)
        assert same_rotation(pose7(target)[1], quat)
    assert [m.data for m in b.settle(21, "grip")][:2] == [1.0, 1.0]


def test_a_pose_outside_the_box_may_only_move_back_towards_it(bench):
    b = bench()
    b.publish_pose([0.7, 0.0, 0.3], START[1])  # 10 cm beyond workspace_max x
    assert b.out.send([0.005, 0, 0, 0, 0, 0, 0]).delta[0] == 0.0  # outwards: blocked, no jump into the box
    assert b.out.send([-0.005, 0, 0, 0, 0, 0, 0]).target_position[0] == pytest.approx(0.695)


def test_hold_reset_refused_frames_and_non_finite_actions(bench):
    b = bench()
    b.publish_pose(*START)
    first = b.out.send([0.01, 0, 0, 0, 0, 0, 0]).target_position
    assert b.out.hold("test") and not b.out.hold("again")  # the target once, then nothing
    targets = b.settle(2, "target")
    np.testing.assert_array_equal(pose7(targets[1])[0], first)
    assert np.all(twist6(b.settle(2)[1]) == 0)
    time.sleep(0.3)
    assert len(b.received["target"]) == 2
    b.out.reset()  # the next step starts from the measured pose again
    b.publish_pose([0.4, 0.1, 0.2], START[1])
    np.testing.assert_allclose(b.out.send([0.0, 0.01, 0, 0, 0, 0, 0]).target_position, [0.4, 0.11, 0.2])
    with pytest.raises(ValueError, match="non-finite"):
        b.out.send([np.nan, 0, 0, 0, 0, 0, 0])
    b.publish_pose(*START, frame="world")
    assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is None
    assert "frame 'world'" in b.out.hold_reason and "'fr3_link0'" in b.out.hold_reason


def test_future_stamps_and_non_unit_quaternions_are_refused_until_good_poses_return(bench):
    b = bench()
    b.publish_pose(*START)
    assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is not None

    def refused_while(problem_part):
        deadline = time.monotonic() + 5
        while problem_part not in (b.out.pose_problem() or ""):
            assert time.monotonic() < deadline, b.out.pose_problem()
            time.sleep(0.01)
        sent_before = len(b.settle(1, "target"))
        for _ in range(5):  # every step holds while the poses are refused
            assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is None and problem_part in b.out.hold_reason
            time.sleep(0.02)
        time.sleep(0.2)
        assert len(b.received["target"]) <= sent_before + 1  # the one hold message at most

    # a pose stamped 10 s ahead, then the topic silent: never mistaken for a fresh pose
    b.stamp_offset_s = 10.0
    refused_while("stamped 10.00 s in the future (max_future_stamp_s=0.1)")
    b.measured = None  # the pose topic dies: still holding, now because the last good pose is old
    time.sleep(0.6)
    assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is None
    b.stamp_offset_s = 0.0
    b.publish_pose(*START)
    assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is not None  # recovered
    for norm in (2.0, 0.1, 2e-6):
        b.measured = (START[0], START[1] * norm, "fr3_link0")
        refused_while(f"quaternion of norm {norm:.3g}, not a unit one")
        b.publish_pose(*START)
        assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is not None
    b.publish_pose(START[0], START[1] * 1.005)  # within the 1 % tolerance: accepted, normalised
    np.testing.assert_allclose(np.linalg.norm(b.out.measured_pose().quat_xyzw), 1.0)


def test_a_target_the_robot_does_not_follow_holds_and_reseeds_from_the_measured_pose(bench, capfd):
    b = bench()
    b.publish_pose(*START)
    assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is not None
    targets_before = len(b.settle(1, "target"))
    jumped = START[0] + np.array([0.0, 0.0, 0.15])  # the measured pose jumps 15 cm (inside the box)
    b.publish_pose(jumped, START[1])
    assert b.out.send([0.01, 0, 0, 0, 0, 0, 0]) is None
    assert "the commanded target is 0.15" in b.out.hold_reason and "not following" in b.out.hold_reason
    time.sleep(0.3)
    assert len(b.received["target"]) == targets_before  # the far target is not sent again
    assert np.all(twist6(b.received["delta"][-1]) == 0)  # the hold's zero step
    sent = b.out.send([0.01, 0, 0, 0, 0, 0, 0])  # re-seeded: the next target starts from the measured pose
    np.testing.assert_allclose(sent.target_position, jumped + [0.01, 0, 0])
    # the orientation too: 0.6 rad about x from the target
    turned = apply_delta(jumped, START[1], [0, 0, 0, 0.6, 0, 0])[1]
    b.publish_pose(jumped, turned)
    deadline = time.monotonic() + 5
    while not same_rotation(b.out.measured_pose().quat_xyzw, turned):  # the position did not change
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert b.out.send([0.0, 0, 0, 0, 0, 0, 0]) is None and "0.60 rad" in b.out.hold_reason
    assert "not following" in capfd.readouterr().err


def test_clamped_steps_are_counted_and_far_beyond_the_clamp_warns(bench, capfd):
    b = bench()
    b.publish_pose(*START)
    b.out.send([0.005, 0, 0, 0, 0, 0, 0])  # within the clamps
    b.out.send([0.02, 0, 0, 0, 0, 0, 0])  # twice the 1 cm clamp: counted, no warning
    assert b.out.status()["steps_clamped"] == 1 and "check the checkpoint" not in capfd.readouterr().err
    sent = b.out.send([1e6, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(sent.delta[:3], [0.01, 0, 0])
    assert b.out.status()["steps_clamped"] == 2
    err = capfd.readouterr().err
    assert "action of 1e+06 m and 0 rad per step clamped to 0.01 m" in err and "check the checkpoint" in err


def test_delta_mode_steps_from_the_measured_pose_and_publishes_no_target(bench):
    b = bench(command_mode="delta", gripper_mode="none")
    b.publish_pose([0.59, 0.0, 0.3], START[1])
    sent = b.out.send([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(sent.delta[:3], [0.01, 0, 0], atol=1e-12)  # clamp, box at 0.6 from 0.59
    sent = b.out.send([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # measured pose unchanged: same step again
    np.testing.assert_allclose(sent.delta[:3], [0.01, 0, 0], atol=1e-12)
    assert sent.target_position is None
    assert len(b.settle(2)) == 2
    time.sleep(0.2)
    assert b.received["target"] == [] and b.received["grip"] == []
    assert b.node.count_publishers(f"{b.node.get_namespace()}/target") == 0


@pytest.mark.skipif(not franka_msgs_available(),
                    reason="franka_msgs is not installed here (franka_ros2; present in the docker/ robot image)")
def test_franka_gripper_sends_grasp_and_move_on_state_changes_and_cancels_obsolete_goals(bench):
    from franka_msgs.action import Grasp, Move
    from rclpy.action import ActionServer, CancelResponse

    b = bench(gripper_mode="franka_action", gripper_action_ns="/franka_gripper_under_test")
    goals = []

    def execute(handle):
        goals.append((type(handle.request).__name__, handle.request.width))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not handle.is_cancel_requested:
            time.sleep(0.01)
        if handle.is_cancel_requested:
            handle.canceled()
            goals.append(("canceled", handle.request.width))
        else:
            handle.succeed()
        return (Grasp if "Grasp" in type(handle.request).__name__ else Move).Result(success=True)

    ns = b.out.settings.gripper_action_ns
    servers = [ActionServer(b.probe, Grasp, f"{ns}/grasp", execute, cancel_callback=lambda _h: CancelResponse.ACCEPT),
               ActionServer(b.probe, Move, f"{ns}/move", execute, cancel_callback=lambda _h: CancelResponse.ACCEPT)]
    time.sleep(1.0)
    b.publish_pose(*START)
    for g in (0.0, 0.1, 0.9, 0.95, 0.2):  # open, (still open), close, (still closed), open
        b.out.send([0, 0, 0, 0, 0, 0, g])
        time.sleep(0.3)
    time.sleep(1.5)
    names = [name for name, _ in goals]
    assert names.count("Move_Goal") == 2 and names.count("Grasp_Goal") == 1, goals
    assert ("canceled", 0.0) in goals  # the grasp still running when "open" came was cancelled
    for server in servers:
        server.destroy()
