"""Helpers of the sim tests: a real SimNode (MuJoCo, headless rendering) stepping in a thread and a
probe node recording what it publishes, talking over DDS (loopback)."""
import collections
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String

from uwm_core.image_codec import decode_image_msg
from uwm_ros.sim.ros_interface import EPISODE_QOS, STATE_QOS, parse_episode, pose_arrays
from uwm_ros.sim.node import SimNode
from uwm_ros.robot.spinning import spin

CAMERAS = ("left", "right", "wrist")
POSE_TOPIC = "/franka_robot_state_broadcaster/current_pose"
BASE_FRAME = "fr3_link0"


def wait_for(predicate, timeout_s: float, what: str):
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stamp_ns(header) -> int:
    return Time.from_msg(header.stamp).nanoseconds


class Probe(Node):
    """Records what the sim publishes (the way the policy node and recorder subscribe)."""

    def __init__(self, context, use_sim_time=False):
        super().__init__("sim_probe", context=context,
                         parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
        self.lock = threading.Lock()
        self.images = {c: collections.deque(maxlen=200) for c in CAMERAS}
        self.poses = collections.deque(maxlen=200)
        self.fingers = collections.deque(maxlen=200)
        self.objects = collections.deque(maxlen=200)
        self.statuses = collections.deque(maxlen=200)
        self.clock = collections.deque(maxlen=200)
        self.success = collections.deque(maxlen=200)
        for camera in CAMERAS:
            self.create_subscription(Image, f"/cameras/{camera}/image_raw",
                                     lambda m, c=camera: self._add(self.images[c], (stamp_ns(m.header), m)),
                                     qos_profile_sensor_data)
        self.create_subscription(PoseStamped, POSE_TOPIC, lambda m: self._add(
            self.poses, (stamp_ns(m.header), m.header.frame_id, *pose_arrays(m.pose))), qos_profile_sensor_data)
        self.create_subscription(JointState, "/franka_gripper/joint_states", lambda m: self._add(
            self.fingers, (stamp_ns(m.header), np.array(m.position))), qos_profile_sensor_data)
        self.create_subscription(PoseArray, "/uwm_sim/object_poses", lambda m: self._add(
            self.objects, (stamp_ns(m.header), [pose_arrays(p) for p in m.poses])), STATE_QOS)
        self.create_subscription(String, "/uwm_sim/episode", lambda m: self._add(self.statuses, parse_episode(m)),
                                 EPISODE_QOS)
        self.create_subscription(Bool, "/uwm_sim/task_success", lambda m: self._add(self.success, m.data), STATE_QOS)
        self.create_subscription(Clock, "/clock", lambda m: self._add(self.clock, Time.from_msg(m.clock).nanoseconds),
                                 STATE_QOS)

    def _add(self, buffer, item):
        with self.lock:
            buffer.append(item)

    def latest(self, buffer):
        with self.lock:
            return buffer[-1] if buffer else None

    def snapshot(self, buffer):
        with self.lock:
            return list(buffer)

    def clear(self):
        with self.lock:
            for buffer in (*self.images.values(), self.poses, self.fingers, self.objects, self.statuses,
                           self.clock, self.success):
                buffer.clear()

    def frames_at(self, stamp):
        """{camera: RGB image} of the frame set stamped ``stamp`` (all cameras), else None."""
        with self.lock:
            found = {c: next((m for s, m in self.images[c] if s == stamp), None) for c in CAMERAS}
        if any(m is None for m in found.values()):
            return None
        return {c: decode_image_msg(m) for c, m in found.items()}

    def call(self, service_type, name, request, timeout_s=30.0):
        client = self.create_client(service_type, name)
        try:
            wait_for(lambda: client.service_is_ready(), timeout_s, f"service {name}")
            future = client.call_async(request)
            wait_for(future.done, timeout_s, f"response of {name}")
            return future.result()
        finally:
            self.destroy_client(client)


class RunningSim:
    """A SimNode stepping in its own thread, plus a probe; both spun by one executor thread."""

    def __init__(self, context, probe_sim_time=False, **params):
        self.context = context
        self.node = SimNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.probe = Probe(context, use_sim_time=probe_sim_time)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.spinner = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self.spinner.start()
        self.stepper = threading.Thread(target=self.node.run, daemon=True)
        self.stepper.start()
        wait_for(lambda: all(self.probe.images[c] for c in CAMERAS) and self.probe.poses, 60.0,
                 "the first frames of the sim node")

    def close(self):
        self.node.stop()
        self.stepper.join(10.0)
        self.executor.shutdown()
        self.spinner.join(10.0)
        self.probe.destroy_node()
        self.node.close()
        self.node.destroy_node()
