"""Turning one recorded episode's streams into control steps: pure numpy, no ROS, no I/O.

Times are integer nanoseconds. A *step* k has an observation time ``times[k]`` (every camera's
frame is the latest one stamped at or before it: no future leakage) and a command interval that
ends (exclusively) at ``ends[k]``; its action is what was commanded in that interval, in the
action convention of ``uwm_core.spatial`` (``R_new = exp(r) * R_old``, base frame).

Steps come from the command stream, resampled to the control period ``dt``:

* commands at about the control rate (0.67x .. 1.5x): one step per command, at its stamp;
* faster commands: a grid of period ``dt`` anchored half a command period before the first
  command; a step's action is the composition of the commands in its cell, its observation time
  the first command in the cell (or the cell's nominal time when the cell has none: zero motion,
  the target held);
* slower commands are refused (the data cannot say what happened in between).

Without commands, the measured pose stream gives a plain grid and the actions are the pose
differences between consecutive grid times.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spatial import STATE_DIM, apply_delta, delta_between, proprio_state

IDENTITY_QUAT = np.array([0.0, 0.0, 0.0, 1.0])
ONE_STEP_PER_COMMAND = (0.67, 1.5)  # command rate / control rate within which commands are steps


class AlignmentError(ValueError):
    """Streams that cannot be turned into steps; the message says which and why."""


@dataclass
class StepPlan:
    times: np.ndarray  # int64 (K,) observation time of each step
    ends: np.ndarray  # int64 (K,) exclusive end of each step's command interval
    actions6: np.ndarray  # float64 (K, 6) translation + rotation vector of each step
    valid: np.ndarray  # bool (K,) False where no action could be formed
    invalid_reason: str | None = None  # why steps are invalid (one reason per plan suffices)


def latest_at_or_before(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the last of the sorted ``stamps`` that is <= each of ``times``; -1 when none."""
    return np.searchsorted(stamps, times, side="right") - 1


