"""Pass 1 of uwm-bag2dataset over one bag: the control steps, their actions and state, and which
frame of each camera every step uses, cut into contiguous episodes; no image is decoded here.

Steps are the action source's stream resampled to ``fps`` (``uwm_core.data.alignment``); each
camera contributes its latest frame at or before the step time, and a step whose frame (or, with
``state``, measured pose) is older than ``max_frame_gap_s`` is dropped, with its reason. Where
steps are missing mid-bag the bag is cut into contiguous episodes (``on_gap: split``) or refused.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from uwm_core.data import alignment
from uwm_core.data.alignment import AlignmentError
from uwm_teleop.bag_reading import Bag, BagError, format_time, has_header, header_stamp_ns
from uwm_teleop.bag_topics import BagTopics, choose_topics, unused_command_topics
from uwm_teleop.conversion_config import ConvertConfig
from uwm_teleop.conversion_report import EpisodeReport

MAX_STEP_SPACING = 1.5  # consecutive steps of one episode are at most this many control periods apart


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


class DroppedSteps:
    """Which steps stay in the episode, and why the others were dropped."""

    def __init__(self, count: int):
        self.keep = np.ones(count, dtype=bool)  # bool (K,)
        self.counts = Counter()  # reason -> steps
        self.first_reason = np.full(count, "", dtype=object)  # (K,) the first reason of each dropped step

    def drop(self, usable: np.ndarray, reason: str) -> None:
        """Drop the steps that are not ``usable`` (bool (K,)) for ``reason``."""
        newly = self.keep & ~usable
        if newly.any():
            self.counts[reason] += int(newly.sum())
            self.first_reason[newly] = reason
        self.keep &= usable

    def why_missing(self, times: np.ndarray, before: int, after: int) -> str:
        """Why the steps between rows ``before`` and ``after`` are not in the episode."""
        reasons = Counter(self.first_reason[before + 1:after].tolist())
        if not reasons:
            return f"no command for {(times[after] - times[before]) / 1e9:.1f} s"
        return "; ".join(f"{reason} ({n} steps)" for reason, n in reasons.items())


def plan_episode(bag: Bag, cfg: ConvertConfig, report: EpisodeReport, allow_drops: bool = False) -> EpisodePlan:
    """Pass 1: stamps of every message, values of the small ones, then steps and frame choices,
    cut into contiguous segments; BagError when the bag must be refused."""
    chosen = choose_topics(bag, cfg)
    report.action_source = chosen.source
    streams = _read_streams(bag, cfg, chosen)
    steps = _step_plan(bag, cfg, chosen, streams)
    dropped = DroppedSteps(steps.times.size)
    dropped.drop(steps.valid, steps.invalid_reason or "")
    state = _state_per_step(cfg, steps, streams, dropped)
    frames = {role[7:]: _frames_per_step(cfg, steps, streams[role], role[7:], dropped) for role in chosen.cameras}
    segments, cuts = _contiguous_segments(bag, cfg, steps.times, dropped)
    report.cuts, report.total_steps, report.dropped = cuts, int(steps.times.size), dict(dropped.counts)
    report.steps = sum(stop - start for start, stop in segments)
    _check_enough_steps(bag, cfg, segments, dropped, report, allow_drops)
    keep = dropped.keep
    actions = _actions(bag, cfg, chosen, steps, _gripper_per_step(cfg, steps, streams), keep, segments, report)

    step_times = steps.times[keep]
    frame_index = {cam: index[keep] for cam, (index, _) in frames.items()}
    frame_times = {cam: times[frame_index[cam]] for cam, (_, times) in frames.items()}
    report.max_frame_gap_s = {cam: float((step_times - t).max()) / 1e9 for cam, t in frame_times.items()}
    report.action_min = actions.min(axis=0).tolist()
    report.action_max = actions.max(axis=0).tolist()
    return EpisodePlan(chosen.topics, segments, step_times, actions, None if state is None else state[keep],
                       frame_index, frame_times)


def contiguous_runs(step_times: np.ndarray, dt_ns: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges of ``step_times`` whose consecutive steps are at most
    MAX_STEP_SPACING control periods apart."""
    breaks = np.flatnonzero(np.diff(step_times) > MAX_STEP_SPACING * dt_ns) + 1
    edges = [0, *breaks.tolist(), len(step_times)]
    return list(zip(edges[:-1], edges[1:]))


