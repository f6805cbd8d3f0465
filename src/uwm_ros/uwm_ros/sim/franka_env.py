"""A Franka Panda on a table in MuJoCo (robosuite), driven like a Cartesian impedance controller.

Frames: every pose in and out of ``SimFranka`` is in the robot base frame (the Panda's link0,
x forward, z up; robosuite's world frame is only translated from it, by (-0.56, 0, 0.912) m).
The table top is raised to the base's height, as on a real table-mounted Franka: the table
surface is z = 0 and the table centre is at x = 0.56 m in the base frame.

Control: robosuite's operational-space controller in ``absolute`` mode holds a target pose (the
equilibrium of an impedance controller) until a new one is set, exactly like franka_ros2's
Cartesian impedance controller holds its last ``target_pose``. ``set_target`` sets it directly;
``apply_delta`` composes an action-convention delta onto the current target (uwm_core.spatial),
so a commanded 5 cm step moves the hand 5 cm (no [-1, 1] input scaling is involved). The gripper
is binary like franka_gripper's Grasp/Move: commands above 0.5 close it, others open it.
"""
from __future__ import annotations

import functools
import logging
from xml.etree import ElementTree

import numpy as np
from scipy.spatial.transform import Rotation

from uwm_core.spatial import apply_delta

from .rendering import CameraRenderer, check_rendering, configure_headless_gl
from .tasks import TaskSpec, get_task

configure_headless_gl()  # before anything imports mujoco

PHYSICS_TIMESTEP_S = 0.002  # robosuite's simulation timestep
BASE_HEIGHT_M = 0.912  # robosuite's Panda base above the floor; the table top is raised to it
GRIPPER_CLOSE_THRESHOLD = 0.5
SETTLE_STEPS = 3  # control steps after a reset before the episode starts

# Scene cameras added to every task, in the base frame: (x, y, z, then the point looked at), metres.
# Two external views of the workspace from the front left and front right, looking down at about
# 40 degrees (a DROID-like rig): both horizontal axes of the cube's position show in each view
# (a side view sees y only as depth), and the 4 cm cube stays 3-4 px wide at 32 px.
SCENE_CAMERAS = {
    "scene_left": (0.80, 0.35, 0.50, 0.52, 0.0, 0.05),
    "scene_right": (0.80, -0.35, 0.50, 0.52, 0.0, 0.05),
}
SCENE_CAMERA_FOVY_DEG = 38.0
DEFAULT_CAMERAS = {"left": "scene_left", "right": "scene_right", "wrist": "robot0_eye_in_hand"}


@functools.cache
def _import_robosuite():
    """Import robosuite without its import-time chatter (macro-file warnings, controller INFO)."""
    logging.disable(logging.WARNING)
    try:
        import robosuite
        from robosuite.controllers import load_composite_controller_config
    finally:
        logging.disable(logging.NOTSET)
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    return robosuite, load_composite_controller_config


def _look_at_xyaxes(position, target) -> str:
    """MuJoCo camera ``xyaxes`` for a camera at ``position`` looking at ``target`` (z up)."""
    backward = np.asarray(position, float) - np.asarray(target, float)
    backward /= np.linalg.norm(backward)
    right = np.cross([0.0, 0.0, 1.0], backward)
    right /= np.linalg.norm(right)
    up = np.cross(backward, right)
    return " ".join(f"{v:.6f}" for v in (*right, *up))


def _add_scene_cameras(xml: str, base_body: str, cameras: tuple, fovy_deg: float) -> str:
    """Add the scene cameras ((name, (x, y, z, look_x, look_y, look_z)), ...) as children of the
    robot base body (so their poses are in the base frame)."""
    root = ElementTree.fromstring(xml)
    base = root.find(f".//body[@name='{base_body}']")
    if base is None:
        raise RuntimeError(f"robosuite model has no body {base_body!r} to attach the scene cameras to")
    for name, placement in cameras:
        position, target = placement[:3], placement[3:]
        ElementTree.SubElement(base, "camera", name=name, mode="fixed", fovy=f"{fovy_deg}",
                               pos=" ".join(f"{v}" for v in position), xyaxes=_look_at_xyaxes(position, target))
    return ElementTree.tostring(root, encoding="unicode")


