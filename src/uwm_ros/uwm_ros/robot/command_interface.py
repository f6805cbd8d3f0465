"""The robot command output shared by the policy node, the teleop node and the sim's expert.

Both nodes turn one action per control step into exactly the same ROS messages, so a recorded
teleop demonstration, a policy rollout and the simulator all speak one interface. The action
convention is ``uwm_core.spatial``'s: ``[dx, dy, dz, rx, ry, rz, g]`` per step, translation in
metres and rotation vector in radians in the robot base frame (R_new = exp(r) * R_old), gripper
absolute 0 (open) .. 1 (closed).

Usage (any rclpy Node or LifecycleNode)::

    from uwm_ros.robot import CommandInterface, declare_command_parameters
    declare_command_parameters(node)                 # in __init__: every parameter below
    out = CommandInterface(node)                     # reads them; creates pubs/subs (ValueError on bad values)
                                                     # (optional callback_group= for the pose subscription)
    out.reset()                                      # next step seeds the target from the measured pose
    sent = out.send(action7)                         # one control step; None when it held (out.hold_reason says why)
    out.hold("camera left stale")                    # stop: re-publish the current target once, then nothing
    out.destroy()                                    # remove pubs/subs (lifecycle cleanup)

What one ``send`` does, in order:

1. refuses non-finite actions (``ValueError``; the caller decides how to fail);
2. holds instead of moving (returns None) when the measured pose on ``ee_pose_topic`` is missing,
   older than ``max_pose_age_s``, or refused (another frame than ``base_frame``, not finite, a
   quaternion norm more than 1 % from 1, stamped more than ``max_future_stamp_s`` ahead: logged
   naming why), or when another node publishes on ``target_pose_topic``;
3. clamps the step to ``max_translation_per_step`` / ``max_rotation_per_step``
   (``uwm_core.spatial.clamp_delta``) and keeps the position inside the workspace box
   ``workspace_min`` .. ``workspace_max`` (a pose already outside may only move back towards it);
4. publishes ``~/delta_ee`` (geometry_msgs/TwistStamped in ``base_frame``: linear = the applied
   translation, angular = the applied rotation vector) every step, in both modes;
5. ``command_mode: pose_target`` integrates the delta onto the last commanded target (seeded
   from the measured pose after ``reset()``) with ``uwm_core.spatial.apply_delta`` and publishes
   geometry_msgs/PoseStamped on ``target_pose_topic`` in ``base_frame`` (for a Cartesian
   impedance controller); ``command_mode: delta`` publishes the delta only;
6. the gripper: ``gripper_mode: topic`` publishes std_msgs/Float32 (0..1) on ``gripper_topic``
   every step; ``franka_action`` sends franka_msgs Grasp (closing) / Move (opening) goals to
   ``gripper_action_ns`` when the binary state (threshold 0.5) changes, cancelling a goal still in
   flight (only where franka_msgs is installed); ``none`` sends nothing.

``hold`` publishes the current target once more (pose_target) and one zero ``~/delta_ee`` so a
delta consumer stops too, then nothing until the next successful ``send``. ``reset`` forgets the
target (call it on activation, after the robot may have been moved by someone else).
All methods may be called from any thread; the pose subscription runs in the node's executor.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from std_msgs.msg import Float32

from uwm_core.data.alignment import states_at
from uwm_core.spatial import ACTION_DIM

from .command_math import FAR_BEYOND_CLAMP, exceeds_clamp, measured_pose_problem, step_pose, target_divergence
from .command_settings import CommandSettings, settings_from_node
from .franka_gripper import FrankaGripper
from .messages import pose_msg, twist_msg

GRIPPER_CLOSED_THRESHOLD = 0.5
CONFLICT_CHECK_PERIOD_S = 1.0
POSE_HISTORY = 256  # measured poses and gripper commands kept for state_at (seconds at robot rates)


@dataclass
class SentCommand:
    """What one ``send`` commanded: the applied 6-D delta, the gripper value and the target."""

    delta: np.ndarray  # (6,) after clamps and the workspace box
    gripper: float
    target_position: np.ndarray | None  # pose_target mode only
    target_quat_xyzw: np.ndarray | None


@dataclass
class MeasuredPose:
    position: np.ndarray
    quat_xyzw: np.ndarray
    stamp: Time


class CommandInterface:
    """Publishes robot commands for one node; see the module docstring for the contract."""

    def __init__(self, node, settings: CommandSettings | None = None, callback_group=None):
        """``callback_group`` is used for the measured-pose subscription (None: the node's default)."""
        self.node = node
        self.settings = (settings or settings_from_node(node)).validate()
        self._lock = threading.Lock()
        self._pose: MeasuredPose | None = None
        self._poses: deque[MeasuredPose] = deque(maxlen=POSE_HISTORY)  # for state_at
        self._grippers: deque[tuple[int, float]] = deque(maxlen=POSE_HISTORY)  # (stamp ns, command sent)
        self._pose_problem: str | None = None  # why the last received pose was refused
        self._target: tuple[np.ndarray, np.ndarray] | None = None
        self._holding = True  # nothing was commanded yet
        self.hold_reason: str | None = "not started"
        self._conflict: str | None = None
        self._conflict_checked_at: float | None = None
        self.steps_clamped = 0  # steps whose requested motion exceeded a per-step clamp
        s = self.settings
        self._delta_pub = node.create_publisher(TwistStamped, "~/delta_ee", 10)
        self._target_pub = (node.create_publisher(PoseStamped, s.target_pose_topic, 10)
                            if s.command_mode == "pose_target" else None)
        self._pose_sub = node.create_subscription(PoseStamped, s.ee_pose_topic, self._on_pose, qos_profile_sensor_data,
                                                  callback_group=callback_group)
        self._gripper_pub = node.create_publisher(Float32, s.gripper_topic, 10) if s.gripper_mode == "topic" else None
        self._franka_gripper = FrankaGripper(node, s) if s.gripper_mode == "franka_action" else None

    # ------------------------------------------------------------------ measured pose
    def _on_pose(self, msg: PoseStamped) -> None:
        s = self.settings
        p, q = msg.pose.position, msg.pose.orientation
        position = np.array([p.x, p.y, p.z])
        quat = np.array([q.x, q.y, q.z, q.w])
        stamp = Time.from_msg(msg.header.stamp)
        ahead_s = (stamp - self.node.get_clock().now()).nanoseconds * 1e-9
        problem = measured_pose_problem(msg.header.frame_id, position, quat, ahead_s, s)
        if problem is not None:
            problem = f"measured pose on {s.ee_pose_topic} {problem}: refused"
            with self._lock:
                self._pose_problem = problem
            self.node.get_logger().error(problem, throttle_duration_sec=2.0)
            return
        with self._lock:
            self._pose = MeasuredPose(position, quat / np.linalg.norm(quat), stamp)
            self._pose_problem = None
            self._poses.append(self._pose)

    def state_at(self, stamp_ns: int) -> np.ndarray | None:
        """The proprioceptive state (uwm_core.spatial.proprio_state) at ``stamp_ns`` as datasets
        store it: the latest measured pose at or before it and the gripper command sent before it
        (open before the first); None when no received pose is that old."""
        with self._lock:
            poses, grippers = list(self._poses), list(self._grippers)
        states, at = states_at([stamp_ns], [p.stamp.nanoseconds for p in poses],
                               [np.concatenate([p.position, p.quat_xyzw]) for p in poses] or np.zeros((0, 7)),
                               [t for t, _ in grippers], [g for _, g in grippers])
        return states[0] if at[0] >= 0 else None

    def measured_pose(self) -> MeasuredPose | None:
        with self._lock:
            return self._pose

    def pose_age_s(self) -> float | None:
        pose = self.measured_pose()
        if pose is None:
            return None
        return (self.node.get_clock().now() - pose.stamp).nanoseconds * 1e-9

    def pose_problem(self) -> str | None:
        """Why the measured pose cannot be used now (missing, stale, wrong frame), or None."""
        with self._lock:
            pose, refused = self._pose, self._pose_problem
        if refused is not None:
            return refused
        if pose is None:
            return f"no measured pose received on {self.settings.ee_pose_topic}"
        age = self.pose_age_s()
        if age > self.settings.max_pose_age_s:
            return (f"measured pose on {self.settings.ee_pose_topic} is {age:.2f} s old "
                    f"(max_pose_age_s={self.settings.max_pose_age_s})")
        if -age > self.settings.max_future_stamp_s:  # this node's clock went back since it arrived
            return (f"measured pose on {self.settings.ee_pose_topic} is stamped {-age:.2f} s in the future "
                    f"(max_future_stamp_s={self.settings.max_future_stamp_s})")
        return None

    # ------------------------------------------------------------------ exclusivity
    def target_conflict(self) -> str | None:
        """Another node publishing on target_pose_topic (checked at most once a second), or None."""
        if self._target_pub is None:
            return None
        now = self.node.get_clock().now().nanoseconds * 1e-9
        if self._conflict_checked_at is not None and now - self._conflict_checked_at < CONFLICT_CHECK_PERIOD_S:
            return self._conflict
        self._conflict_checked_at = now
        me = (self.node.get_namespace().rstrip("/"), self.node.get_name())
        others = sorted({f"{i.node_namespace.rstrip('/')}/{i.node_name}"
                         for i in self.node.get_publishers_info_by_topic(self._target_pub.topic_name)
                         if (i.node_namespace.rstrip("/"), i.node_name) != me})
        self._conflict = (f"fault: another node publishes on {self._target_pub.topic_name} ({', '.join(others)}); "
                          "only one commander may drive the robot" if others else None)
        if self._conflict:
            self.node.get_logger().error(self._conflict, throttle_duration_sec=5.0)
        return self._conflict

    # ------------------------------------------------------------------ commands
    def reset(self) -> None:
        """Forget the commanded target: the next send seeds it from the measured pose."""
        with self._lock:
            self._target = None

    @property
    def is_holding(self) -> bool:
        return self._holding

    @property
    def target(self) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            return self._target

    def send(self, action, stamp_ns: int | None = None) -> SentCommand | None:
        """Command one control step; returns what was sent, or None after holding (see hold_reason).

        ``stamp_ns``: the control step's time for the messages' header (default: now)."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action: expected {ACTION_DIM} values [dx, dy, dz, rx, ry, rz, g], "
                             f"got shape {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action contains non-finite values: {action.tolist()}")
        reason = self.pose_problem() or self.target_conflict()
        if reason is not None:
            self.hold(reason)
            return None
        s = self.settings
        pose = self.measured_pose()
        divergence = self._target_divergence(pose)
        if divergence is not None:
            self.reset()  # the hold must not send the far target again; the next step starts from the pose
            self.hold(divergence)
            self.node.get_logger().error(divergence, throttle_duration_sec=2.0)
            return None
        gripper = float(np.clip(action[6], 0.0, 1.0))
        with self._lock:
            if s.command_mode == "pose_target" and self._target is not None:
                start_position, start_quat = self._target
            else:  # delta mode, or the first pose_target step: from the measured pose
                start_position, start_quat = pose.position, pose.quat_xyzw
            delta, position, quat = step_pose(start_position, start_quat, action[:6], s)
            self._count_clamping(action[:6], delta)
            if s.command_mode == "pose_target":
                self._target = (position, quat)
            self._holding = False
            self.hold_reason = None
        stamp = (self.node.get_clock().now() if stamp_ns is None else Time(nanoseconds=stamp_ns)).to_msg()
        self._delta_pub.publish(twist_msg(delta, s.base_frame, stamp))
        if self._target_pub is not None:
            self._target_pub.publish(pose_msg(position, quat, s.base_frame, stamp))
        self._command_gripper(gripper)
        with self._lock:
            self._grippers.append((Time.from_msg(stamp).nanoseconds, gripper))
        targeted = s.command_mode == "pose_target"
        return SentCommand(delta, gripper, position if targeted else None, quat if targeted else None)

    def _target_divergence(self, pose: MeasuredPose) -> str | None:
        target = self.target
        if self.settings.command_mode != "pose_target" or target is None:
            return None
        return target_divergence(target, pose.position, pose.quat_xyzw, self.settings)

    def _count_clamping(self, requested: np.ndarray, applied: np.ndarray) -> None:
        s = self.settings
        if exceeds_clamp(requested, s):
            self.steps_clamped += 1
        if exceeds_clamp(requested, s, FAR_BEYOND_CLAMP):
            self.node.get_logger().warning(
                f"action of {np.linalg.norm(requested[:3]):.3g} m and {np.linalg.norm(requested[3:]):.3g} rad per "
                f"step clamped to {np.linalg.norm(applied[:3]):.3g} m and {np.linalg.norm(applied[3:]):.3g} rad "
                f"(max_translation_per_step={s.max_translation_per_step}, max_rotation_per_step="
                f"{s.max_rotation_per_step}): more than {FAR_BEYOND_CLAMP:g}x the clamp, check the checkpoint's "
                f"action units", throttle_duration_sec=5.0)

    def hold(self, reason: str = "hold") -> bool:
        """Stop commanding motion: the current target once more and a zero delta, then nothing.

        Returns True when this call started the hold (False when already holding).
        """
        with self._lock:
            self.hold_reason = reason
            if self._holding:
                return False
            self._holding = True
            target = self._target
        stamp = self.node.get_clock().now().to_msg()
        self._delta_pub.publish(twist_msg(np.zeros(6), self.settings.base_frame, stamp))
        if self._target_pub is not None and target is not None:
            self._target_pub.publish(pose_msg(*target, self.settings.base_frame, stamp))
        return True

    def _command_gripper(self, value: float) -> None:
        if self._gripper_pub is not None:
            self._gripper_pub.publish(Float32(data=value))
        elif self._franka_gripper is not None:
            self._franka_gripper.command(value >= GRIPPER_CLOSED_THRESHOLD)

    def status(self) -> dict:
        """A JSON-friendly summary for diagnostics and ~/status."""
        target = self.target
        age = self.pose_age_s()
        return {
            "command_mode": self.settings.command_mode,
            "holding": self._holding,
            "hold_reason": self.hold_reason,
            "pose_age_s": None if age is None else round(age, 3),
            "target_position": None if target is None else [round(float(v), 4) for v in target[0]],
            "target_conflict": self._conflict,
            "steps_clamped": self.steps_clamped,
        }

    def destroy(self) -> None:
        """Remove this interface's publishers, subscription and action clients from the node."""
        for pub in (self._delta_pub, self._target_pub, self._gripper_pub):
            if pub is not None:
                self.node.destroy_publisher(pub)
        self.node.destroy_subscription(self._pose_sub)
        if self._franka_gripper is not None:
            self._franka_gripper.destroy()
