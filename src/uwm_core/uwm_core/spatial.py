"""The action convention shared by teleop, datasets, the simulator and the policy node.

An action is ``[dx, dy, dz, rx, ry, rz, g]`` per control step: translation in metres and a
rotation vector in radians, both in the robot base frame, applied as

    p_new = p_old + d        R_new = exp(r) * R_old

and the gripper command ``g`` absolute in 0 (open) .. 1 (closed). Quaternions are (x, y, z, w),
the order of geometry_msgs/Quaternion.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

ACTION_DIM = 7
ACTION_NAMES = ("dx", "dy", "dz", "rx", "ry", "rz", "gripper")


def apply_delta(position, quat_xyzw, delta) -> tuple[np.ndarray, np.ndarray]:
    """Compose a 6-D delta (translation, rotation vector) onto a pose; returns (position, quat)."""
    delta = np.asarray(delta, dtype=np.float64)
    new_position = np.asarray(position, dtype=np.float64) + delta[:3]
    new_rotation = Rotation.from_rotvec(delta[3:6]) * Rotation.from_quat(quat_xyzw)
    return new_position, new_rotation.as_quat()


def delta_between(position0, quat0, position1, quat1) -> np.ndarray:
    """The 6-D delta that takes pose 0 to pose 1 (inverse of ``apply_delta``)."""
    translation = np.asarray(position1, dtype=np.float64) - np.asarray(position0, dtype=np.float64)
    rotation = Rotation.from_quat(quat1) * Rotation.from_quat(quat0).inv()
    return np.concatenate([translation, rotation.as_rotvec()])


def clamp_delta(delta, max_translation: float, max_rotation: float) -> np.ndarray:
    """Scale the translation to at most ``max_translation`` metres and the rotation to at most
    ``max_rotation`` radians, keeping their directions."""
    delta = np.array(delta, dtype=np.float64)
    for part, limit in ((slice(0, 3), max_translation), (slice(3, 6), max_rotation)):
        norm = np.linalg.norm(delta[part])
        if norm > limit:
            delta[part] *= limit / norm
    return delta