def check_scene_cameras(cameras: dict, fovy_deg: float) -> None:
    """ValueError naming the camera whose placement is not 6 finite numbers with distinct ends."""
    if not 1.0 <= fovy_deg <= 170.0:
        raise ValueError(f"scene camera field of view {fovy_deg} deg must be in 1..170")
    for name, placement in cameras.items():
        values = np.asarray(placement, dtype=float)
        if values.shape != (6,) or not np.isfinite(values).all() or np.linalg.norm(values[:3] - values[3:]) < 1e-3:
            raise ValueError(f"scene camera {name!r}: {list(placement)} must be [x, y, z, look_x, look_y, look_z] "
                             f"(metres, base frame) with the camera away from the point it looks at")
        if np.linalg.norm(np.cross([0.0, 0.0, 1.0], values[:3] - values[3:])) < 1e-6:
            raise ValueError(f"scene camera {name!r}: {list(placement)} looks straight down or up; "
                             f"offset it horizontally from the point it looks at")


@functools.cache
def _environment_class(robosuite_env: str, scene_cameras: tuple, fovy_deg: float):
    """The robosuite task class with its table top at the robot base's height and our scene
    cameras added to its model."""
    robosuite, _ = _import_robosuite()
    base = robosuite.environments.base.REGISTERED_ENVS[robosuite_env]

    def edit_model_xml(self, xml_str):
        return _add_scene_cameras(base.edit_model_xml(self, xml_str), self.robots[0].robot_model.root_body,
                                  scene_cameras, fovy_deg)

    # Lift and Stack hard-code table_offset in __init__; a read-only property overrides it.
    table_offset = property(lambda self: np.array([0.0, 0.0, BASE_HEIGHT_M]), lambda self, value: None)
    return type(f"Uwm{robosuite_env}", (base,), {"edit_model_xml": edit_model_xml, "table_offset": table_offset})


def _absolute_pose_controller() -> dict:
    """robosuite's Panda OSC_POSE arm controller, taking absolute base-frame targets."""
    _, load_config = _import_robosuite()
    config = load_config(controller="BASIC", robot="Panda")
    arm = dict(config["body_parts"]["right"], input_type="absolute", input_ref_frame="base")
    config["body_parts"] = {"right": arm}
    return config


def _pose_in(frame_position, frame_rotation, position, rotation_matrix):
    """A world pose expressed in a frame given by its world position and rotation matrix."""
    position = frame_rotation.T @ (np.asarray(position) - frame_position)
    quat_xyzw = Rotation.from_matrix(frame_rotation.T @ np.asarray(rotation_matrix).reshape(3, 3)).as_quat()
    return position, quat_xyzw