def _read_streams(bag: Bag, cfg: ConvertConfig, chosen: BagTopics) -> dict[str, Stream]:
    """role -> the times of its messages (checked not to go backwards) and, of small messages,
    their values; of a frame only its header stamp is read."""
    roles = chosen.cameras + chosen.small
    role_of = {chosen.topics[role]: role for role in roles}
    streams = {role: Stream() for role in roles}
    last_time: dict[str, int] = {}
    camera_topics = [chosen.topics[role] for role in chosen.cameras]
    for topic, log_ns, raw in bag.messages(list(role_of), head_only=camera_topics):
        role = role_of[topic]
        time_ns = _message_time(bag, cfg, topic, log_ns, raw)
        previous = last_time.get(topic)
        if previous is not None and time_ns < previous:
            raise BagError(bag.path, f"stamps go backwards by {(previous - time_ns) / 1e9:.3f} s "
                                     f"(previous {format_time(previous)}): stamps must not decrease",
                           topic, time_ns, bag.start_ns)
        last_time[topic] = time_ns
        streams[role].times.append(time_ns)
        if not role.startswith("camera:"):
            streams[role].values.append(_small_value(role, bag.deserialize(raw, topic)))
    return streams


def _message_time(bag: Bag, cfg: ConvertConfig, topic: str, log_ns: int, raw) -> int:
    """The header stamp of a message that has one (with stamp_source header), else its log time."""
    if cfg.stamp_source != "header" or not has_header(bag.topics[topic]):
        return log_ns
    stamp = header_stamp_ns(raw)
    if stamp == 0:
        raise BagError(bag.path, "header stamp is zero (the publisher does not stamp its messages); "
                                 "use stamp_source: receive", topic, log_ns, bag.start_ns)
    return stamp


def _small_value(role: str, msg) -> list:
    if role == "delta":
        lin, ang = msg.twist.linear, msg.twist.angular
        return [lin.x, lin.y, lin.z, ang.x, ang.y, ang.z]
    if role == "gripper":
        return [msg.data]
    p, q = msg.pose.position, msg.pose.orientation
    return [p.x, p.y, p.z, q.x, q.y, q.z, q.w]


def _step_plan(bag: Bag, cfg: ConvertConfig, chosen: BagTopics, streams: dict) -> alignment.StepPlan:
    """The steps of the action source's stream at the control rate, with their 6-D actions."""
    source = chosen.source
    times, values = streams[source].arrays()
    try:
        if source == "delta":
            return alignment.steps_from_deltas(times, values, cfg.dt_ns)
        if source == "target":
            measured = None
            if "pose" in streams and streams["pose"].times:
                pose_times, pose_values = streams["pose"].arrays()
                measured = (pose_times, pose_values[:, :3], pose_values[:, 3:])
            return alignment.steps_from_targets(times, values[:, :3], values[:, 3:], cfg.dt_ns, measured)
        return alignment.steps_from_poses(times, values[:, :3], values[:, 3:], cfg.dt_ns)
    except AlignmentError as err:
        raise BagError(bag.path, str(err), chosen.topics[source]) from None


def _gripper_per_step(cfg: ConvertConfig, steps: alignment.StepPlan, streams: dict) -> np.ndarray:
    """float64 (K,) the absolute gripper command of each step (gripper_default without one)."""
    if "gripper" not in streams:
        return np.full(steps.times.size, float(cfg.gripper_default))
    times, values = streams["gripper"].arrays()
    return alignment.gripper_per_step(steps.ends, times, values.reshape(-1), cfg.gripper_default)


def _state_per_step(cfg: ConvertConfig, steps: alignment.StepPlan, streams: dict,
                    dropped: DroppedSteps) -> np.ndarray | None:
    """float32 (K, STATE_DIM) proprioceptive state of each step with cfg.state (None without);
    steps without a recent measured pose are dropped."""
    if not cfg.state:
        return None
    pose_times, pose_values = streams["pose"].arrays()
    _, usable = alignment.frames_for_steps(steps.times, pose_times, cfg.max_frame_gap_ns)
    dropped.drop(usable, f"pose: no measured pose within {cfg.max_frame_gap_s} s")
    gripper_times, gripper_values = streams["gripper"].arrays() if "gripper" in streams else ([], [])
    state, _ = alignment.states_at(steps.times, pose_times, pose_values, gripper_times,
                                   np.reshape(gripper_values, -1), cfg.gripper_default)
    return state


