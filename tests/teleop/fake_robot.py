"""A stand-in robot for the teleop/recorder tests: real rclpy publishers over loopback.

Publishes camera images (random pixels, each frame remembered by its stamp) and the measured
end-effector pose, which follows the commanded target (perfect tracking); records every command
it receives. Spins in a background thread.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from uwm_core.image_codec import encode_raw
from uwm_teleop.spinning import spin

BASE_FRAME = "fr3_link0"
BIN = Path(sys.executable).parent  # the venv's console scripts (uwm-recorder, uwm-teleop, ...)


class FakeRobot(Node):
    def __init__(self, cameras: dict, camera_hz: float = 15.0, pose_hz: float = 30.0,
                 pose_topic: str = "/robot/current_pose", target_topic: str = "/robot/target_pose",
                 delta_topic: str = "/teleop/delta_ee", gripper_topic: str = "/gripper/command", seed: int = 0):
        """cameras: name -> (topic, (height, width), encoding)."""
        super().__init__("fake_robot")
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.cameras = cameras
        self.published = {name: {} for name in cameras}  # name -> {stamp_ns: rgb}
        self.camera_pubs = {name: self.create_publisher(Image, topic, qos_profile_sensor_data)
                            for name, (topic, _, _) in cameras.items()}
        self.pose_pub = self.create_publisher(PoseStamped, pose_topic, qos_profile_sensor_data)
        self.position, self.quat = np.array([0.5, 0.0, 0.3]), np.array([1.0, 0.0, 0.0, 0.0])
        self.deltas = []  # (stamp_ns, delta6) as received
        self.grippers = []  # (receive time ns, value)
        self.create_subscription(PoseStamped, target_topic, self._on_target, 10)
        self.create_subscription(TwistStamped, delta_topic, self._on_delta, 100)
        self.create_subscription(Float32, gripper_topic, self._on_gripper, 100)
        self.create_timer(1.0 / camera_hz, self._publish_images)
        self.create_timer(1.0 / pose_hz, self._publish_pose)
        self.spinner = SingleThreadedExecutor()
        self.spinner.add_node(self)
        self.thread = threading.Thread(target=spin, args=(self.spinner,), daemon=True)

    def start(self) -> "FakeRobot":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.spinner.shutdown()
        self.thread.join(timeout=5)
        self.destroy_node()

    def _now(self):
        return self.get_clock().now()

    def _publish_images(self) -> None:
        now = self._now()
        stamp_ns = now.nanoseconds
        for name, (topic, (h, w), encoding) in self.cameras.items():
            rgb = self.rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            enc, height, width, step, data = encode_raw(rgb, encoding)
            msg = Image(height=height, width=width, encoding=enc, step=step, data=data)
            msg.header.stamp, msg.header.frame_id = now.to_msg(), name
            with self.lock:
                self.published[name][stamp_ns] = rgb
            self.camera_pubs[name].publish(msg)

    def _publish_pose(self) -> None:
        msg = PoseStamped()
        msg.header.stamp, msg.header.frame_id = self._now().to_msg(), BASE_FRAME
        with self.lock:
            p, q = self.position.copy(), self.quat.copy()
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in p)
        (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
         msg.pose.orientation.w) = (float(v) for v in q)
        self.pose_pub.publish(msg)

    def _on_target(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        with self.lock:
            self.position, self.quat = np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])

    def _on_delta(self, msg: TwistStamped) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        t, r = msg.twist.linear, msg.twist.angular
        with self.lock:
            self.deltas.append((stamp, np.array([t.x, t.y, t.z, r.x, r.y, r.z])))

    def _on_gripper(self, msg: Float32) -> None:
        with self.lock:
            self.grippers.append((self._now().nanoseconds, float(msg.data)))


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Commander(Node):
    """Publishes a command stream like the command interface does: TwistStamped deltas, the
    integrated target pose and a Float32 gripper, at ``rate_hz``; remembers what it sent."""

    def __init__(self, rate_hz: float = 10.0, delta_topic: str = "/teleop/delta_ee",
                 target_topic: str = "/robot/target_pose", gripper_topic: str = "/gripper/command", seed: int = 1):
        super().__init__("teleop")  # the recorder's default delta topic is /teleop/delta_ee
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.sent = []  # (stamp_ns, delta6, gripper)
        self.delta_pub = self.create_publisher(TwistStamped, delta_topic, 10)
        self.target_pub = self.create_publisher(PoseStamped, target_topic, 10)
        self.gripper_pub = self.create_publisher(Float32, gripper_topic, 10)
        self.position = np.array([0.5, 0.0, 0.3])
        self.create_timer(1.0 / rate_hz, self._tick)
        self.spinner = SingleThreadedExecutor()
        self.spinner.add_node(self)
        self.thread = threading.Thread(target=spin, args=(self.spinner,), daemon=True)

    def start(self) -> "Commander":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.spinner.shutdown()
        self.thread.join(timeout=5)
        self.destroy_node()

    def _tick(self) -> None:
        now = self.get_clock().now()
        delta = np.concatenate([self.rng.normal(0, 0.005, 3), np.zeros(3)])
        gripper = float(self.rng.random() < 0.5)
        self.position = self.position + delta[:3]
        twist = TwistStamped()
        twist.header.stamp, twist.header.frame_id = now.to_msg(), BASE_FRAME
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(v) for v in delta[:3])
        target = PoseStamped()
        target.header = twist.header
        target.pose.position.x, target.pose.position.y, target.pose.position.z = (float(v) for v in self.position)
        target.pose.orientation.w = 1.0
        with self.lock:
            self.sent.append((now.nanoseconds, delta, gripper))
        self.delta_pub.publish(twist)
        self.target_pub.publish(target)
        self.gripper_pub.publish(Float32(data=gripper))
