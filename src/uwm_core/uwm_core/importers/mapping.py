"""How a source dataset's columns and cameras become uwm episodes: mapping files and resampling.

A mapping file (``config/import/<name>.yaml``, or any YAML path) names, per source dataset:

    format: lerobot | hdf5         the importer it is written for
    fps: 10                        output control rate; the source is resampled (null: keep its rate)
    source_fps: 20                 HDF5 only: the rate the demonstrations were recorded at
    cameras: {ours: source key}    e.g. {left: observation.images.exterior_1_left}
    flip: none                     none | vertical | horizontal | both, applied to every image
    metadata: [building, ...]      per-episode values copied into episode metadata (and --where)
    task_from: file_name           HDF5 only: file_name (LIBERO) | env_name (robomimic env_args)
    actions: {...}                 how to form ``[dx, dy, dz, rx, ry, rz, g]`` (below)

Columns are written ``name``, ``name[i]`` or ``name[a:b]`` (a LeRobot feature or an HDF5
dataset under the demo group, e.g. ``obs/ee_pos[0:3]``). Action kinds:

``delta``: the source already holds a per-step relative command::

    translation: actions[0:3]      translation_scale: 0.05    (source unit -> metres)
    rotation: actions[3:6]         rotation_scale: 0.5        rotation_format: rotvec | euler_xyz
    clip_norm: 1.0                 optional: a vector longer than this is scaled down to it first
    gripper: actions[6]            gripper_range: [-1, 1]     (source values meaning open, closed)

``target_pose``: the source holds the commanded absolute end-effector pose of each step; the
action is the change of the commanded target over the step (as ``uwm-bag2dataset`` does for
teleoperation), the target before the first step being the measured pose at the first frame::

    position: action.cartesian_position[0:3]     rotation: action.cartesian_position[3:6]
    initial_position: observation.state.cartesian_position[0:3]
    initial_rotation: observation.state.cartesian_position[3:6]
    rotation_format: euler_xyz     gripper: action.gripper_position[0]   gripper_range: [0, 1]

Resampling (``fps`` below the source rate): output step k starts at source frame
``s_k = floor(k * source_fps / fps)`` (the latest source frame at or before time k / fps), its
frame is frame ``s_k``, and its action is the composition of the source steps ``s_k .. s_{k+1}-1``
(for ``target_pose``: the target after step ``s_{k+1}-1`` relative to the target before ``s_k``);
the gripper is the command in force at the end of the step. Without resampling every source
step is one output step and the action is the source step's, unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from ..config import config_dir
from ..spatial import apply_delta, delta_between

ROTATION_FORMATS = ("rotvec", "euler_xyz")
FLIPS = {"none": (), "vertical": (1,), "horizontal": (2,), "both": (1, 2)}  # axes of (T, H, W, 3)
ACTION_KINDS = ("delta", "target_pose")
COLUMN_PATTERN = re.compile(r"^\s*(?P<name>[^\[\]]+?)\s*(\[\s*(?P<a>-?\d*)\s*(?P<colon>:)?\s*(?P<b>-?\d*)\s*\])?\s*$")
IDENTITY_QUAT = np.array([0.0, 0.0, 0.0, 1.0])


class MappingError(ValueError):
    """A mapping file or column reference that cannot be used; names the file and key."""


@dataclass(frozen=True)
class ColumnRef:
    """``name[a:b]``: columns a..b-1 of a per-frame source array (``name[i]``: column i)."""

    name: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text: str, where: str) -> "ColumnRef":
        match = COLUMN_PATTERN.match(str(text))
        if not match:
            raise MappingError(f"{where}: {text!r} is not a column reference (name, name[i] or name[a:b])")
        a, b = match["a"], match["b"]
        if match["colon"]:
            return cls(match["name"], int(a) if a else None, int(b) if b else None)
        if a:
            return cls(match["name"], int(a), int(a) + 1 if int(a) != -1 else None)
        return cls(match["name"])

    def take(self, array: np.ndarray) -> np.ndarray:
        """float64 (T, n) from a per-frame array (T,) or (T, d)."""
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 1:
            array = array[:, None]
        return array.reshape(len(array), -1)[:, self.start:self.stop]

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.name
        return f"{self.name}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


@dataclass
class ActionMapping:
    kind: str
    rotation_format: str
    gripper: ColumnRef
    gripper_range: tuple[float, float]
    # delta
    translation: ColumnRef | None = None
    rotation: ColumnRef | None = None
    translation_scale: float = 1.0
    rotation_scale: float = 1.0
    clip_norm: float | None = None
    # target_pose
    position: ColumnRef | None = None
    initial_position: ColumnRef | None = None
    initial_rotation: ColumnRef | None = None

    @property
    def columns(self) -> list[ColumnRef]:
        refs = [self.gripper, self.translation, self.rotation, self.position, self.initial_position,
                self.initial_rotation]
        return [r for r in refs if r is not None]

    def actions(self, columns: dict, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """float32 (K, 7) actions of the output steps [starts[k], ends[k]) from the source's
        per-frame ``columns`` (name -> array with one row per source frame)."""
        gripper = self._gripper(columns)[ends - 1]
        if self.kind == "delta":
            steps = np.concatenate([self._vector(columns, self.translation, self.translation_scale, 3),
                                    self._rotvec(columns, self.rotation, self.rotation_scale)], axis=1)
            motion = np.stack([steps[s] if e - s == 1 else compose(steps[s:e]) for s, e in zip(starts, ends)])
        else:
            position = self._vector(columns, self.position, 1.0, 3)
            quat = self._rotation(columns, self.rotation).as_quat()
            first = (self._vector(columns, self.initial_position, 1.0, 3)[0],
                     self._rotation(columns, self.initial_rotation).as_quat()[0])

            def target(i):  # the commanded pose after source step i (i = -1: before the first)
                return first if i < 0 else (position[i], quat[i])

            motion = np.stack([delta_between(*target(s - 1), *target(e - 1)) for s, e in zip(starts, ends)])
        return np.concatenate([motion, gripper[:, None]], axis=1).astype(np.float32)

    # ------------------------------------------------------------------ pieces
    def _vector(self, columns: dict, ref: ColumnRef, scale: float, width: int) -> np.ndarray:
        values = take(columns, ref, width)
        if self.clip_norm is not None:
            norm = np.linalg.norm(values, axis=1, keepdims=True)
            values = values * np.minimum(1.0, self.clip_norm / np.maximum(norm, 1e-300))
        return values * scale

    def _rotation(self, columns: dict, ref: ColumnRef) -> Rotation:
        values = take(columns, ref, 3)
        return Rotation.from_euler("xyz", values) if self.rotation_format == "euler_xyz" else Rotation.from_rotvec(values)

    def _rotvec(self, columns: dict, ref: ColumnRef, scale: float) -> np.ndarray:
        values = self._vector(columns, ref, scale, 3)
        if self.rotation_format == "euler_xyz":
            return Rotation.from_euler("xyz", values).as_rotvec()
        return values

    def _gripper(self, columns: dict) -> np.ndarray:
        open_value, closed_value = self.gripper_range
        values = take(columns, self.gripper, 1)[:, 0]
        return np.clip((values - open_value) / (closed_value - open_value), 0.0, 1.0)


@dataclass
class Mapping:
    """A parsed mapping file (see the module docstring)."""

    path: str  # the file it came from, for messages ("<built-in ...>" for generated ones)
    format: str | None = None
    fps: float | None = None
    source_fps: float | None = None
    cameras: dict[str, str] = field(default_factory=dict)  # ours -> source key (ordered)
    flip: str = "none"
    metadata: list[str] = field(default_factory=list)
    task_from: str = "file_name"
    actions: ActionMapping | None = None

    def flip_frames(self, frames: np.ndarray) -> np.ndarray:
        axes = FLIPS[self.flip]
        return np.ascontiguousarray(np.flip(frames, axis=axes)) if axes else frames


def take(columns: dict, ref: ColumnRef, width: int) -> np.ndarray:
    if ref.name not in columns:
        raise MappingError(f"column {ref.name!r} is missing (have: {sorted(columns)})")
    values = ref.take(columns[ref.name])
    if values.shape[1] != width:
        raise MappingError(f"{ref}: selects {values.shape[1]} value(s) per frame, {width} are needed")
    return values


def compose(deltas: np.ndarray) -> np.ndarray:
    """One 6-D delta equal to applying ``deltas`` (N, 6) in order (action convention)."""
    position, quat = np.zeros(3), IDENTITY_QUAT
    for delta in deltas:
        position, quat = apply_delta(position, quat, delta)
    return delta_between(np.zeros(3), IDENTITY_QUAT, position, quat)


def step_intervals(num_frames: int, source_fps: float, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the output steps over ``num_frames`` source frames (module docstring)."""
    if fps > source_fps * (1 + 1e-9):
        raise MappingError(f"fps {fps:g} is above the source rate {source_fps:g}: upsampling would repeat frames")
    ratio = source_fps / fps
    count = int(np.ceil(num_frames / ratio - 1e-9))  # steps whose start time the source covers
    starts = np.floor(np.arange(count) * ratio + 1e-9).astype(np.int64)
    ends = np.append(starts[1:], num_frames).astype(np.int64)
    return starts, ends