def _frames_per_step(cfg: ConvertConfig, steps: alignment.StepPlan, stream: Stream, camera: str,
                     dropped: DroppedSteps) -> tuple[np.ndarray, np.ndarray]:
    """int64 (K,) the ordinal of the frame each step uses and int64 (F,) the camera's frame times;
    steps without a recent frame are dropped."""
    frame_times = np.asarray(stream.times, dtype=np.int64)
    index, usable = alignment.frames_for_steps(steps.times, frame_times, cfg.max_frame_gap_ns)
    dropped.drop(usable, f"camera {camera}: no frame within {cfg.max_frame_gap_s} s")
    return index, frame_times


def _contiguous_segments(bag: Bag, cfg: ConvertConfig, times: np.ndarray,
                         dropped: DroppedSteps) -> tuple[list, list]:
    """(start, stop) rows of the kept steps for each episode to write, and where gaps cut the bag;
    parts shorter than min_episode_steps are dropped."""
    if not dropped.keep.any():
        reasons = "; ".join(f"{r} ({n} steps)" for r, n in dropped.counts.items()) or "no steps"
        raise BagError(bag.path, f"no usable step out of {times.size}: {reasons}")
    kept_rows = np.flatnonzero(dropped.keep)
    runs = contiguous_runs(times[kept_rows], cfg.dt_ns)
    cuts = [f"{(times[kept_rows[start - 1]] - times[0]) / 1e9:.1f}..."
            f"{(times[kept_rows[start]] - times[0]) / 1e9:.1f} s: "
            f"{dropped.why_missing(times, kept_rows[start - 1], kept_rows[start])}"
            for start, _ in runs[1:]]
    if cuts and cfg.on_gap == "refuse":
        raise BagError(bag.path, f"steps are missing mid-bag ({'; '.join(cuts)}); on_gap: refuse (on_gap: split "
                                 f"writes the contiguous parts as separate episodes)")
    segments = []
    for start, stop in runs:
        if stop - start >= cfg.min_episode_steps:
            segments.append((start, stop))
        else:
            dropped.counts[f"contiguous part shorter than min_episode_steps={cfg.min_episode_steps}"] += stop - start
    return segments, cuts


def _check_enough_steps(bag: Bag, cfg: ConvertConfig, segments: list, dropped: DroppedSteps,
                        report: EpisodeReport, allow_drops: bool) -> None:
    if not segments:
        raise BagError(bag.path, f"no contiguous part of at least min_episode_steps={cfg.min_episode_steps} steps "
                                 f"({'; '.join(f'{r}: {n} steps' for r, n in dropped.counts.items())})")
    if report.drop_ratio > cfg.max_drop_ratio and not allow_drops:
        raise BagError(bag.path, f"{report.drop_ratio:.0%} of its {report.total_steps} steps would be dropped "
                                 f"({'; '.join(f'{r}: {n}' for r, n in dropped.counts.items())}), more than "
                                 f"max_drop_ratio={cfg.max_drop_ratio:g}; fix the recording or convert with "
                                 f"--allow-drops")


def _actions(bag: Bag, cfg: ConvertConfig, chosen: BagTopics, steps: alignment.StepPlan, gripper: np.ndarray,
             keep: np.ndarray, segments: list, report: EpisodeReport) -> np.ndarray:
    """float32 (T, 7) actions of the kept steps; BagError when the robot never moved."""
    actions = np.concatenate([steps.actions6[keep], gripper[keep, None]], axis=1).astype(np.float32)
    source, topic = chosen.source, chosen.topics[chosen.source]
    fell_back_to_poses = cfg.action_source == "auto" and source == "pose"
    unused = unused_command_topics(bag, chosen.topics) if fell_back_to_poses else None
    # (constant non-zero motion is a valid demonstration: a straight line at constant speed)
    if np.abs(np.concatenate([actions[a:b, :6] for a, b in segments])).max() <= 1e-9:
        raise BagError(bag.path, f"every action taken from {source} ({topic}) is zero in translation and "
                                 f"rotation: the robot never moved in this bag's {source} stream"
                       + (f"; {unused}" if unused else ""), topic)
    if unused:
        report.notes.append(f"note: {unused}")
    return actions
