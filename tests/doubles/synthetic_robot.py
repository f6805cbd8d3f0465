"""A stand-in for the robot, for the node tests, the teleop/recorder tests and the node benchmarks.

``SyntheticRobot`` publishes camera streams (raw in any supported encoding, optionally with padded
rows, or jpeg CompressedImage for topics ending in ``/compressed``) and the measured end-effector
pose, records what a commander (the policy or teleop node) sends back, and drives a lifecycle node
through its real ``change_state`` / ``get_state`` services. Everything goes over DDS; it runs its
own executor thread.

Per-camera knobs (``robot.cameras[name]``): ``enabled``, ``stamp_offset_s`` (added to the header
stamp), ``encoding``, ``pad_bytes`` (extra bytes per row), ``shape``. ``pose_frame`` sets the pose's
frame id; ``follow_target`` makes the measured pose track the commanded target (an ideal
controller); ``keep_published`` remembers every published frame by its stamp (``published``), for
tests that compare recorded frames pixel by pixel.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, TwistStamped
from lifecycle_msgs.msg import TransitionEvent
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32, String

from uwm_core.image_codec import encode_compressed, encode_raw
from uwm_ros.robot import spin
from uwm_ros.robot.lifecycle_client import LifecycleClient
from uwm_ros.robot.messages import stamp_ns


@dataclass
class CameraStream:
    topic: str
    enabled: bool = True
    stamp_offset_s: float = 0.0
    encoding: str = "rgb8"
    pad_bytes: int = 0
    corrupt_bytes: int = 0  # compressed topics: bytes inverted in the middle of each JPEG
    shape: tuple[int, int] | None = None  # (height, width); None: the robot's image_shape
    published: int = 0


@dataclass
class Received:
    """Messages received from the commander: (arrival time.monotonic(), arrival on the node's clock
    in ns, message)."""

    deltas: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    gripper: list = field(default_factory=list)
    status: list = field(default_factory=list)  # parsed JSON dicts
    transitions: list = field(default_factory=list)  # (start label, goal label)
    predicted_frames: list = field(default_factory=list)


class SyntheticRobot:
    def __init__(self, namespace: str, camera_topics: dict[str, str], pose_topic: str, target_topic: str,
                 gripper_topic: str, commander: str, base_frame: str = "fr3_link0", camera_rate_hz: float = 30.0,
                 image_shape: tuple[int, int] = (48, 64), start_position=(0.5, 0.0, 0.3),
                 start_quat_xyzw=(1.0, 0.0, 0.0, 0.0), pose_rate_hz: float | None = None,
                 keep_published: bool = False):
        """``commander``: the fully qualified name of the node under test, e.g. ``/t1/uwm_policy``;
        ``pose_rate_hz``: the measured pose's own rate (None: with every camera frame set)."""
        self.node = Node("synthetic_robot", namespace=namespace)
        self.cameras = {cam: CameraStream(topic) for cam, topic in camera_topics.items()}
        self.base_frame = base_frame
        self.pose_frame = base_frame
        self.position = np.array(start_position, dtype=float)
        self.quat_xyzw = np.array(start_quat_xyzw, dtype=float)
        self.follow_target = False
        self.publish_pose = True
        self.pose_stamp_offset_s = 0.0  # added to the measured pose's stamp (a robot clock out of sync)
        self.image_shape = image_shape
        self.received = Received()
        self.published = {cam: {} for cam in camera_topics} if keep_published else None  # cam -> {stamp ns: rgb}
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(0)
        self._noise = {}  # (camera, height, width) -> the background of its frames
        self._image_pubs = {
            cam: self.node.create_publisher(CompressedImage if s.topic.endswith("/compressed") else Image, s.topic,
                                            qos_profile_sensor_data)
            for cam, s in self.cameras.items()}
        self._pose_pub = self.node.create_publisher(PoseStamped, pose_topic, qos_profile_sensor_data)
        sub = self.node.create_subscription
        sub(TwistStamped, f"{commander}/delta_ee", lambda m: self._record("deltas", m), 50)
        sub(PoseStamped, target_topic, self._on_target, 50)
        sub(Float32, gripper_topic, lambda m: self._record("gripper", m), 50)
        sub(String, f"{commander}/status", lambda m: self._record("status", json.loads(m.data)), 10)
        sub(TransitionEvent, f"{commander}/transition_event",
            lambda m: self._record("transitions", (m.start_state.label, m.goal_state.label)), 10)
        sub(Image, f"{commander}/predicted_frames", lambda m: self._record("predicted_frames", m), 2)
        self.lifecycle = LifecycleClient(self.node, commander)
        self._camera_timer = self.node.create_timer(1.0 / camera_rate_hz, self._publish_frames)
        self._pose_timer = self.node.create_timer(1.0 / pose_rate_hz, self._publish_pose) if pose_rate_hz else None
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=spin, args=(self._executor,), daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ streams
    def _publish_frames(self) -> None:
        now = self.node.get_clock().now()
        t = now.nanoseconds * 1e-9
        # a moving bright square on noise: frames differ over time and between cameras
        for i, (cam, stream) in enumerate(self.cameras.items()):
            if not stream.enabled:
                continue
            h, w = stream.shape or self.image_shape
            if (cam, h, w) not in self._noise:  # drawn once: 640x480 noise at 90 frames/s would load a core
                self._noise[(cam, h, w)] = self._rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            rgb = self._noise[(cam, h, w)].copy()
            x = int((t * 20 + 10 * i) % (w - 8))
            rgb[h // 3:h // 3 + 8, x:x + 8] = (220, 200 - 40 * i, 40 * i)
            stamp_ns = now.nanoseconds + int(stream.stamp_offset_s * 1e9)
            stamp = rclpy.time.Time(nanoseconds=stamp_ns).to_msg()
            if self.published is not None:
                with self._lock:
                    self.published[cam][stamp_ns] = rgb
            if stream.topic.endswith("/compressed"):
                data = bytearray(encode_compressed(rgb, "jpeg"))
                middle = len(data) // 2
                data[middle:middle + stream.corrupt_bytes] = bytes(b ^ 0xFF for b in
                                                                   data[middle:middle + stream.corrupt_bytes])
                msg = CompressedImage(format="jpeg", data=bytes(data))
            else:
                msg = raw_image(rgb, stream.encoding, stream.pad_bytes)
            msg.header.stamp, msg.header.frame_id = stamp, f"{cam}_optical_frame"
            self._image_pubs[cam].publish(msg)
            stream.published += 1
        if self._pose_timer is None:
            self._publish_pose(now)

    def _publish_pose(self, now=None) -> None:
        if self.publish_pose:
            now = now or self.node.get_clock().now()
            pose = PoseStamped()
            pose_stamp = rclpy.time.Time(nanoseconds=now.nanoseconds + int(self.pose_stamp_offset_s * 1e9))
            pose.header.stamp, pose.header.frame_id = pose_stamp.to_msg(), self.pose_frame
            with self._lock:
                position, quat = self.position.copy(), self.quat_xyzw.copy()
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position)
            o = pose.pose.orientation
            o.x, o.y, o.z, o.w = (float(v) for v in quat)
            self._pose_pub.publish(pose)

    def _on_target(self, msg: PoseStamped) -> None:
        self._record("targets", msg)
        if self.follow_target:
            p, o = msg.pose.position, msg.pose.orientation
            with self._lock:
                self.position = np.array([p.x, p.y, p.z])
                self.quat_xyzw = np.array([o.x, o.y, o.z, o.w])

    def _record(self, kind: str, item) -> None:
        clock_ns = self.node.get_clock().now().nanoseconds
        with self._lock:
            getattr(self.received, kind).append((time.monotonic(), clock_ns, item))

    def snapshot(self, kind: str) -> list:
        """[(arrival time.monotonic(), message)] received so far of one kind (deltas, targets, status, ...)."""
        with self._lock:
            return [(at, item) for at, _, item in getattr(self.received, kind)]

    def deltas(self) -> list[tuple[int, np.ndarray]]:
        """[(header stamp ns, [dx, dy, dz, rx, ry, rz])] of every ~/delta_ee received."""
        return [(stamp_ns(m.header), twist6(m)) for _, m in self.snapshot("deltas")]

    def grippers(self) -> list[tuple[int, float]]:
        """[(arrival on the node's clock in ns, command)]: std_msgs/Float32 carries no stamp."""
        with self._lock:
            return [(clock_ns, m.data) for _, clock_ns, m in self.received.gripper]

    def latest_status(self) -> dict | None:
        status = self.snapshot("status")
        return status[-1][1] if status else None

    def wait_for(self, predicate, timeout_s: float, poll_s: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll_s)
        return bool(predicate())

    # ------------------------------------------------------------------ lifecycle
    def change_state(self, transition: str, timeout_s: float = 120.0) -> bool:
        """Request a transition through the node's change_state service; True on success."""
        return self.lifecycle.change(transition, timeout_s)

    def get_state(self) -> str:
        return self.lifecycle.state()

    def close(self) -> None:
        self._executor.shutdown()
        self._thread.join(5.0)
        self.node.destroy_node()


def twist6(msg: TwistStamped) -> np.ndarray:
    t, r = msg.twist.linear, msg.twist.angular
    return np.array([t.x, t.y, t.z, r.x, r.y, r.z])


def raw_image(rgb: np.ndarray, encoding: str, pad_bytes: int = 0) -> Image:
    """A sensor_msgs/Image of ``rgb`` in ``encoding``; ``pad_bytes`` of row padding (``step``)."""
    msg = Image()
    try:
        msg.encoding, msg.height, msg.width, msg.step, data = encode_raw(rgb, encoding)
    except ValueError:  # an encoding the codec cannot write (bad-input tests): label rgb8 bytes with it
        msg.encoding, msg.height, msg.width, msg.step, data = encode_raw(rgb, "rgb8")
        msg.encoding = encoding
    if pad_bytes:
        rows = np.frombuffer(data, np.uint8).reshape(msg.height, msg.step)
        data = np.concatenate([rows, np.zeros((msg.height, pad_bytes), np.uint8)], axis=1).tobytes()
        msg.step += pad_bytes
    msg.data = data
    return msg
