"""The sim node as fast as it can step (simulated time on /clock, lockstep with its commander),
commanded by per-step deltas; and the scripted expert node driving it through the teleop
command interface."""
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from sim_test_helpers import CAMERAS, RunningSim, wait_for
from uwm_ros.sim.expert_node import ExpertNode
from uwm_ros.robot.spinning import spin

DELTA_TOPIC = "/sim_expert/delta_ee"
PERIOD_NS = 100_000_000


@pytest.fixture(scope="module")
def sim(ros_context):
    # the probe runs on simulated time like any consumer of a fast sim; a long lockstep timeout
    # makes "one command, one step" exact even on a busy machine
    running = RunningSim(ros_context, probe_sim_time=True, task="lift", real_time=False, command_mode="delta",
                         delta_topic=DELTA_TOPIC, lockstep_timeout_s=10.0, image_width=64, image_height=64)
    yield running
    running.close()


def test_simulated_time_on_clock_and_frame_stamps_one_period_apart(sim):
    probe = sim.probe
    probe.clear()
    wait_for(lambda: len(probe.images["wrist"]) >= 20 and len(probe.clock) >= 20, 60.0, "20 frame sets")
    clock = np.array(probe.snapshot(probe.clock))
    assert (np.diff(clock) > 0).all()
    for camera in CAMERAS:
        stamps = np.array([s for s, _ in probe.snapshot(probe.images[camera])])
        intervals = np.diff(stamps)
        # best-effort subscribers may miss a frame, never see one out of period
        assert (intervals > 0).all() and (intervals % PERIOD_NS == 0).all()
        assert np.mean(intervals == PERIOD_NS) > 0.8
        # (a frame set whose /clock message came in just before probe.clear() has no clock value here)
        on_clock = stamps[stamps >= clock[0]]
        assert on_clock.size and set(on_clock) <= set(clock.tolist()), f"{camera}: stamps not on the published clock"
    # consumers on use_sim_time see the frames as fresh (the policy's max_frame_age_s is 0.5 s)
    newest = probe.latest(probe.images["left"])[0]
    assert abs(probe.get_clock().now().nanoseconds - newest) < 5 * PERIOD_NS


def _waiting_status(probe):
    """The status of the step the sim is waiting on: no newer frame set arrives for 0.5 s."""
    status, pose = probe.latest(probe.statuses), probe.latest(probe.poses)
    if status is None or pose is None or status["stamp_ns"] != pose[0]:
        return None
    time.sleep(0.5)
    return status if probe.latest(probe.statuses) == status and probe.latest(probe.poses)[0] == pose[0] else None


def test_lockstep_delta_moves_the_hand_by_the_commanded_5cm(sim):
    probe = sim.probe
    publisher = probe.create_publisher(TwistStamped, DELTA_TOPIC, 10)
    try:
        wait_for(lambda: sim.node.count_publishers(DELTA_TOPIC) > 0, 10.0, "the sim to see a commander")
        first = wait_for(lambda: _waiting_status(probe), 30.0, "the sim waiting for a command")
        last_stamp, _, start, _ = probe.latest(probe.poses)
        commands = 12
        for i in range(commands):
            twist = TwistStamped()
            twist.header.frame_id, twist.header.stamp = "fr3_link0", probe.get_clock().now().to_msg()
            twist.twist.linear.y = 0.05 if i == 0 else 0.0  # 5 cm to the left in one step, then hold
            publisher.publish(twist)
            last_stamp = wait_for(lambda s=last_stamp: (probe.latest(probe.poses)[0] > s) and probe.latest(
                probe.poses)[0], 20.0, f"the step after command {i}")
        status = wait_for(lambda: next((s for s in probe.snapshot(probe.statuses) if s["stamp_ns"] == last_stamp),
                                       None), 10.0, "the status of the last step")
        assert status["episode"] == first["episode"]
        assert status["step"] - first["step"] == commands  # lockstep: exactly one step per command
        _, _, reached, _ = probe.latest(probe.poses)
        assert np.linalg.norm(reached - (start + [0.0, 0.05, 0.0])) < 0.01
    finally:
        probe.destroy_publisher(publisher)


def test_scripted_expert_node_lifts_the_cube(sim, ros_context):
    expert = ExpertNode(context=ros_context, parameter_overrides=[
        Parameter("use_sim_time", value=True),
        Parameter("workspace_min", value=[0.3, -0.3, 0.0]), Parameter("workspace_max", value=[0.8, 0.3, 0.4])])
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(expert)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    probe = sim.probe
    try:
        wait_for(lambda: sim.node.count_publishers(DELTA_TOPIC) > 0, 10.0, "the expert's delta publisher")
        response = probe.call(Trigger, "/uwm_sim/reset", Trigger.Request())
        episode = int(response.message.split()[-1])
        done = wait_for(lambda: next((s for s in probe.snapshot(probe.statuses)
                                      if s["episode"] == episode and s["success"]), None), 120.0,
                        "the expert to lift the cube")
        assert done["step"] <= sim.node.sim.task.max_steps
        assert done["task"] == "lift" and done["instruction"] == "lift the red cube"
    finally:
        executor.shutdown()
        spinner.join(10.0)
        expert.destroy_node()
