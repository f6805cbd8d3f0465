"""The robot command output shared by the policy node (uwm_ros) and the teleop node.

Both nodes turn one action per control step into exactly the same ROS messages, so a recorded
teleop demonstration, a policy rollout and the simulator all speak one interface. The action
convention is ``uwm_core.spatial``'s: ``[dx, dy, dz, rx, ry, rz, g]`` per step, translation in
metres and rotation vector in radians in the robot base frame (R_new = exp(r) * R_old), gripper
absolute 0 (open) .. 1 (closed).

Usage (any rclpy Node or LifecycleNode)::

    from uwm_teleop.command_interface import CommandInterface, declare_command_parameters
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

import math
import threading
from collections import deque
from dataclasses import dataclass, fields

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from std_msgs.msg import Float32

from uwm_core.spatial import ACTION_DIM, apply_delta, clamp_delta

from uwm_teleop.alignment import states_at
from uwm_teleop.parameters import declare_parameters, parameter_value

COMMAND_MODES = ("pose_target", "delta")
GRIPPER_MODES = ("topic", "franka_action", "none")
GRIPPER_CLOSED_THRESHOLD = 0.5
FAR_BEYOND_CLAMP = 10.0  # an action this many times the per-step clamp is a unit or model error: warn
CONFLICT_CHECK_PERIOD_S = 1.0
QUAT_NORM_TOLERANCE = 0.01  # a measured orientation's quaternion norm must be within 1 % of 1
POSE_HISTORY = 256  # measured poses and gripper commands kept for state_at (seconds at robot rates)


@dataclass
class CommandSettings:
    """The command parameters, with their defaults (the robot's franka_ros2 + CRISP topics)."""

    command_mode: str = "pose_target"
    ee_pose_topic: str = "/franka_robot_state_broadcaster/current_pose"
    max_pose_age_s: float = 0.5
    max_future_stamp_s: float = 0.1
    target_pose_topic: str = "/cartesian_impedance_controller/target_pose"
    base_frame: str = "fr3_link0"
    gripper_mode: str = "topic"
    gripper_topic: str = "/gripper/command"
    gripper_action_ns: str = "/franka_gripper"
    gripper_open_width: float = 0.08
    gripper_speed: float = 0.1
    gripper_force: float = 20.0
    max_translation_per_step: float = 0.02
    max_rotation_per_step: float = 0.1
    max_target_error_m: float = 0.1
    max_target_error_rad: float = 0.5
    workspace_min: tuple = (0.25, -0.45, 0.02)
    workspace_max: tuple = (0.80, 0.45, 0.70)

    def validate(self) -> "CommandSettings":
        """Raise ValueError naming the parameter and its bad value."""
        if self.command_mode not in COMMAND_MODES:
            raise ValueError(f"parameter command_mode={self.command_mode!r} is not one of {list(COMMAND_MODES)}")
        if self.gripper_mode not in GRIPPER_MODES:
            raise ValueError(f"parameter gripper_mode={self.gripper_mode!r} is not one of {list(GRIPPER_MODES)}")
        if self.gripper_mode == "franka_action" and not franka_msgs_available():
            raise ValueError("parameter gripper_mode='franka_action' needs the franka_msgs package, which is not "
                             "installed here (use gripper_mode 'topic' or 'none', or run on the robot image)")
        for name in ("max_pose_age_s", "max_future_stamp_s", "max_translation_per_step", "max_rotation_per_step",
                     "max_target_error_m", "max_target_error_rad",
                     "gripper_open_width", "gripper_speed", "gripper_force"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"parameter {name}={value} must be a positive number")
        for name in ("workspace_min", "workspace_max"):
            value = getattr(self, name)
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"parameter {name}={list(value)} must be three finite numbers [x, y, z] in metres")
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            raise ValueError(f"parameters workspace_min={list(self.workspace_min)} and "
                             f"workspace_max={list(self.workspace_max)}: every min must be below its max")
        if not self.base_frame:
            raise ValueError("parameter base_frame is empty")
        return self


