"""What uwm-eval-sim observes of a rollout: the sim's frames, episode and pose, the policy's commands
and status; and the per-step actions and states reconstructed from them, as datasets store them."""
from __future__ import annotations

import json
import threading

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, String

from uwm_core.data.alignment import compose_deltas, latest_at_or_before, states_at
from uwm_core.image_codec import decode_image_msg
from uwm_ros.robot.messages import stamp_ns
from uwm_ros.sim.ros_interface import EPISODE_QOS, SIM_NODE_NAME, parse_episode
from uwm_ros.tools.ros_client import RosClient


class RolloutRecorder:
    """Subscribes to the sim's cameras and status and the policy's commands and status; keeps the
    frames and commands of the episode being recorded (all callbacks on the client's thread)."""

    def __init__(self, ros: RosClient, policy_node: str, camera_topics: dict[str, str], gripper_topic: str, pose_topic: str,
                 period_ns: int):
        self.lock = threading.Lock()
        self.cameras = list(camera_topics)
        self.status = None  # the sim's latest ~/episode
        self.policy_status = None
        self._period_ns = period_ns
        self._episode_starts: dict[int, int] = {}  # sim episode -> stamp of its first frame set
        self._recording = False
        self._keep_frames = False
        self.frames: dict[int, dict] = {}  # stamp ns -> {camera: rgb}
        self.deltas: list[tuple[int, np.ndarray]] = []
        self.grippers: list[tuple[int, float]] = []  # stamped with the tick's delta (Float32 has no header)
        self.poses: list[tuple[int, np.ndarray]] = []  # measured (position, quat xyzw) while frames are kept
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node = ros.node
        for camera, topic in camera_topics.items():
            node.create_subscription(Image, topic, lambda m, c=camera: self._on_image(c, m), reliable)
        node.create_subscription(String, f"/{SIM_NODE_NAME}/episode", self._on_episode, EPISODE_QOS)
        node.create_subscription(String, f"{policy_node}/status", self._on_policy_status, 10)
        node.create_subscription(TwistStamped, f"{policy_node}/delta_ee", self._on_delta, reliable)
        node.create_subscription(Float32, gripper_topic, self._on_gripper, reliable)
        node.create_subscription(PoseStamped, pose_topic, self._on_pose, reliable)

    def _on_image(self, camera, msg) -> None:
        with self.lock:
            if not self._keep_frames:
                return
        rgb = decode_image_msg(msg)
        with self.lock:
            self.frames.setdefault(stamp_ns(msg.header), {})[camera] = rgb

    def _on_episode(self, msg) -> None:
        status = parse_episode(msg)
        start = status["stamp_ns"] - status["step"] * self._period_ns  # exact in fast mode
        with self.lock:
            self.status = status
            episode = status["episode"]
            self._episode_starts[episode] = min(start, self._episode_starts.get(episode, start))

    def _on_policy_status(self, msg) -> None:
        status = json.loads(msg.data)
        with self.lock:
            self.policy_status = status

    def _on_delta(self, msg) -> None:
        t = msg.twist
        delta = np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])
        with self.lock:
            if self._recording:
                self.deltas.append((stamp_ns(msg.header), delta))

    def _on_gripper(self, msg) -> None:
        with self.lock:
            if self._recording and self.deltas:
                self.grippers.append((self.deltas[-1][0], float(msg.data)))

    def _on_pose(self, msg) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        with self.lock:
            if self._keep_frames:
                self.poses.append((stamp_ns(msg.header), np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])))

    def begin(self, keep_frames: bool) -> None:
        """Start recording (before the sim's reset, so that the episode's first frame set is kept)."""
        with self.lock:
            self._recording, self._keep_frames = True, keep_frames
            self.frames, self.deltas, self.grippers, self.poses = {}, [], [], []

    def end(self, episode: int) -> dict:
        """Stop recording; the frame sets of sim episode ``episode`` (complete ones) and the commands."""
        with self.lock:
            frames, deltas, grippers, poses = self.frames, self.deltas, self.grippers, self.poses
            self._recording, self._keep_frames = False, False
            self.frames, self.deltas, self.grippers, self.poses = {}, [], [], []
            start = self._episode_starts.get(episode, 0) - self._period_ns // 2
        complete = {s: f for s, f in frames.items() if len(f) == len(self.cameras) and s >= start}
        return {"episode": episode, "frames": dict(sorted(complete.items())), "deltas": deltas, "grippers": grippers,
                "poses": poses}

    def latest(self) -> tuple[dict | None, dict | None]:
        with self.lock:
            return self.status, self.policy_status


def record_states(record: dict, stamps) -> np.ndarray:
    """The proprioceptive state at each frame-set stamp of a recorded rollout, as datasets store it
    (rows before the first recorded pose are NaN)."""
    poses, grippers = record.get("poses", []), record["grippers"]
    states, _ = states_at(stamps, [t for t, _ in poses], [p for _, p in poses] or np.zeros((0, 7)),
                          [t for t, _ in grippers], [g for _, g in grippers])
    return states


def step_actions(stamps: list[int], deltas, grippers) -> np.ndarray:
    """The 7-D action of each simulated step (frame stamp to the next): the deltas the policy sent
    in it composed (zero while it held), and the gripper command in force."""
    stamps = np.asarray(stamps, dtype=np.int64)
    actions = np.zeros((len(stamps), 7), dtype=np.float32)
    if deltas:
        delta_stamps = np.array([s for s, _ in deltas], dtype=np.int64)
        step_of_delta = latest_at_or_before(stamps, delta_stamps)
        values = np.stack([d for _, d in deltas])
        for step in np.unique(step_of_delta[step_of_delta >= 0]):
            actions[step, :6] = compose_deltas(values[step_of_delta == step])
    if grippers:
        gripper_stamps = np.array([s for s, _ in grippers], dtype=np.int64)
        at = latest_at_or_before(gripper_stamps, stamps)
        values = np.array([g for _, g in grippers], dtype=np.float32)
        actions[:, 6] = np.where(at >= 0, values[np.maximum(at, 0)], 0.0)
    return actions
