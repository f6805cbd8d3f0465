"""A stand-in commander for the recorder tests (what the teleop node publishes, over loopback),
and ``wait_for``."""
from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Float32

from uwm_ros.robot.spinning import spin

BASE_FRAME = "fr3_link0"


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
