"""What the teleop and recorder tests share: the venv's console scripts and the robot they drive."""
from __future__ import annotations

import sys
from pathlib import Path

from doubles.synthetic_robot import SyntheticRobot

BIN = Path(sys.executable).parent  # the venv's console scripts (uwm-recorder, uwm-teleop, ...)
POSE_TOPIC, TARGET_TOPIC, GRIPPER_TOPIC = "/robot/current_pose", "/robot/target_pose", "/gripper/command"


def teleop_robot(cameras: dict, camera_rate_hz: float, keep_published: bool = False) -> SyntheticRobot:
    """A robot whose pose (30 Hz) follows the target the teleop node (``/teleop``) commands.

    ``cameras``: name -> (topic, (height, width), encoding)."""
    robot = SyntheticRobot("/", {name: topic for name, (topic, _, _) in cameras.items()}, POSE_TOPIC,
                           TARGET_TOPIC, GRIPPER_TOPIC, commander="/teleop", camera_rate_hz=camera_rate_hz,
                           pose_rate_hz=30.0, keep_published=keep_published)
    for name, (_, shape, encoding) in cameras.items():
        robot.cameras[name].shape, robot.cameras[name].encoding = shape, encoding
    robot.follow_target = True
    return robot
