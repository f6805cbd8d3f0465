"""uwm-bag2dataset: convert recorded rosbag2 episodes into the training dataset.

    uwm-bag2dataset BAG_OR_DIR... --out DATASET [--config config/convert.yaml]
                    [--include-failed] [--skip-bad] [--dry-run]

Each bag is one episode. Steps are the command stream resampled to ``fps`` (see
``uwm_teleop.alignment``); each camera contributes its latest frame at or before the step time,
and a step whose frame is older than ``max_frame_gap_s`` is dropped and reported. Actions come
from the recorded ``~/delta_ee`` commands, else from target or measured pose differences; the
gripper is absolute. With ``state: true`` each step also stores the proprioceptive state
(``uwm_core.spatial.proprio_state``): the latest measured end-effector pose at or before the step
and the gripper command in effect before it. Two passes over each bag keep memory to two bags'
frames (one bag is written while the next is read): the first reads stamps and the small messages
(of a frame only its header, where the bag is indexed MCAP), the second reads and decodes only the
frames that the steps use.

The dataset is written aside (a staging copy next to it) and swapped in at the end, so it is
either fully updated or left as it was. Episodes whose source bag is already in the dataset are
skipped, so re-running on the same bags adds nothing.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from uwm_core.image_codec import ImageDecodeError, decode_image_msg
from uwm_core.processing import resize_frames
from uwm_core.spatial import ACTION_DIM, ACTION_NAMES, STATE_DIM
from uwm_teleop import alignment
from uwm_teleop.alignment import AlignmentError
from uwm_teleop.bag_reading import (META_OUTCOME, META_SOFTWARE, META_TASK, Bag, BagCandidate, BagError,
                                    find_bags, format_time, has_header, header_stamp_ns)

ACTION_SOURCES = ("auto", "delta", "target", "pose")
GAP_POLICIES = ("split", "refuse")
IN_FLIGHT_FRAMES = 16  # raw frames read ahead of decoding (a 640x480 rgb8 frame is 0.9 MB)
DECODE_THREADS = 2
MAX_STEP_SPACING = 1.5  # consecutive steps of one episode are at most this many control periods apart
COMMAND_TYPES = ("geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/PoseStamped")
STAMP_SOURCES = ("header", "receive")
SKIPPED_OUTCOMES = ("failure", "discarded", "incomplete")  # incomplete: recorder stopped by Ctrl-C/SIGTERM
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ROLE_TYPES = {
    "delta": ("geometry_msgs/msg/TwistStamped",),
    "target": ("geometry_msgs/msg/PoseStamped",),
    "pose": ("geometry_msgs/msg/PoseStamped",),
    "gripper": ("std_msgs/msg/Float32", "std_msgs/msg/Float64"),
}


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


@dataclass
class EpisodeReport:
    """What happened to one bag; ``status`` is converted, checked (dry run), present (already in the
    dataset), skipped (outcome), incomplete or error."""

    bag: str
    status: str
    detail: str = ""
    task: str = ""
    outcome: str = ""
    action_source: str = ""
    steps: int = 0
    dropped: dict = field(default_factory=dict)  # reason -> number of steps
    max_frame_gap_s: dict = field(default_factory=dict)  # camera -> seconds
    action_min: list = field(default_factory=list)
    action_max: list = field(default_factory=list)
    episode_index: int | None = None  # the first episode written from this bag
    episodes: int = 0  # episodes written (a bag cut at gaps gives several)
    total_steps: int = 0  # steps of the bag before anything was dropped
    cuts: list = field(default_factory=list)  # where a gap split the bag, and why
    notes: list = field(default_factory=list)  # what the user should know (e.g. unused command topics)

    @property
    def drop_ratio(self) -> float:
        return 1.0 - self.steps / self.total_steps if self.total_steps else 0.0

    def line(self) -> str:
        if self.status == "error":  # the message names the bag itself
            return f"[{self.status:>10}] {self.detail}"
        head = f"[{self.status:>10}] {self.bag}"
        if self.status not in ("converted", "checked"):
            return f"{head}: {self.detail}"
        dropped = sum(self.dropped.values())
        parts = [f"task={self.task!r}", f"outcome={self.outcome}", f"steps={self.steps}",
                 f"dropped={dropped} ({self.drop_ratio:.0%}" +
                 (f": {'; '.join(f'{r}: {n}' for r, n in self.dropped.items())})" if dropped else ")"),
                 "max frame gap " + " ".join(f"{c}={g * 1e3:.0f}ms" for c, g in self.max_frame_gap_s.items()),
                 f"actions from {self.action_source}: " + " ".join(
                     f"{n}[{lo:+.3g},{hi:+.3g}]" for n, lo, hi in zip(ACTION_NAMES, self.action_min, self.action_max))]
        if self.cuts:
            parts.insert(3, f"split into {self.episodes or len(self.cuts) + 1} episodes at gaps ({'; '.join(self.cuts)})")
        if self.episode_index is not None:
            first, last = self.episode_index, self.episode_index + max(self.episodes, 1) - 1
            parts.insert(0, f"episode {first}" if first == last else f"episodes {first}..{last}")
        return f"{head}: " + ", ".join(parts + self.notes)


@dataclass
class Stream:
    """One topic's messages in pass 1: times (ns) and the decoded values of small messages."""

    times: list = field(default_factory=list)
    values: list = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.times, dtype=np.int64), np.asarray(self.values, dtype=np.float64)