PARAMETER_DESCRIPTIONS = {
    "command_mode": "pose_target: integrate deltas onto the last commanded target and publish it on "
                    "target_pose_topic; delta: publish ~/delta_ee only",
    "ee_pose_topic": "measured end-effector pose (geometry_msgs/PoseStamped in base_frame, best-effort QoS)",
    "max_pose_age_s": "hold when the newest measured pose is older than this (s)",
    "max_future_stamp_s": "poses (and, in the policy node, camera frames) stamped further than this in the future "
                          "are refused: their clock is not synchronised with this node's (s)",
    "target_pose_topic": "target pose for the Cartesian impedance controller (geometry_msgs/PoseStamped)",
    "base_frame": "robot base frame: poses in another frame are refused, commands are stamped in it",
    "gripper_mode": "topic: std_msgs/Float32 0 (open)..1 (closed) on gripper_topic every step; "
                    "franka_action: franka_msgs Grasp/Move goals on state change; none: no gripper command",
    "gripper_topic": "gripper command topic for gripper_mode topic (std_msgs/Float32, 0 open .. 1 closed)",
    "gripper_action_ns": "namespace of the franka_gripper Grasp/Move action servers (gripper_mode franka_action)",
    "gripper_open_width": "opening width sent with the Move goal (m)",
    "gripper_speed": "finger speed of Grasp/Move goals (m/s)",
    "gripper_force": "grasp force of Grasp goals (N)",
    "max_translation_per_step": "largest translation per control step (m); longer steps are scaled down",
    "max_rotation_per_step": "largest rotation per control step (rad); larger ones are scaled down",
    "max_target_error_m": "pose_target mode: when the commanded target is further than this from the measured pose "
                          "(m) the robot is not following it: hold, and seed the next target from the measured pose",
    "max_target_error_rad": "the same for the orientation (rad)",
    "workspace_min": "lower corner [x, y, z] of the allowed end-effector box in base_frame (m)",
    "workspace_max": "upper corner [x, y, z] of the allowed end-effector box in base_frame (m)",
}


def declare_command_parameters(node) -> None:
    """Declare every command parameter on ``node`` with its default and description."""
    declare_parameters(node, {f.name: (f.default, PARAMETER_DESCRIPTIONS[f.name]) for f in fields(CommandSettings)})


def settings_from_node(node) -> CommandSettings:
    """Read the declared command parameters of ``node``; ValueError names a bad one."""
    values = {f.name: parameter_value(node, f.name, f.default) for f in fields(CommandSettings)}
    return CommandSettings(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}).validate()