def latest_before(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the last of the sorted ``stamps`` that is < each of ``times``; -1 when none."""
    return np.searchsorted(stamps, times, side="left") - 1


def compose_deltas(deltas: np.ndarray) -> np.ndarray:
    """One 6-D delta equal to applying ``deltas`` (N, 6) in order."""
    position, quat = np.zeros(3), IDENTITY_QUAT
    for delta in deltas:
        position, quat = apply_delta(position, quat, delta)
    return delta_between(np.zeros(3), IDENTITY_QUAT, position, quat)


def command_steps(times: np.ndarray, dt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps of a command stream: (step times, step ends, step index of each command)."""
    times = np.asarray(times, dtype=np.int64)
    if times.size == 0:
        raise AlignmentError("no commands")
    if times.size == 1:
        return times.copy(), times + dt, np.zeros(1, dtype=np.int64)
    period = int(np.median(np.diff(times)))
    ratio = dt / max(period, 1)
    if ratio < ONE_STEP_PER_COMMAND[0]:
        raise AlignmentError(f"commands arrive at {1e9 / period:.2f} Hz, slower than the control rate "
                             f"{1e9 / dt:.2f} Hz: lower fps or record the commands at the control rate")
    if ratio < ONE_STEP_PER_COMMAND[1]:
        ends = np.minimum(np.append(times[1:], times[-1] + dt), times + dt)
        return times.copy(), ends, np.arange(times.size, dtype=np.int64)
    origin = times[0] - period // 2
    step_of_command = (times - origin) // dt
    cell_starts = origin + np.arange(step_of_command[-1] + 1, dtype=np.int64) * dt
    step_times = cell_starts + period // 2
    occupied, first_command = np.unique(step_of_command, return_index=True)
    step_times[occupied] = times[first_command]
    return step_times, cell_starts + dt, step_of_command


def steps_from_deltas(times: np.ndarray, deltas: np.ndarray, dt: int) -> StepPlan:
    """Actions from recorded per-step deltas (``~/delta_ee``)."""
    step_times, ends, step_of_command = command_steps(times, dt)
    actions = np.zeros((step_times.size, 6))
    if step_of_command.size == step_times.size and (step_of_command == np.arange(step_times.size)).all():
        actions[:] = deltas
    else:
        for step in np.unique(step_of_command):
            actions[step] = compose_deltas(deltas[step_of_command == step])
    return StepPlan(step_times, ends, actions, np.ones(step_times.size, dtype=bool))


def steps_from_targets(times: np.ndarray, positions: np.ndarray, quats: np.ndarray, dt: int,
                       measured: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> StepPlan:
    """Actions from commanded target poses: the change of the target in force over each step.

    The target before the first one is the measured pose at the first step (the command interface
    seeds its target from it); without measured poses the first step has no action.
    """
    step_times, ends, step_of_command = command_steps(times, dt)
    count = step_times.size
    # the target in force at the end of each step: the last command of the step or an earlier one
    last_command = latest_at_or_before(step_of_command, np.arange(count))
    actions = np.zeros((count, 6))
    valid = np.ones(count, dtype=bool)
    reason = None
    for k in range(count):
        current = last_command[k]
        if k > 0:
            previous = last_command[k - 1]
            start = positions[previous], quats[previous]
        else:
            seed = -1 if measured is None else latest_at_or_before(measured[0], step_times[:1])[0]
            if seed < 0:
                valid[0] = False
                reason = "no measured pose before the first target (the first step has no action)"
                continue
            start = measured[1][seed], measured[2][seed]
        actions[k] = delta_between(*start, positions[current], quats[current])
    return StepPlan(step_times, ends, actions, valid, reason)


def steps_from_poses(times: np.ndarray, positions: np.ndarray, quats: np.ndarray, dt: int) -> StepPlan:
    """Actions from measured poses on a grid of period ``dt``: the motion to the next grid time."""
    times = np.asarray(times, dtype=np.int64)
    if times.size < 2:
        raise AlignmentError("fewer than two measured poses")
    count = int((times[-1] - times[0]) // dt)
    if count < 1:
        raise AlignmentError(f"measured poses span {(times[-1] - times[0]) / 1e9:.3f} s, less than one control step")
    grid = times[0] + np.arange(count + 1, dtype=np.int64) * dt
    at = latest_at_or_before(times, grid)
    actions = np.stack([delta_between(positions[at[k]], quats[at[k]], positions[at[k + 1]], quats[at[k + 1]])
                        for k in range(count)])
    return StepPlan(grid[:-1], grid[1:], actions, np.ones(count, dtype=bool))


def gripper_per_step(ends: np.ndarray, times: np.ndarray, values: np.ndarray, default: float) -> np.ndarray:
    """The absolute gripper command in force at the end of each step (``default`` before the first)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return np.full(len(ends), float(default))
    at = latest_before(np.asarray(times, dtype=np.int64), ends)
    return np.where(at >= 0, values[np.maximum(at, 0)], default)


def states_at(times, pose_times, poses, gripper_times, gripper_values, gripper_default: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Proprioceptive state at each of ``times``: the latest measured pose (``poses`` (N, 7):
    position, quaternion xyzw) at or before it and the gripper command in force just before it.
    Returns (float32 (len(times), STATE_DIM), pose index per time, -1 where no pose is that old:
    those rows are NaN)."""
    times = np.asarray(times, dtype=np.int64)
    at = latest_at_or_before(np.asarray(pose_times, dtype=np.int64), times)
    gripper = gripper_per_step(times, gripper_times, gripper_values, gripper_default)
    states = np.full((times.size, STATE_DIM), np.nan, dtype=np.float32)
    found = at >= 0
    if found.any():
        poses = np.asarray(poses, dtype=np.float64)[at[found]]
        states[found] = proprio_state(poses[:, :3], poses[:, 3:], gripper[found])
    return states, at


def frames_for_steps(step_times: np.ndarray, frame_times: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame index, usable) per step: the latest frame at or before the step, usable when it
    exists and is at most ``max_gap`` older than the step."""
    frame_times = np.asarray(frame_times, dtype=np.int64)
    index = latest_at_or_before(frame_times, step_times)
    if frame_times.size == 0:
        return index, np.zeros(len(step_times), dtype=bool)
    gap = step_times - frame_times[np.maximum(index, 0)]
    return index, (index >= 0) & (gap <= max_gap)
