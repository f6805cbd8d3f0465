"""The robot interface's parameters: names, defaults, descriptions and their checks.

Shared by every node that commands the robot (policy, teleop, the sim's scripted expert), so a
params file means the same thing to all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .franka_gripper import franka_msgs_available
from .parameters import declare_parameters, parameter_value

COMMAND_MODES = ("pose_target", "delta")
GRIPPER_MODES = ("topic", "franka_action", "none")


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