class SimFranka:
    """One simulated task: reset by seed, command poses and the gripper, step, read state, render.

    ``cameras`` maps our camera names (e.g. left/right/wrist) to cameras of the scene; the scene has
    robosuite's (frontview, birdview, agentview, sideview, robot0_robotview, robot0_eye_in_hand) and
    ours (scene_left, scene_right). Images are uint8 RGB (height, width, 3).
    """

    def __init__(self, task: str | TaskSpec = "lift", cameras: dict[str, str] | None = None, width: int = 64,
                 height: int = 64, control_rate_hz: float = 10.0, fast_render: bool = True,
                 scene_cameras: dict[str, tuple] | None = None, scene_camera_fovy_deg: float = SCENE_CAMERA_FOVY_DEG):
        self.task = task if isinstance(task, TaskSpec) else get_task(task)
        self.cameras = dict(DEFAULT_CAMERAS if cameras is None else cameras)
        if width <= 0 or height <= 0:
            raise ValueError(f"image size {width}x{height} must be positive")
        substeps = round(1.0 / (control_rate_hz * PHYSICS_TIMESTEP_S)) if control_rate_hz > 0 else 0
        if substeps < 1 or abs(substeps * PHYSICS_TIMESTEP_S * control_rate_hz - 1.0) > 1e-6:
            raise ValueError(f"control_rate_hz={control_rate_hz} must divide the {1 / PHYSICS_TIMESTEP_S:.0f} Hz "
                             "physics rate (e.g. 5, 10, 20, 25, 50)")
        self.period_s = substeps * PHYSICS_TIMESTEP_S
        if self.cameras:
            check_rendering()
        scene_cameras = dict(SCENE_CAMERAS if scene_cameras is None else scene_cameras)
        check_scene_cameras(scene_cameras, scene_camera_fovy_deg)
        placements = tuple((name, tuple(float(v) for v in placement)) for name, placement in scene_cameras.items())
        self.env = _environment_class(self.task.robosuite_env, placements, float(scene_camera_fovy_deg))(
            robots="Panda", controller_configs=_absolute_pose_controller(),
            has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, use_object_obs=False,
            control_freq=control_rate_hz, horizon=10**9, ignore_done=True, hard_reset=False)
        sim, robot = self.env.sim, self.env.robots[0]
        self._base_body = sim.model.body_name2id(robot.robot_model.root_body)
        self._eef_site = robot.eef_site_id["right"]
        self._finger_qpos = np.asarray(robot._ref_gripper_joint_pos_indexes["right"])
        self._object_bodies = [sim.model.body_name2id(getattr(self.env, name).root_body) for name in self.task.objects]
        scene_cameras = [sim.model.camera_id2name(i) for i in range(sim.model.ncam)]
        for ours, source in self.cameras.items():
            if source not in scene_cameras:
                raise ValueError(f"camera {ours!r} maps to {source!r}, which the {self.task.name} scene cannot "
                                 f"render; valid cameras: {', '.join(scene_cameras)}")
        self.scene_cameras = scene_cameras
        self._renderer = (CameraRenderer(sim.model._model, sim.data._data, width, height, fast=fast_render)
                          if self.cameras else None)
        self.seed: int | None = None
        self.steps = 0
        self._target = (np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        self._gripper_closed = False

    # ---------------------------------------------------------------- episode
    def reset(self, seed: int) -> None:
        """Start an episode: objects placed and the arm perturbed by ``seed`` alone, then
        SETTLE_STEPS of holding still with the gripper opening (dropped objects come to rest); the
        target is the measured hand pose."""
        # robosuite draws object placement and joint noise from env.rng (shared with its placement
        # sampler), so reseeding it in place makes the whole reset a function of the seed.
        self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.env.reset()
        self._target = self.ee_pose()
        self._gripper_closed = False
        for _ in range(SETTLE_STEPS):
            self.step()
        self.seed, self.steps = int(seed), 0
        self._target = self.ee_pose()

    def step(self) -> None:
        """Advance one control period towards the current target and gripper command."""
        position, quat_xyzw = self._target
        grip = 1.0 if self._gripper_closed else -1.0
        self.env.step(np.concatenate([position, Rotation.from_quat(quat_xyzw).as_rotvec(), [grip]]))
        self.steps += 1

    # ---------------------------------------------------------------- commands
    def set_target(self, position, quat_xyzw) -> None:
        """The impedance equilibrium in the base frame (held until the next command)."""
        quat = np.asarray(quat_xyzw, dtype=np.float64)
        self._target = (np.asarray(position, dtype=np.float64).copy(), quat / np.linalg.norm(quat))

    def apply_delta(self, delta6) -> None:
        """Compose one action-convention delta [dx, dy, dz, rx, ry, rz] onto the target."""
        self._target = apply_delta(*self._target, delta6)

    def set_gripper(self, command: float) -> None:
        """0 (open) .. 1 (closed); binary at 0.5 like franka_gripper's Grasp/Move."""
        self._gripper_closed = float(command) > GRIPPER_CLOSE_THRESHOLD

    @property
    def target(self) -> tuple[np.ndarray, np.ndarray]:
        return self._target[0].copy(), self._target[1].copy()

    @property
    def gripper_command(self) -> float:
        return 1.0 if self._gripper_closed else 0.0

    # ---------------------------------------------------------------- state
    def _base(self):
        data = self.env.sim.data
        return data.body_xpos[self._base_body], data.body_xmat[self._base_body].reshape(3, 3)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured pose of the hand's tool centre point (between the fingertips): (position, quat xyzw)."""
        data = self.env.sim.data
        return _pose_in(*self._base(), data.site_xpos[self._eef_site], data.site_xmat[self._eef_site])

    def finger_positions(self) -> np.ndarray:
        """Both fingers' distances from the hand's centre (m), as franka_gripper's joint_states."""
        first, second = self.env.sim.data.qpos[self._finger_qpos]
        return np.array([first, -second])

    def object_poses(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(position, quat xyzw) of the task's objects, in TaskSpec.objects order."""
        data = self.env.sim.data
        return [_pose_in(*self._base(), data.body_xpos[b], data.body_xmat[b]) for b in self._object_bodies]

    def success(self) -> bool:
        return bool(self.env._check_success())

    def render(self) -> dict[str, np.ndarray]:
        """One frame per configured camera (our names), all of this instant."""
        frames = self._renderer.render(list(dict.fromkeys(self.cameras.values())))
        return {ours: frames[source] for ours, source in self.cameras.items()}

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.env.close()