@dataclass
class EpisodePlan:
    """Everything decided in pass 1 for one bag."""

    topics: dict  # role -> topic; cameras as "camera:<name>"
    segments: list  # (start, stop) rows of the kept steps: each a contiguous episode to write
    step_times: np.ndarray  # int64 (T,) of the kept steps
    actions: np.ndarray  # float32 (T, 7)
    state: np.ndarray | None  # float32 (T, STATE_DIM) with cfg.state
    frame_index: dict  # camera -> int64 (T,) ordinal of the frame message on its topic
    frame_times: dict  # camera -> int64 (T,)


def _topics_for(bag: Bag, cfg: ConvertConfig) -> dict:
    """role -> topic for this bag: the recorder's own map when present, else the config."""
    recorded = bag.recorded_topics if cfg.topics_from_bag else None
    if recorded is None:
        roles = {"delta": cfg.delta_topic, "target": cfg.target_topic, "pose": cfg.pose_topic,
                 "gripper": cfg.gripper_topic}
        cameras = dict(cfg.cameras)
    else:
        roles = {role: recorded.get(role, "") for role in ROLE_TYPES}
        cameras = recorded.get("cameras", {})
        if set(cameras) != set(cfg.cameras):
            raise BagError(bag.path, f"the recorder's cameras {sorted(cameras)} differ from the dataset's cameras "
                                     f"{sorted(cfg.cameras)} (set cameras in the config, or topics_from_bag: false)")
    topics = {f"camera:{name}": cameras[name] for name in cfg.cameras}
    topics.update({role: topic for role, topic in roles.items() if topic})
    return topics


def _check_topic(bag: Bag, role: str, topic: str, allowed: tuple) -> None:
    if topic not in bag.topics:
        hint = " (set gripper_topic: \"\" to use gripper_default)" if role == "gripper" else ""
        raise BagError(bag.path, f"the {role} topic is not in the bag{hint}; it has {sorted(bag.topics)}", topic)
    if bag.topics[topic] not in allowed:
        raise BagError(bag.path, f"{role} messages must be {' or '.join(allowed)}, got {bag.topics[topic]}", topic)


def _action_source(bag: Bag, cfg: ConvertConfig, topics: dict) -> str:
    present = {role for role in ("delta", "target", "pose")
               if role in topics and bag.message_counts.get(topics[role], 0) > 0}
    if cfg.action_source != "auto":
        if cfg.action_source not in present:
            topic = topics.get(cfg.action_source, "")
            raise BagError(bag.path, f"action_source {cfg.action_source}: its topic has no messages in the bag", topic)
        return cfg.action_source
    for role in ("delta", "target", "pose"):
        if role in present:
            return role
    raise BagError(bag.path, "no commands or poses to take actions from: none of " +
                   ", ".join(f"{r}_topic {topics.get(r, '(unset)')!r}" for r in ("delta", "target", "pose")) +
                   f" has messages (the bag has {sorted(bag.topics)})")


