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


# Proprioceptive state: end-effector position (m), the first two columns of its rotation matrix
# (a continuous rotation representation, unlike quaternions whose sign flips) and the gripper
# command in effect (0 open .. 1 closed), all in the robot base frame.
STATE_NAMES = ("x", "y", "z", "r00", "r10", "r20", "r01", "r11", "r21", "gripper")
STATE_DIM = len(STATE_NAMES)


def proprio_state(positions, quats_xyzw, gripper) -> np.ndarray:
    """float32 (..., STATE_DIM) from positions (..., 3), quaternions (..., 4) and gripper (...)."""
    positions = np.asarray(positions, dtype=np.float64)
    quats = np.asarray(quats_xyzw, dtype=np.float64)
    lead = positions.shape[:-1]
    matrices = Rotation.from_quat(quats.reshape(-1, 4)).as_matrix().reshape(*lead, 3, 3)
    columns = matrices[..., :, :2].swapaxes(-1, -2).reshape(*lead, 6)  # column 0 then column 1
    gripper = np.broadcast_to(np.asarray(gripper, dtype=np.float64), lead)[..., None]
    return np.concatenate([positions, columns, gripper], axis=-1).astype(np.float32)
