"""The arithmetic of one command step, without ROS: pose checks, clamps, workspace box, divergence.

``CommandInterface`` (command_interface.py) publishes what these functions decide; keeping them
plain makes every safety rule testable with numbers alone.
"""
from __future__ import annotations

import numpy as np

from uwm_core.spatial import apply_delta, clamp_delta

from .command_settings import CommandSettings

QUAT_NORM_TOLERANCE = 0.01  # a measured orientation's quaternion norm must be within 1 % of 1
FAR_BEYOND_CLAMP = 10.0  # an action this many times the per-step clamp is a unit or model error: warn


def measured_pose_problem(frame_id: str, position: np.ndarray, quat_xyzw: np.ndarray, ahead_s: float,
                          s: CommandSettings) -> str | None:
    """Why a measured pose must be refused (wrong frame, not finite, not a unit quaternion, stamped
    in the future), or None. ``ahead_s``: its stamp minus this node's clock."""
    norm = np.linalg.norm(quat_xyzw)
    if frame_id != s.base_frame:
        return f"is in frame {frame_id!r}, expected base_frame {s.base_frame!r}"
    if not (np.isfinite(position).all() and np.isfinite(quat_xyzw).all()):
        return "is not finite"
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        return f"has a quaternion of norm {norm:.3g}, not a unit one (tolerance {QUAT_NORM_TOLERANCE})"
    if ahead_s > s.max_future_stamp_s:
        return (f"is stamped {ahead_s:.2f} s in the future (max_future_stamp_s={s.max_future_stamp_s}): its "
                f"clock is not synchronised with this node's")
    return None


def inside_workspace(start: np.ndarray, end: np.ndarray, s: CommandSettings) -> np.ndarray:
    """Clip to the box; an axis already outside may only move back towards it (no jumps)."""
    low = np.minimum(np.asarray(s.workspace_min), start)
    high = np.maximum(np.asarray(s.workspace_max), start)
    return np.clip(end, low, high)


def step_pose(start_position: np.ndarray, start_quat: np.ndarray, requested: np.ndarray, s: CommandSettings
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The applied 6-D delta and the new (position, quat_xyzw) for a requested 6-D delta: clamped
    per step, then kept inside the workspace box (the applied translation is what remains)."""
    delta = clamp_delta(requested, s.max_translation_per_step, s.max_rotation_per_step)  # (6,)
    position, quat = apply_delta(start_position, start_quat, delta)
    position = inside_workspace(start_position, position, s)
    delta[:3] = position - start_position
    return delta, position, quat


def exceeds_clamp(requested: np.ndarray, s: CommandSettings, factor: float = 1.0) -> bool:
    """Whether the requested 6-D delta is beyond ``factor`` times a per-step clamp."""
    return bool(np.linalg.norm(requested[:3]) > factor * s.max_translation_per_step
                or np.linalg.norm(requested[3:]) > factor * s.max_rotation_per_step)


def target_divergence(target: tuple[np.ndarray, np.ndarray], position: np.ndarray, quat_xyzw: np.ndarray,
                      s: CommandSettings) -> str | None:
    """Why the commanded target and the measured pose are too far apart to go on, or None."""
    error_m = float(np.linalg.norm(target[0] - position))
    error_rad = float(2 * np.arccos(np.clip(abs(np.dot(target[1], quat_xyzw)), 0.0, 1.0)))
    if error_m <= s.max_target_error_m and error_rad <= s.max_target_error_rad:
        return None
    return (f"the commanded target is {error_m:.3f} m and {error_rad:.2f} rad from the measured pose on "
            f"{s.ee_pose_topic} (max_target_error_m={s.max_target_error_m}, max_target_error_rad="
            f"{s.max_target_error_rad}): the robot is not following; holding, the next target starts from the "
            f"measured pose")