def _unused_command_topics(bag: Bag, topics: dict) -> str | None:
    """When auto fell back to measured poses: the bag's command-like topics that went unused."""
    used = {topics.get(role) for role in ("delta", "target", "pose")}
    unused = [f"{name} ({msgtype})" for name, msgtype in sorted(bag.topics.items())
              if msgtype in COMMAND_TYPES and name not in used and bag.message_counts.get(name, 0)]
    if not unused:
        return None
    return (f"actions come from the measured pose ({topics.get('pose')}): action_source auto found no messages on "
            f"delta_topic {topics.get('delta', '(unset)')!r} or target_topic {topics.get('target', '(unset)')!r}, "
            f"but the bag has command-like topics {', '.join(unused)}: set delta_topic (TwistStamped) or "
            f"target_topic (PoseStamped) in the conversion config")


def contiguous_runs(step_times: np.ndarray, dt_ns: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges of ``step_times`` whose consecutive steps are at most
    MAX_STEP_SPACING control periods apart."""
    breaks = np.flatnonzero(np.diff(step_times) > MAX_STEP_SPACING * dt_ns) + 1
    edges = [0, *breaks.tolist(), len(step_times)]
    return list(zip(edges[:-1], edges[1:]))


def _small_value(role: str, msg) -> list:
    if role == "delta":
        lin, ang = msg.twist.linear, msg.twist.angular
        return [lin.x, lin.y, lin.z, ang.x, ang.y, ang.z]
    if role == "gripper":
        return [msg.data]
    p, q = msg.pose.position, msg.pose.orientation
    return [p.x, p.y, p.z, q.x, q.y, q.z, q.w]


def plan_episode(bag: Bag, cfg: ConvertConfig, report: EpisodeReport, allow_drops: bool = False) -> EpisodePlan:
    """Pass 1: stamps of every message, values of the small ones, then steps and frame choices,
    cut into contiguous segments; BagError when the bag must be refused."""
    topics = _topics_for(bag, cfg)
    cameras = [role for role in topics if role.startswith("camera:")]
    for role in cameras:
        _check_topic(bag, f"camera {role[7:]!r}", topics[role], IMAGE_TYPES)
    source = _action_source(bag, cfg, topics)
    used = {"delta": ["delta"], "target": ["target", "pose"], "pose": ["pose"]}[source]
    used = [role for role in used if role in topics and topics[role] in bag.topics]
    if cfg.state and "pose" not in used:
        if "pose" not in topics or topics["pose"] not in bag.topics:
            raise BagError(bag.path, "the proprioceptive state needs the measured pose topic, which is not in the bag "
                                     f"(it has {sorted(bag.topics)}); set pose_topic, or state: false",
                           topics.get("pose", ""))
        used.append("pose")
    if "gripper" in topics:
        used.append("gripper")
    for role in used:
        _check_topic(bag, role, topics[role], ROLE_TYPES[role])
    report.action_source = source

    role_of = {topics[role]: role for role in cameras + used}
    streams = {role: Stream() for role in cameras + used}
    last_time: dict[str, int] = {}
    camera_topics = [topics[role] for role in cameras]  # of a frame only its header stamp is needed here
    for topic, log_ns, raw in bag.messages(list(role_of), head_only=camera_topics):
        role = role_of[topic]
        time_ns = log_ns
        if cfg.stamp_source == "header" and has_header(bag.topics[topic]):
            time_ns = header_stamp_ns(raw)
            if time_ns == 0:
                raise BagError(bag.path, "header stamp is zero (the publisher does not stamp its messages); "
                                         "use stamp_source: receive", topic, log_ns, bag.start_ns)
        previous = last_time.get(topic)
        if previous is not None and time_ns < previous:
            raise BagError(bag.path, f"stamps go backwards by {(previous - time_ns) / 1e9:.3f} s "
                                     f"(previous {format_time(previous)}): stamps must not decrease",
                           topic, time_ns, bag.start_ns)
        last_time[topic] = time_ns
        streams[role].times.append(time_ns)
        if not role.startswith("camera:"):
            streams[role].values.append(_small_value(role, bag.deserialize(raw, topic)))

    times, values = streams[source].arrays()
    try:
        if source == "delta":
            plan = alignment.steps_from_deltas(times, values, cfg.dt_ns)
        elif source == "target":
            measured = None
            if "pose" in streams and streams["pose"].times:
                pose_times, pose_values = streams["pose"].arrays()
                measured = (pose_times, pose_values[:, :3], pose_values[:, 3:])
            plan = alignment.steps_from_targets(times, values[:, :3], values[:, 3:], cfg.dt_ns, measured)
        else:
            plan = alignment.steps_from_poses(times, values[:, :3], values[:, 3:], cfg.dt_ns)
    except AlignmentError as err:
        raise BagError(bag.path, str(err), topics[source]) from None

    if "gripper" in streams:
        gripper_times, gripper_values = streams["gripper"].arrays()
        gripper = alignment.gripper_per_step(plan.ends, gripper_times, gripper_values.reshape(-1), cfg.gripper_default)
    else:
        gripper = np.full(plan.times.size, float(cfg.gripper_default))

    keep = np.ones(plan.times.size, dtype=bool)
    dropped = Counter()  # reason -> steps
    dropped_why = np.full(plan.times.size, "", dtype=object)  # the first reason of each dropped step

    def drop(usable: np.ndarray, reason: str) -> None:
        newly = keep & ~usable
        if newly.any():
            dropped[reason] += int(newly.sum())
            dropped_why[newly] = reason
        keep[:] &= usable

    drop(plan.valid, plan.invalid_reason or "")
    max_gap_ns = int(round(cfg.max_frame_gap_s * 1e9))
    state = None
    if cfg.state:
        pose_times, pose_values = streams["pose"].arrays()
        _, usable = alignment.frames_for_steps(plan.times, pose_times, max_gap_ns)
        drop(usable, f"pose: no measured pose within {cfg.max_frame_gap_s} s")
        gripper_times, gripper_values = streams["gripper"].arrays() if "gripper" in streams else ([], [])
        state, _ = alignment.states_at(plan.times, pose_times, pose_values, gripper_times,
                                       np.reshape(gripper_values, -1), cfg.gripper_default)
    choices = {}
    for role in cameras:
        frame_times = np.asarray(streams[role].times, dtype=np.int64)
        index, usable = alignment.frames_for_steps(plan.times, frame_times, max_gap_ns)
        drop(usable, f"camera {role[7:]}: no frame within {cfg.max_frame_gap_s} s")
        choices[role[7:]] = (index, frame_times)
    if not keep.any():
        reasons = "; ".join(f"{r} ({n} steps)" for r, n in dropped.items()) or "no steps"
        raise BagError(bag.path, f"no usable step out of {plan.times.size}: {reasons}")

    # episodes are contiguous: where steps are missing mid-bag the bag is cut (or refused)
    kept_rows = np.flatnonzero(keep)
    runs = contiguous_runs(plan.times[kept_rows], cfg.dt_ns)
    cuts = [f"{(plan.times[kept_rows[start - 1]] - plan.times[0]) / 1e9:.1f}..."
            f"{(plan.times[kept_rows[start]] - plan.times[0]) / 1e9:.1f} s: "
            f"{_why_missing(plan.times, kept_rows[start - 1], kept_rows[start], dropped_why)}"
            for start, _ in runs[1:]]
    if cuts and cfg.on_gap == "refuse":
        raise BagError(bag.path, f"steps are missing mid-bag ({'; '.join(cuts)}); on_gap: refuse (on_gap: split "
                                 f"writes the contiguous parts as separate episodes)")
    segments = []
    for start, stop in runs:
        if stop - start >= cfg.min_episode_steps:
            segments.append((start, stop))
        else:
            dropped[f"contiguous part shorter than min_episode_steps={cfg.min_episode_steps}"] += stop - start
    written = sum(stop - start for start, stop in segments)
    report.cuts, report.total_steps, report.steps, report.dropped = cuts, int(plan.times.size), written, dict(dropped)
    if not segments:
        raise BagError(bag.path, f"no contiguous part of at least min_episode_steps={cfg.min_episode_steps} steps "
                                 f"({'; '.join(f'{r}: {n} steps' for r, n in dropped.items())})")
    if report.drop_ratio > cfg.max_drop_ratio and not allow_drops:
        raise BagError(bag.path, f"{report.drop_ratio:.0%} of its {report.total_steps} steps would be dropped "
                                 f"({'; '.join(f'{r}: {n}' for r, n in dropped.items())}), more than max_drop_ratio="
                                 f"{cfg.max_drop_ratio:g}; fix the recording or convert with --allow-drops")

    actions = np.concatenate([plan.actions6[keep], gripper[keep, None]], axis=1).astype(np.float32)
    # (constant non-zero motion is a valid demonstration: a straight line at constant speed)
    if np.abs(np.concatenate([actions[a:b, :6] for a, b in segments])).max() <= 1e-9:
        unused = _unused_command_topics(bag, topics) if cfg.action_source == "auto" and source == "pose" else None
        raise BagError(bag.path, f"every action taken from {source} ({topics[source]}) is zero in translation and "
                                 f"rotation: the robot never moved in this bag's {source} stream"
                       + (f"; {unused}" if unused else ""), topics[source])
    if cfg.action_source == "auto" and source == "pose" and (unused := _unused_command_topics(bag, topics)):
        report.notes.append(f"note: {unused}")
    step_times = plan.times[keep]
    frame_index = {cam: index[keep] for cam, (index, _) in choices.items()}
    chosen_times = {cam: frame_times[frame_index[cam]] for cam, (_, frame_times) in choices.items()}
    report.max_frame_gap_s = {cam: float((step_times - t).max()) / 1e9 for cam, t in chosen_times.items()}
    report.action_min = actions.min(axis=0).tolist()
    report.action_max = actions.max(axis=0).tolist()
    return EpisodePlan(topics, segments, step_times, actions, None if state is None else state[keep], frame_index,
                       chosen_times)


def _why_missing(times: np.ndarray, before: int, after: int, dropped_why: np.ndarray) -> str:
    """Why the steps between rows ``before`` and ``after`` of a plan are not in the episode."""
    reasons = Counter(dropped_why[before + 1:after].tolist())
    if not reasons:
        return f"no command for {(times[after] - times[before]) / 1e9:.1f} s"
    return "; ".join(f"{reason} ({n} steps)" for reason, n in reasons.items())


def to_dataset_resolution(rgb: np.ndarray, size) -> np.ndarray:
    """uint8 RGB (H, W, 3) at the dataset's [height, width] (unchanged when ``size`` is None)."""
    return rgb if size is None else resize_frames(rgb, size)


def load_frames(bag: Bag, plan: EpisodePlan, cfg: ConvertConfig, workers: ThreadPoolExecutor) -> dict:
    """Pass 2: decode the chosen frames only, straight into one array per camera.

    This thread reads the bag while ``workers`` deserialise, decode and resize (numpy, OpenCV and
    torch release the GIL there); at most ``IN_FLIGHT_FRAMES`` raw frames wait at a time."""
    camera_of_topic = {plan.topics[f"camera:{cam}"]: cam for cam in plan.frame_index}
    rows_of = {}  # camera -> {frame ordinal: step rows}
    for cam, index in plan.frame_index.items():
        rows = {}
        for row, ordinal in enumerate(index.tolist()):
            rows.setdefault(ordinal, []).append(row)
        rows_of[cam] = rows
    count = plan.step_times.size
    frames: dict[str, np.ndarray] = {}
    pending: deque = deque()  # (camera, step rows, topic, future of the resized frame)

    def store_oldest() -> None:
        cam, rows, topic, future = pending.popleft()
        try:
            image = future.result()
        except ImageDecodeError as err:
            raise BagError(bag.path, f"cannot decode image: {err}", topic,
                           int(plan.frame_times[cam][rows[0]]), bag.start_ns) from None
        if cam not in frames:
            frames[cam] = np.empty((count, *image.shape), dtype=np.uint8)
        elif frames[cam].shape[1:] != image.shape:
            raise BagError(bag.path, f"image size changes from {frames[cam].shape[2]}x{frames[cam].shape[1]} to "
                                     f"{image.shape[1]}x{image.shape[0]}: set image_size to store one size",
                           topic, int(plan.frame_times[cam][rows[0]]), bag.start_ns)
        frames[cam][rows] = image

    def decode(raw, topic: str) -> np.ndarray:
        return to_dataset_resolution(decode_image_msg(bag.deserialize(raw, topic)), cfg.image_size)

    used = {cam: sorted(rows) for cam, rows in rows_of.items()}  # a frame no step uses is never read
    next_used = {cam: iter(ordinals) for cam, ordinals in used.items()}
    try:
        for topic, _, raw in bag.messages(list(camera_of_topic), only={t: used[c] for t, c in camera_of_topic.items()}):
            cam = camera_of_topic[topic]
            rows = rows_of[cam][next(next_used[cam])]
            pending.append((cam, rows, topic, workers.submit(decode, raw, topic)))
            if len(pending) >= IN_FLIGHT_FRAMES:
                store_oldest()
        while pending:
            store_oldest()
    finally:
        for *_, future in pending:
            future.cancel()
    return {cam: frames[cam] for cam in plan.frame_index}


class StagedDataset:
    """Write aside, then commit: new episodes go into a staging copy of the dataset next to it,
    which replaces the dataset only when every bag went through (or was skipped on request).

    Zarr writes chunk files by atomic replacement, never in place, and committed episodes are
    never rewritten, so the staging copy hard-links the chunk files (under directories named
    ``c``) and copies the rest (the episode index is appended to in place). The dataset's writer
    lock is held from the start to the swap, so no other writer can slip in between.
    """

    def __init__(self, out: Path, cfg: ConvertConfig):
        self.out = Path(out)
        self.cfg = cfg
        self.stage = self.out.parent / f".{self.out.name}.staging-{os.getpid()}"
        self.backup = self.out.parent / f".{self.out.name}.previous-{os.getpid()}"
        self.writer = None
        self.source_ids: set[str] = set()
        self._lock = None
        self._clean_up_after_killed_runs()
        if self.out.exists():
            self._check_existing()

    def _clean_up_after_killed_runs(self) -> None:
        """A killed conversion leaves its staging copy beside the dataset (the dataset itself is
        untouched), or, killed between the two renames of a commit, the previous dataset renamed."""
        for leftover in self.out.parent.glob(f".{self.out.name}.*-*"):
            kind, _, pid = leftover.name.rpartition("-")
            if not pid.isdigit() or _process_alive(int(pid)):
                continue
            if kind.endswith(".previous") and not self.out.exists():
                os.rename(leftover, self.out)  # the commit never finished: the dataset as it was
            else:
                shutil.rmtree(leftover, ignore_errors=True)

    def _check_existing(self) -> None:
        from uwm_core.data import open_dataset
        from uwm_core.data.store import LOCK_FILE

        dataset = open_dataset(self.out)
        wanted = (list(self.cfg.cameras), float(self.cfg.fps), ACTION_DIM, self.cfg.state_dim)
        found = (list(dataset.cameras), float(dataset.fps), int(dataset.action_dim), dataset.state_dim)
        if found != wanted:
            raise ValueError(f"cannot append to {self.out}: it has cameras {found[0]}, fps {found[1]:g}, action_dim "
                             f"{found[2]}, state_dim {found[3]}; the conversion makes cameras {wanted[0]}, fps "
                             f"{wanted[1]:g}, action_dim {wanted[2]}, state_dim {wanted[3]} (convert into another "
                             f"dataset, or change the config: state: {str(not self.cfg.state).lower()})")
        self.source_ids = {dataset.metadata(i).get("source_id") for i in range(dataset.num_episodes)} - {None}
        self._lock = open(self.out / LOCK_FILE, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ValueError(f"{self.out}: another writer is writing to this dataset") from None

    def add(self, frames: dict, actions: np.ndarray, task: str, metadata: dict, state: np.ndarray | None) -> int:
        if self.writer is None:
            from uwm_core.data import DatasetWriter

            if self.out.exists():
                shutil.copytree(self.out, self.stage, copy_function=_link_chunks_copy_rest)
            self.writer = DatasetWriter(self.stage, cameras=list(self.cfg.cameras), fps=self.cfg.fps,
                                        action_dim=ACTION_DIM, state_dim=self.cfg.state_dim)
        return self.writer.add_episode(frames=frames, actions=actions, task=task, metadata=metadata, state=state)

    def commit(self) -> None:
        """Swap the staging copy in (two renames); nothing to do when no episode was added."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            if self.out.exists():
                os.rename(self.out, self.backup)
                os.rename(self.stage, self.out)
                shutil.rmtree(self.backup)
            else:
                os.rename(self.stage, self.out)
        self._unlock()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        shutil.rmtree(self.stage, ignore_errors=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link_chunks_copy_rest(src: str, dst: str) -> None:
    if "c" in Path(src).parts[:-1]:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def _skip_reason(bag: Bag, include_failed: bool) -> str | None:
    outcome = bag.custom.get(META_OUTCOME, "")
    if outcome in SKIPPED_OUTCOMES and not include_failed:
        return f"outcome {outcome} (use --include-failed to convert it)"
    return None


def convert(paths, out, cfg: ConvertConfig, include_failed: bool = False, skip_bad: bool = False,
            dry_run: bool = False, progress: bool = True, allow_drops: bool = False) -> list[EpisodeReport]:
    """Convert the bags under ``paths`` into the dataset ``out``; returns one report per bag.

    Raises ``ConversionError`` (dataset unchanged) when a bag is bad and ``skip_bad`` is False.
    ``allow_drops`` converts bags that drop more than ``cfg.max_drop_ratio`` of their steps.
    Bag k+1 is read while bag k is written, so at most two bags' frames are held at a time.
    """
    candidates = find_bags(paths)
    staged = None if dry_run else StagedDataset(Path(out), cfg)
    reports: list[EpisodeReport] = []

    def finish(report: EpisodeReport) -> None:
        reports.append(report)
        if progress:
            tqdm.write(report.line(), file=sys.stderr)
        if report.status == "error" and not skip_bad:
            raise ConversionError(report.detail, reports)

    try:
        with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode") as decoders, \
                ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
            writing: Future | None = None  # the previous bag's episodes going into the dataset
            for candidate in tqdm(candidates, desc="bags", unit="bag", disable=not progress or len(candidates) < 2):
                report, episodes = _read_one(candidate, cfg, staged, include_failed, allow_drops, decoders)
                if writing is not None:
                    finish(writing.result())
                    writing = None
                if episodes:
                    writing = writer.submit(_write_episodes, staged, report, episodes)
                else:
                    finish(report)
            if writing is not None:
                finish(writing.result())
        if staged is not None:
            staged.commit()
    except BaseException:  # the executors have finished their work here, so nothing writes any more
        if staged is not None:
            staged.abort()
        raise
    return reports


def _read_one(candidate: BagCandidate, cfg: ConvertConfig, staged: StagedDataset | None, include_failed: bool,
              allow_drops: bool, decoders: ThreadPoolExecutor) -> tuple[EpisodeReport, list[dict]]:
    """The report of one bag and the episodes to write from it (none when it is refused or skipped)."""
    report = EpisodeReport(str(candidate.path), "error")
    if candidate.problem:
        report.detail = str(BagError(candidate.path, candidate.problem))
        return report, []
    if candidate.incomplete:
        report.status, report.detail = "incomplete", f"{candidate.incomplete}; skipped"
        return report, []
    episodes = []
    try:
        with Bag(candidate.path) as bag:
            report.task = bag.custom.get(META_TASK, cfg.default_task)
            report.outcome = bag.custom.get(META_OUTCOME, "unknown")
            if staged is not None and bag.source_id in staged.source_ids:
                report.status, report.detail = "present", f"already in the dataset (source id {bag.source_id})"
                return report, []
            if reason := _skip_reason(bag, include_failed):
                report.status, report.detail = "skipped", reason
                return report, []
            plan = plan_episode(bag, cfg, report, allow_drops)
            frames = load_frames(bag, plan, cfg, decoders)
            if staged is None:
                report.status = "checked"
                return report, []
            for part, (start, stop) in enumerate(plan.segments):
                rows = slice(start, stop)
                metadata = {
                    "source": str(candidate.path.resolve()),
                    "source_id": bag.source_id,
                    "outcome": report.outcome,
                    "recorded_with": bag.custom.get(META_SOFTWARE, "unknown (no uwm-recorder metadata)"),
                    "action_source": report.action_source,
                    "topics": plan.topics,
                    "step_times_ns": plan.step_times[rows].tolist(),
                    "frame_times_ns": {cam: t[rows].tolist() for cam, t in plan.frame_times.items()},
                    "dropped_steps": report.dropped,
                    "segment": {"index": part, "of": len(plan.segments), "cuts": report.cuts} if report.cuts else None,
                }
                episodes.append({"frames": {cam: f[rows] for cam, f in frames.items()}, "actions": plan.actions[rows],
                                 "task": report.task, "metadata": metadata,
                                 "state": None if plan.state is None else plan.state[rows]})
            staged.source_ids.add(bag.source_id)  # a copy of this bag later in the run is "present"
    except BagError as err:
        report.status, report.detail = "error", str(err)
        return report, []
    return report, episodes


def _write_episodes(staged: StagedDataset, report: EpisodeReport, episodes: list[dict]) -> EpisodeReport:
    for episode in episodes:
        index = staged.add(**episode)
        report.episode_index = index if report.episode_index is None else report.episode_index
        report.episodes += 1
    report.status = "converted"
    return report


class ConversionError(RuntimeError):
    """A bad bag stopped the conversion; the dataset was left unchanged."""

    def __init__(self, message: str, reports: list[EpisodeReport]):
        super().__init__(message)
        self.reports = reports


def summary(reports: list[EpisodeReport], out, dry_run: bool = False, rolled_back: bool = False) -> str:
    """One paragraph on the whole run; ``rolled_back``: an error left the dataset unchanged."""
    counts = Counter(r.status for r in reports)
    done = [r for r in reports if r.status in ("converted", "checked")]
    steps, total = sum(r.steps for r in done), sum(r.total_steps for r in done)
    dropped = f", {1 - steps / total:.0%} of their steps dropped" if total and steps < total else ""
    if rolled_back:
        text = [f"nothing was written: {out} is unchanged ({len(done)} bag(s) were fine before the error)"]
    elif dry_run:
        text = [f"{len(done)} bag(s) with {steps} steps checked (dry run, nothing written){dropped}"]
    else:
        episodes = sum(r.episodes for r in done)
        text = [f"{len(done)} bag(s) converted into {out}: {episodes} episode(s) with {steps} steps{dropped}"]
    for status, label in (("present", "already in the dataset"), ("skipped", "skipped by outcome"),
                          ("incomplete", "incomplete (interrupted recordings)"), ("error", "bad")):
        if counts[status]:
            text.append(f"{counts[status]} {label}")
    return "; ".join(text)


# exit codes of uwm-bag2dataset
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="uwm-bag2dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("bags", nargs="+", metavar="BAG_OR_DIR", help="bag directories, .mcap/.db3 files, "
                        "or directories holding bags (searched recursively)")
    parser.add_argument("--out", required=True, help="dataset directory (created, or appended to)")
    parser.add_argument("--config", help="conversion settings (config/convert.yaml); built-in defaults otherwise")
    parser.add_argument("--include-failed", action="store_true", help="also convert episodes recorded as failed "
                        "or discarded")
    parser.add_argument("--skip-bad", action="store_true", help="report bad bags and convert the others (the exit "
                        "code is still 1 when a bag was refused, unless --ok-if-skipped)")
    parser.add_argument("--ok-if-skipped", action="store_true", help="with --skip-bad: exit 0 although bags were "
                        "refused")
    parser.add_argument("--allow-drops", action="store_true", help="convert bags that drop more than max_drop_ratio "
                        "of their steps")
    parser.add_argument("--dry-run", action="store_true", help="read, align and decode everything, print the "
                        "report, write nothing")
    parser.add_argument("--json-report", help="also write the per-episode reports to this JSON file")
    args = parser.parse_args(argv)
    try:
        cfg = ConvertConfig.load(args.config)
        reports = convert(args.bags, args.out, cfg, args.include_failed, args.skip_bad, args.dry_run,
                          allow_drops=args.allow_drops)
        refused = [r for r in reports if r.status == "error"]
        status = EXIT_REFUSED if refused and not args.ok_if_skipped else EXIT_OK
        rolled_back = False
        if refused:
            print(f"{len(refused)} bag(s) refused" + ("" if args.ok_if_skipped else " (exit code 1; "
                  "--ok-if-skipped to accept)"), file=sys.stderr)
    except ConversionError as err:
        reports = err.reports
        print(f"error: {err}\nthe dataset {args.out} was left unchanged (use --skip-bad to convert the other bags)",
              file=sys.stderr)
        status, rolled_back = EXIT_REFUSED, True
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(summary(reports, args.out, args.dry_run, rolled_back))
    if args.json_report:
        Path(args.json_report).write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