def franka_msgs_available() -> bool:
    try:
        import franka_msgs.action  # noqa: F401
    except ImportError:
        return False
    return True


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
        norm = np.linalg.norm(quat)
        stamp = Time.from_msg(msg.header.stamp)
        ahead_s = (stamp - self.node.get_clock().now()).nanoseconds * 1e-9
        problem = None
        if msg.header.frame_id != s.base_frame:
            problem = f"is in frame {msg.header.frame_id!r}, expected base_frame {s.base_frame!r}"
        elif not (np.isfinite(position).all() and np.isfinite(quat).all()):
            problem = "is not finite"
        elif abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
            problem = f"has a quaternion of norm {norm:.3g}, not a unit one (tolerance {QUAT_NORM_TOLERANCE})"
        elif ahead_s > s.max_future_stamp_s:
            problem = (f"is stamped {ahead_s:.2f} s in the future (max_future_stamp_s={s.max_future_stamp_s}): its "
                       f"clock is not synchronised with this node's")
        if problem is not None:
            problem = f"measured pose on {s.ee_pose_topic} {problem}: refused"
            with self._lock:
                self._pose_problem = problem
            self.node.get_logger().error(problem, throttle_duration_sec=2.0)
            return
        with self._lock:
            self._pose = MeasuredPose(position, quat / norm, stamp)
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
        delta = clamp_delta(action[:6], s.max_translation_per_step, s.max_rotation_per_step)
        self._count_clamping(action[:6], delta)
        gripper = float(np.clip(action[6], 0.0, 1.0))
        with self._lock:
            if s.command_mode == "pose_target" and self._target is not None:
                start_position, start_quat = self._target
            else:  # delta mode, or the first pose_target step: from the measured pose
                start_position, start_quat = pose.position, pose.quat_xyzw
            position, quat = apply_delta(start_position, start_quat, delta)
            position = self._inside_workspace(start_position, position)
            delta[:3] = position - start_position
            if s.command_mode == "pose_target":
                self._target = (position, quat)
            self._holding = False
            self.hold_reason = None
        stamp = (self.node.get_clock().now() if stamp_ns is None else Time(nanoseconds=stamp_ns)).to_msg()
        self._delta_pub.publish(_twist(delta, s.base_frame, stamp))
        if self._target_pub is not None:
            self._target_pub.publish(_pose(position, quat, s.base_frame, stamp))
        self._command_gripper(gripper)
        with self._lock:
            self._grippers.append((Time.from_msg(stamp).nanoseconds, gripper))
        targeted = s.command_mode == "pose_target"
        return SentCommand(delta, gripper, position if targeted else None, quat if targeted else None)

    def _target_divergence(self, pose: MeasuredPose) -> str | None:
        """Why the commanded target and the measured pose are too far apart to go on, or None."""
        s = self.settings
        target = self.target
        if s.command_mode != "pose_target" or target is None:
            return None
        error_m = float(np.linalg.norm(target[0] - pose.position))
        error_rad = float(2 * np.arccos(np.clip(abs(np.dot(target[1], pose.quat_xyzw)), 0.0, 1.0)))
        if error_m <= s.max_target_error_m and error_rad <= s.max_target_error_rad:
            return None
        return (f"the commanded target is {error_m:.3f} m and {error_rad:.2f} rad from the measured pose on "
                f"{s.ee_pose_topic} (max_target_error_m={s.max_target_error_m}, max_target_error_rad="
                f"{s.max_target_error_rad}): the robot is not following; holding, the next target starts from the "
                f"measured pose")

    def _count_clamping(self, requested: np.ndarray, applied: np.ndarray) -> None:
        s = self.settings
        translation, rotation = np.linalg.norm(requested[:3]), np.linalg.norm(requested[3:])
        if translation > s.max_translation_per_step or rotation > s.max_rotation_per_step:
            self.steps_clamped += 1
        if translation > FAR_BEYOND_CLAMP * s.max_translation_per_step or \
                rotation > FAR_BEYOND_CLAMP * s.max_rotation_per_step:
            self.node.get_logger().warning(
                f"action of {translation:.3g} m and {rotation:.3g} rad per step clamped to "
                f"{np.linalg.norm(applied[:3]):.3g} m and {np.linalg.norm(applied[3:]):.3g} rad "
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
        self._delta_pub.publish(_twist(np.zeros(6), self.settings.base_frame, stamp))
        if self._target_pub is not None and target is not None:
            self._target_pub.publish(_pose(*target, self.settings.base_frame, stamp))
        return True

    def _inside_workspace(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Clip to the box; an axis already outside may only move back towards it (no jumps)."""
        low = np.minimum(np.asarray(self.settings.workspace_min), start)
        high = np.maximum(np.asarray(self.settings.workspace_max), start)
        return np.clip(end, low, high)

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


class FrankaGripper:
    """franka_gripper actions: Grasp when closing, Move to the open width when opening.

    A goal is sent only when the binary state changes; a goal still in flight is cancelled first,
    so the newest command always wins.
    """

    def __init__(self, node, settings: CommandSettings):
        from franka_msgs.action import Grasp, Move  # import-guarded by CommandSettings.validate
        from rclpy.action import ActionClient

        self.node, self.settings = node, settings
        self._grasp_type, self._move_type = Grasp, Move
        ns = settings.gripper_action_ns.rstrip("/")
        self._grasp_name, self._move_name = f"{ns}/grasp", f"{ns}/move"
        self._grasp = ActionClient(node, Grasp, self._grasp_name)
        self._move = ActionClient(node, Move, self._move_name)
        self._closed: bool | None = None
        self._goal_handle = None  # the accepted goal still running
        self._latest = 0  # id of the newest goal sent; older ones are cancelled when they are accepted
        self._lock = threading.Lock()

    def command(self, closed: bool) -> None:
        if closed == self._closed:
            return
        client, name = (self._grasp, self._grasp_name) if closed else (self._move, self._move_name)
        if not client.server_is_ready():
            self.node.get_logger().error(f"gripper action server {name} is not available",
                                         throttle_duration_sec=5.0)
            return  # retried on the next step: the state is not recorded as sent
        self._closed = closed
        s = self.settings
        if closed:
            goal = self._grasp_type.Goal(width=0.0, speed=s.gripper_speed, force=s.gripper_force)
            goal.epsilon.inner, goal.epsilon.outer = 0.005, s.gripper_open_width
        else:
            goal = self._move_type.Goal(width=s.gripper_open_width, speed=s.gripper_speed)
        with self._lock:
            self._latest += 1
            goal_id = self._latest
            if self._goal_handle is not None:
                self._goal_handle.cancel_goal_async()
                self._goal_handle = None
        client.send_goal_async(goal).add_done_callback(lambda future: self._on_goal_response(future, goal_id))

    def _on_goal_response(self, future, goal_id: int) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self.node.get_logger().error("gripper goal rejected by the franka_gripper action server")
            return
        with self._lock:
            if goal_id != self._latest:  # a newer command was sent meanwhile: this one is obsolete
                handle.cancel_goal_async()
                return
            self._goal_handle = handle
        handle.get_result_async().add_done_callback(lambda _f: self._on_done(handle))

    def _on_done(self, handle) -> None:
        with self._lock:
            if self._goal_handle is handle:
                self._goal_handle = None

    def destroy(self) -> None:
        self._grasp.destroy()
        self._move.destroy()


def _twist(delta6: np.ndarray, frame: str, stamp) -> TwistStamped:
    msg = TwistStamped()
    msg.header.frame_id, msg.header.stamp = frame, stamp
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in delta6[:3])
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in delta6[3:6])
    return msg


def _pose(position: np.ndarray, quat_xyzw: np.ndarray, frame: str, stamp) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id, msg.header.stamp = frame, stamp
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position)
    (msg.pose.orientation.x, msg.pose.orientation.y,
     msg.pose.orientation.z, msg.pose.orientation.w) = (float(v) for v in quat_xyzw)
    return msg
