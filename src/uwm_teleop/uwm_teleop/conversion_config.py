"""The settings of uwm-bag2dataset (config/convert.yaml documents each one) and their checks."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from uwm_core.spatial import STATE_DIM

ACTION_SOURCES = ("auto", "delta", "target", "pose")
GAP_POLICIES = ("split", "refuse")
STAMP_SOURCES = ("header", "receive")


@dataclass
class ConvertConfig:
    """Conversion settings; config/convert.yaml documents each one."""

    fps: float = 10.0
    cameras: dict = field(default_factory=lambda: {"left": "/cameras/left/image_raw",
                                                    "right": "/cameras/right/image_raw",
                                                    "wrist": "/cameras/wrist/image_raw"})
    image_size: list | None = field(default_factory=lambda: [240, 320])
    delta_topic: str = "/teleop/delta_ee"
    target_topic: str = "/cartesian_impedance_controller/target_pose"
    pose_topic: str = "/franka_robot_state_broadcaster/current_pose"
    gripper_topic: str = "/gripper/command"
    topics_from_bag: bool = True
    action_source: str = "auto"
    stamp_source: str = "header"
    max_frame_gap_s: float = 0.2
    gripper_default: float = 0.0
    default_task: str = ""
    state: bool = True
    on_gap: str = "split"
    min_episode_steps: int = 5
    max_drop_ratio: float = 0.1

    @property
    def state_dim(self) -> int:
        return STATE_DIM if self.state else 0

    @classmethod
    def load(cls, path=None, **overrides) -> "ConvertConfig":
        values = {}
        if path is not None:
            values = yaml.safe_load(Path(path).read_text()) or {}
            unknown = set(values) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"{path}: unknown setting(s) {sorted(unknown)} "
                                 f"(known: {[f.name for f in fields(cls)]})")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validate()

    def validate(self) -> "ConvertConfig":
        if not (self.fps > 0):
            raise ValueError(f"fps={self.fps} must be positive")
        if not self.cameras or not isinstance(self.cameras, dict):
            raise ValueError(f"cameras={self.cameras!r} must map camera names to image topics")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(f"image_size={self.image_size!r} must be [height, width] or null")
        if self.action_source not in ACTION_SOURCES:
            raise ValueError(f"action_source={self.action_source!r} is not one of {list(ACTION_SOURCES)}")
        if self.stamp_source not in STAMP_SOURCES:
            raise ValueError(f"stamp_source={self.stamp_source!r} is not one of {list(STAMP_SOURCES)}")
        if not (self.max_frame_gap_s > 0):
            raise ValueError(f"max_frame_gap_s={self.max_frame_gap_s} must be positive")
        if self.on_gap not in GAP_POLICIES:
            raise ValueError(f"on_gap={self.on_gap!r} is not one of {list(GAP_POLICIES)}")
        if int(self.min_episode_steps) < 1:
            raise ValueError(f"min_episode_steps={self.min_episode_steps} must be at least 1")
        if not 0.0 <= self.max_drop_ratio <= 1.0:
            raise ValueError(f"max_drop_ratio={self.max_drop_ratio} must be in 0..1")
        return self

    @property
    def dt_ns(self) -> int:
        return int(round(1e9 / self.fps))

    @property
    def max_frame_gap_ns(self) -> int:
        return int(round(self.max_frame_gap_s * 1e9))