def check_format(mapping: Mapping, importer: str) -> None:
    if mapping.format not in (None, importer):
        raise MappingError(f"{mapping.path}: is a mapping for {mapping.format} sources, not {importer}")


# ====================================================================== loading
def resolve_mapping_path(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a shipped mapping (config/import/<name>.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise MappingError(f"{path}: mapping file does not exist")
        return path
    shipped = config_dir() / "import" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = sorted(p.stem for p in (config_dir() / "import").glob("*.yaml"))
        raise MappingError(f"--mapping: no mapping named {name_or_path!r} (shipped: {known}; or give a YAML path)")
    return shipped


def load_mapping(name_or_path: str | Path) -> Mapping:
    path = resolve_mapping_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML ({exc})") from None
    return parse_mapping(raw, str(path))


def parse_mapping(raw: dict, where: str) -> Mapping:
    known = {"format", "fps", "source_fps", "cameras", "flip", "metadata", "task_from", "actions"}
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {unknown} (known: {sorted(known)})")
    mapping = Mapping(path=where, format=raw.get("format"))
    for key in ("fps", "source_fps"):
        value = raw.get(key)
        if value is not None:
            if not isinstance(value, (int, float)) or value <= 0:
                raise MappingError(f"{where}: {key} must be a positive number or null, got {value!r}")
            setattr(mapping, key, float(value))
    cameras = raw.get("cameras") or {}
    if not isinstance(cameras, dict) or not all(isinstance(v, str) for v in cameras.values()):
        raise MappingError(f"{where}: cameras must map our camera names to source keys, got {cameras!r}")
    mapping.cameras = {str(k): v for k, v in cameras.items()}
    mapping.flip = str(raw.get("flip", "none"))
    if mapping.flip not in FLIPS:
        raise MappingError(f"{where}: flip must be one of {list(FLIPS)}, got {mapping.flip!r}")
    mapping.metadata = [str(m) for m in raw.get("metadata") or []]
    mapping.task_from = str(raw.get("task_from", "file_name"))
    if mapping.task_from not in ("file_name", "env_name"):
        raise MappingError(f"{where}: task_from must be file_name or env_name, got {mapping.task_from!r}")
    if raw.get("actions") is not None:
        mapping.actions = parse_actions(raw["actions"], f"{where}: actions")
    return mapping


def parse_actions(raw: dict, where: str) -> ActionMapping:
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping, got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind not in ACTION_KINDS:
        raise MappingError(f"{where}.kind: must be one of {list(ACTION_KINDS)}, got {kind!r}")
    required = {"delta": ("translation", "rotation", "gripper"),
                "target_pose": ("position", "rotation", "initial_position", "initial_rotation", "gripper")}[kind]
    optional = {"delta": ("translation_scale", "rotation_scale", "clip_norm"), "target_pose": ()}[kind]
    allowed = {"kind", "rotation_format", "gripper_range", *required, *optional}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {unknown} for kind {kind} (allowed: {sorted(allowed)})")
    missing = [k for k in required if raw.get(k) is None]
    if missing:
        raise MappingError(f"{where}.{missing[0]}: required for kind {kind}")
    rotation_format = raw.get("rotation_format", "rotvec")
    if rotation_format not in ROTATION_FORMATS:
        raise MappingError(f"{where}.rotation_format: must be one of {list(ROTATION_FORMATS)}, got {rotation_format!r}")
    gripper_range = raw.get("gripper_range", [0.0, 1.0])
    if (not isinstance(gripper_range, (list, tuple)) or len(gripper_range) != 2
            or float(gripper_range[0]) == float(gripper_range[1])):
        raise MappingError(f"{where}.gripper_range: must be [open value, closed value], got {gripper_range!r}")
    refs = {k: ColumnRef.parse(raw[k], f"{where}.{k}") for k in required}
    numbers = {}
    for key in optional:
        if raw.get(key) is not None:
            value = raw[key]
            if not isinstance(value, (int, float)) or value <= 0:
                raise MappingError(f"{where}.{key}: must be a positive number, got {value!r}")
            numbers[key] = float(value)
    return ActionMapping(kind=kind, rotation_format=rotation_format,
                         gripper_range=(float(gripper_range[0]), float(gripper_range[1])), **refs, **numbers)


def uwm_export_mapping(camera_keys: dict[str, str]) -> Mapping:
    """The inverse of ``uwm-export lerobot``: actions already in the convention, cameras by name."""
    actions = ActionMapping(kind="delta", rotation_format="rotvec", gripper=ColumnRef("action", 6, 7),
                            gripper_range=(0.0, 1.0), translation=ColumnRef("action", 0, 3),
                            rotation=ColumnRef("action", 3, 6))
    return Mapping(path="<built-in mapping of uwm-export datasets>", format="lerobot", cameras=camera_keys,
                   actions=actions)

