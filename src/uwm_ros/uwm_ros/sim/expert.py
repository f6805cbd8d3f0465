"""A scripted expert for the sim tasks: privileged object poses in, one teleop action per step out.

The expert acts like a careful human teleoperator: it outputs ``[dx, dy, dz, rx, ry, rz, g]``
(the action convention of uwm_core.spatial) as a delta from the pose commanded so far, which the
teleop/policy command interface composes onto its target in ``pose_target`` mode, so its actions
are the deltas the recorder stores. Motions are limited per step (``max_translation``,
``max_rotation``) and the hand is kept pointing down with its fingers square to the object.

Lift:  approach above the cube, descend, close until the fingers stall on the cube, lift.
Stack: the same grasp of cubeA, then carry it above cubeB, lower it onto cubeB, open, retreat.
A grasp that misses or slips is detected from the finger opening and the cube's distance from
the hand, and the expert starts over from the approach.

The same ``ScriptedExpert`` drives the ROS node (expert_node.py) and the in-process benchmark
(bench/expert_success.py, through ``run_episode``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from uwm_core.spatial import ACTION_DIM, clamp_delta, delta_between

from .tasks import TaskSpec, get_task

HOVER_M = 0.08  # approach height of the hand above an object's centre
LIFT_M = 0.12  # lift height of the hand above the table (Lift)
CARRY_CLEARANCE_M = 0.04  # gap between the carried cube and cubeB's top while carrying
PLACE_GAP_M = 0.006  # gap between the cubes when the gripper opens
REACHED_M = 0.008  # position tolerance of a waypoint
ALIGNED_RAD = 0.06  # orientation tolerance of a waypoint
OPEN_WIDTH_M = 0.06  # finger opening needed before descending (fully open: 0.074)
HELD_WIDTH_M = 0.012  # finger opening above which something is between the fingers
HELD_DISTANCE_M = 0.03  # a held cube stays this close to the hand's centre
STALL_M = 0.0005  # finger motion per step below which closing has stopped
NEIGHBOUR_M = 0.12  # an object this close to the grasped one decides the finger direction
RELEASE_STEPS = 4
PHASE_TIMEOUT_STEPS = 40  # a phase that takes longer than this starts the attempt over


@dataclass
class ExpertObservation:
    """What the expert sees at one step (base frame; quaternions x, y, z, w)."""

    ee_position: np.ndarray
    ee_quat: np.ndarray
    finger_positions: np.ndarray  # both fingers' distances from the hand centre (m)
    objects: list  # [(position, quat)] in TaskSpec.objects order


def _yaw_of_x_axis(rotation: Rotation) -> float:
    x_axis = rotation.as_matrix()[:, 0]
    return float(np.arctan2(x_axis[1], x_axis[0]))


def _hand_down(finger_yaw: float) -> Rotation:
    """Hand orientation pointing straight down (z = -Z) with its finger axis (x) at ``finger_yaw``."""
    c, s = np.cos(finger_yaw), np.sin(finger_yaw)
    return Rotation.from_matrix(np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]]))


class ScriptedExpert:
    """One action per observation; call ``reset()`` at the start of every episode."""

    def __init__(self, task: str | TaskSpec, max_translation: float = 0.02, max_rotation: float = 0.1):
        self.task = task if isinstance(task, TaskSpec) else get_task(task)
        self.max_translation, self.max_rotation = max_translation, max_rotation
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self._phase_steps = 0
        self._target = None  # the commanded (position, quat) of the current step
        self._resting_heights = None  # objects' centre heights at rest = their half heights
        self._finger_yaw = None
        self._previous_width = None
        self._held_offset = None  # hand centre minus carried cube centre, measured while lifting

    # ------------------------------------------------------------------ helpers
    def _go(self, phase: str) -> None:
        self.phase, self._phase_steps = phase, 0

    def _move_towards(self, position, rotation: Rotation) -> np.ndarray:
        """The clamped delta from the commanded target towards (position, rotation)."""
        delta = delta_between(*self._target, np.asarray(position), rotation.as_quat())
        return clamp_delta(delta, self.max_translation, self.max_rotation)

    def _reached(self, obs: ExpertObservation, position, rotation: Rotation) -> bool:
        measured = delta_between(obs.ee_position, obs.ee_quat, np.asarray(position), rotation.as_quat())
        return bool(np.linalg.norm(measured[:3]) < REACHED_M and np.linalg.norm(measured[3:]) < ALIGNED_RAD)

    def _grasp_yaw(self, obs: ExpertObservation, cube_position, cube_quat) -> float:
        """Finger yaw square to the cube's faces: of the two, the one whose fingers stay clear of a
        neighbouring object, else the one closest to the hand's current yaw."""
        hand_yaw = _yaw_of_x_axis(Rotation.from_quat(self._target[1]))
        cube_yaw = _yaw_of_x_axis(Rotation.from_quat(cube_quat))
        quarter = np.pi / 2
        nearest = hand_yaw + (cube_yaw - hand_yaw + quarter / 2) % quarter - quarter / 2
        others = [np.asarray(p, float)[:2] - cube_position[:2] for p, _ in obs.objects[1:]]
        neighbour = min(others, key=np.linalg.norm, default=None)
        if neighbour is None or np.linalg.norm(neighbour) > NEIGHBOUR_M:
            return nearest
        towards = np.arctan2(neighbour[1], neighbour[0])
        # fingers along the cube's other axis when this one points at the neighbour
        return nearest if abs(np.sin(nearest - towards)) >= abs(np.cos(nearest - towards)) else nearest + quarter

    def _holding(self, obs: ExpertObservation, cube_position) -> bool:
        width = float(np.sum(obs.finger_positions))
        return width > HELD_WIDTH_M and np.linalg.norm(obs.ee_position - cube_position) < HELD_DISTANCE_M

    # ------------------------------------------------------------------ policy
    def act(self, obs: ExpertObservation, target=None) -> np.ndarray:
        """The action for this step, [dx, dy, dz, rx, ry, rz, gripper], as a delta from ``target``:
        the pose commanded so far, (position, quat); None at the start of an episode, when the
        command interface seeds its target from the measured pose."""
        self._target = (np.asarray(obs.ee_position, float), np.asarray(obs.ee_quat, float)) if target is None else (
            np.asarray(target[0], float), np.asarray(target[1], float))
        if self._resting_heights is None:
            self._resting_heights = [float(position[2]) for position, _ in obs.objects]
            self._finger_yaw = _yaw_of_x_axis(Rotation.from_quat(obs.ee_quat))
        self._phase_steps += 1
        final_phase = "lift" if self.task.name == "lift" else "retreat"
        if self._phase_steps > PHASE_TIMEOUT_STEPS and self.phase != final_phase:
            self._go("approach")
        delta, gripper = self._step_phase(obs)
        self._previous_width = float(np.sum(obs.finger_positions))
        action = np.zeros(ACTION_DIM, dtype=np.float32)
        action[:6], action[6] = delta, gripper
        return action

    def _step_phase(self, obs: ExpertObservation) -> tuple[np.ndarray, float]:
        cube_position, cube_quat = (np.asarray(v, float) for v in obs.objects[0])
        if self.phase in ("approach", "descend", "close"):
            if self.phase == "approach":
                self._finger_yaw = self._grasp_yaw(obs, cube_position, cube_quat)
            orientation = _hand_down(self._finger_yaw)
            above = cube_position + [0.0, 0.0, HOVER_M]
            if self.phase == "approach":
                if self._reached(obs, above, orientation) and np.sum(obs.finger_positions) > OPEN_WIDTH_M:
                    self._go("descend")
                return self._move_towards(above, orientation), 0.0
            if self.phase == "descend":
                if self._reached(obs, cube_position, orientation):
                    self._go("close")
                return self._move_towards(cube_position, orientation), 0.0
            # close: hold still until the fingers stop moving, then lift if the cube is between them
            width = float(np.sum(obs.finger_positions))
            stalled = self._phase_steps > 2 and abs(width - self._previous_width) < STALL_M
            if stalled:
                self._go("lift" if self._holding(obs, cube_position) else "approach")
            return np.zeros(6), 1.0
        if self.phase in ("lift", "carry", "place") and not self._holding(obs, cube_position):
            self._go("approach")  # the cube slipped: open and start over
            return np.zeros(6), 0.0
        orientation = Rotation.from_quat(self._target[1])
        if self.phase == "lift":
            self._held_offset = obs.ee_position - cube_position
            if self.task.name == "lift":
                goal = np.array([*self._target[0][:2], LIFT_M])
                return self._move_towards(goal, orientation), 1.0
            # stack: rise until the carried cube clears cubeB, then carry
            return self._stack_phase(obs, orientation)
        if self.phase in ("carry", "place", "release", "retreat"):
            return self._stack_phase(obs, orientation)
        raise RuntimeError(f"scripted expert in unknown phase {self.phase!r}")

    def _stack_phase(self, obs: ExpertObservation, orientation: Rotation):
        base_position = np.asarray(obs.objects[1][0], float)
        carried_half, base_half = self._resting_heights
        stacked = base_position + [0.0, 0.0, base_half + carried_half + PLACE_GAP_M]  # carried cube centre
        carry = stacked + [0.0, 0.0, CARRY_CLEARANCE_M]
        offset = self._held_offset
        if self.phase == "lift":
            goal = np.array([*self._target[0][:2], carry[2] + offset[2]])
            if self._reached(obs, goal, orientation):
                self._go("carry")
            return self._move_towards(goal, orientation), 1.0
        if self.phase == "carry":
            goal = carry + offset
            if self._reached(obs, goal, orientation):
                self._go("place")
            return self._move_towards(goal, orientation), 1.0
        if self.phase == "place":
            goal = stacked + offset
            if self._reached(obs, goal, orientation):
                self._go("release")
            return self._move_towards(goal, orientation), 1.0
        if self.phase == "release":
            if self._phase_steps >= RELEASE_STEPS:
                self._go("retreat")
            return np.zeros(6), 0.0
        goal = np.array([*self._target[0][:2], stacked[2] + HOVER_M])  # retreat
        return self._move_towards(goal, orientation), 0.0


def observe(sim) -> ExpertObservation:
    """The expert's observation of a SimFranka (the same values the sim node publishes)."""
    position, quat = sim.ee_pose()
    return ExpertObservation(position, quat, sim.finger_positions(), sim.object_poses())


def run_episode(sim, expert: ScriptedExpert, seed: int, max_steps: int | None = None) -> tuple[bool, int]:
    """One in-process episode, commanded as in pose_target mode: the expert's delta is composed onto
    the sim's target each step. Returns (success, steps); success is checked after every step."""
    sim.reset(seed)
    expert.reset()
    for step in range(1, (max_steps or sim.task.max_steps) + 1):
        action = expert.act(observe(sim), sim.target)
        sim.apply_delta(action[:6])
        sim.set_gripper(float(action[6]))
        sim.step()
        if sim.success():
            return True, step
    return False, max_steps or sim.task.max_steps
