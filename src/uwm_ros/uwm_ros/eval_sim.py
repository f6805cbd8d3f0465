"""uwm-eval-sim: closed-loop evaluation of a checkpoint in the simulated Franka, over ROS 2.

    uwm-eval-sim --checkpoint runs/demo/train/checkpoint --task lift --episodes 20
    uwm-eval-sim --checkpoint ... --task stack --episodes 50 --first-seed 5000 --out runs/eval_stack

The real nodes run as separate processes talking over DDS (confined to this machine, in a ROS
domain of their own): ``uwm-sim-node`` (config/sim.yaml) and ``uwm-policy-node`` (config/policy.yaml
with the sim's robot interface from config/sim.yaml, as ``policy.launch.py use_sim:=true`` does).
For every episode this process sets the sim's seed and calls ``/uwm_sim/reset``, waits until the
policy can observe ``obs_horizon`` frame sets of the new episode, activates ``/uwm_policy``, and
deactivates it at ``~/task_success`` or after the step limit.

By default the sim runs fast, on simulated time and in lockstep with the policy (``real_time``
false): results do not depend on how busy the CPU is. ``--real-time`` paces the sim by the wall
clock instead, as on the robot, where a slow inference costs robot time.

Written to ``--out``: ``eval.json`` (the report), ``rollouts.mp4`` (the first ``--video-episodes``
rollouts, all cameras side by side), ``predicted_frames.png`` (for a rollout: the current frames,
the frames actually observed after the next action chunk, and the world model's forward-dynamics
prediction of them from the actions actually executed) and ``logs/`` (one log per node).

Reported: success rate with its 95% Wilson interval, mean episode length (steps until success,
or the limit), and inference latency as the policy node measures it (``~/status``: on the node's
clock, which is simulated time in the default fast mode) plus the model's wall-clock latency
measured in this process after the rollouts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .orchestration import (LifecycleClient, OrchestrationError, ProcessGroup, RosClient, console_script,
                            cooperative_threads, isolate_ros_graph, read_node_params, ros_args, ros_config_file)
from .sim.metrics import wilson_interval
from .sim.rendering import RenderingUnavailable, check_rendering
from .sim.tasks import TASKS, get_task

POLICY_NODE = "/uwm_policy"
CONFIGURE_TIMEOUT_S = 600.0  # load + warm-up of a large checkpoint on a CPU
WALL_S_PER_STEP = 1.5  # generous: a lockstep step waits at most 0.5 s for the policy
VIDEO_SCALE = 2
CAPTION_PX = 20
TILE_PX = 96  # tiles of the predicted-frames strip are shown at this size
TILE_PAD_PX = 4
GROUP_GAP_PX = 16
STRIP_GROUPS = ("current", "actual next", "predicted next")
LATENCY_CALLS = 5


class EvalInputError(ValueError):
    """A task, checkpoint or option the evaluation cannot run with; the message lists valid choices."""


@dataclass
class EvalSettings:
    checkpoint: str
    task: str = "lift"
    episodes: int = 10
    first_seed: int = 1000  # demos recorded by uwm-demo use seeds from 0: evaluate on others
    max_steps: int | None = None  # None: the task's limit
    out_dir: str = "runs/eval"
    video_episodes: int = 2
    image_size: int | None = None  # rendered camera size; None: config/sim.yaml's
    device: str = "cpu"
    precision: str = "auto"  # inference arithmetic of the policy: auto, fp32, bf16, fp16 (CUDA)
    real_time: bool = False
    policy_seed: int = 0  # chunk n of the policy is sampled with policy_seed + n
    torch_threads: int = 0


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    steps: int  # until success, or the steps run when the limit or a fault ended it
    fault: str | None = None
    inference: dict = field(default_factory=dict)  # the policy's ~/status at the end of the episode


# ---------------------------------------------------------------------- input checks
def sim_cameras(sim_params: dict) -> dict[str, tuple[str, str]]:
    """camera name -> (scene camera rendered, image topic) of a sim parameter set."""
    return {name: (source, topic) for name, source, topic in
            zip(sim_params["cameras"], sim_params["camera_sources"], sim_params["camera_topics"])}


def check_inputs(settings: EvalSettings, sim_params: dict):
    """The checkpoint's ModelConfig; EvalInputError (listing the valid choices) for a task the sim
    does not know, a checkpoint whose cameras the sim does not render or bad numbers."""
    from uwm_core.checkpoint import CheckpointError, read_checkpoint_config
    from uwm_core.spatial import ACTION_DIM

    if settings.task not in TASKS:
        raise EvalInputError(f"--task {settings.task!r}: the sim does not know this task; valid tasks: "
                             f"{', '.join(TASKS)}")
    for name in ("episodes", "video_episodes", "max_steps", "image_size"):
        value = getattr(settings, name)
        if value is not None and (value < 0 or (value == 0 and name != "video_episodes")):
            raise EvalInputError(f"--{name.replace('_', '-')} {value}: must be a positive number")
    try:
        model_cfg, _ = read_checkpoint_config(settings.checkpoint)
    except CheckpointError as err:
        raise EvalInputError(f"--checkpoint: {err}") from None
    available = sim_cameras(sim_params)
    unknown = [c for c in model_cfg.cameras if c not in available]
    if unknown:
        raise EvalInputError(
            f"--checkpoint {settings.checkpoint} was trained with cameras {list(model_cfg.cameras)}, but the sim "
            f"renders no camera {unknown}; valid cameras: {', '.join(available)} (config/sim.yaml: cameras; "
            "train on a dataset recorded with these camera names)")
    if model_cfg.action_dim != ACTION_DIM:
        raise EvalInputError(f"--checkpoint {settings.checkpoint} has action_dim {model_cfg.action_dim}; the sim "
                             f"is commanded with {ACTION_DIM}-D actions [dx, dy, dz, rx, ry, rz, gripper]")
    return model_cfg


# ---------------------------------------------------------------------- what the evaluator observes
class RolloutRecorder:
    """Subscribes to the sim's cameras and status and the policy's commands and status; keeps the
    frames and commands of the episode being recorded (all callbacks on the client's thread)."""

    def __init__(self, ros: RosClient, camera_topics: dict[str, str], gripper_topic: str, pose_topic: str,
                 period_ns: int):
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32, String

        from .sim.ros_interface import EPISODE_QOS, SIM_NODE_NAME, parse_episode

        self._parse_episode = parse_episode
        self.lock = threading.Lock()
        self.cameras = list(camera_topics)
        self.status = None  # the sim's latest ~/episode
        self.policy_status = None
        self._period_ns = period_ns
        self._episode_starts: dict[int, int] = {}  # sim episode -> stamp of its first frame set
        self._recording = False
        self._keep_frames = False
        self.frames: dict[int, dict] = {}  # stamp ns -> {camera: rgb}
        self.deltas: list[tuple[int, np.ndarray]] = []
        self.grippers: list[tuple[int, float]] = []  # stamped with the tick's delta (Float32 has no header)
        self.poses: list[tuple[int, np.ndarray]] = []  # measured (position, quat xyzw) while frames are kept
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node = ros.node
        for camera, topic in camera_topics.items():
            node.create_subscription(Image, topic, lambda m, c=camera: self._on_image(c, m), reliable)
        node.create_subscription(String, f"/{SIM_NODE_NAME}/episode", self._on_episode, EPISODE_QOS)
        node.create_subscription(String, f"{POLICY_NODE}/status", self._on_policy_status, 10)
        node.create_subscription(TwistStamped, f"{POLICY_NODE}/delta_ee", self._on_delta, reliable)
        node.create_subscription(Float32, gripper_topic, self._on_gripper, reliable)
        node.create_subscription(PoseStamped, pose_topic, self._on_pose, reliable)

    @staticmethod
    def _stamp_ns(header) -> int:
        return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec

    def _on_image(self, camera, msg) -> None:
        with self.lock:
            if not self._keep_frames:
                return
        from uwm_core.image_codec import decode_image_msg

        rgb = decode_image_msg(msg)
        with self.lock:
            self.frames.setdefault(self._stamp_ns(msg.header), {})[camera] = rgb

    def _on_episode(self, msg) -> None:
        status = self._parse_episode(msg)
        start = status["stamp_ns"] - status["step"] * self._period_ns  # exact in fast mode
        with self.lock:
            self.status = status
            episode = status["episode"]
            self._episode_starts[episode] = min(start, self._episode_starts.get(episode, start))

    def _on_policy_status(self, msg) -> None:
        status = json.loads(msg.data)
        with self.lock:
            self.policy_status = status

    def _on_delta(self, msg) -> None:
        t = msg.twist
        delta = np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])
        with self.lock:
            if self._recording:
                self.deltas.append((self._stamp_ns(msg.header), delta))

    def _on_gripper(self, msg) -> None:
        with self.lock:
            if self._recording and self.deltas:
                self.grippers.append((self.deltas[-1][0], float(msg.data)))

    def _on_pose(self, msg) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        with self.lock:
            if self._keep_frames:
                self.poses.append((self._stamp_ns(msg.header), np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])))

    def begin(self, keep_frames: bool) -> None:
        """Start recording (before the sim's reset, so that the episode's first frame set is kept)."""
        with self.lock:
            self._recording, self._keep_frames = True, keep_frames
            self.frames, self.deltas, self.grippers, self.poses = {}, [], [], []

    def end(self, episode: int) -> dict:
        """Stop recording; the frame sets of sim episode ``episode`` (complete ones) and the commands."""
        with self.lock:
            frames, deltas, grippers, poses = self.frames, self.deltas, self.grippers, self.poses
            self._recording, self._keep_frames = False, False
            self.frames, self.deltas, self.grippers, self.poses = {}, [], [], []
            start = self._episode_starts.get(episode, 0) - self._period_ns // 2
        complete = {s: f for s, f in frames.items() if len(f) == len(self.cameras) and s >= start}
        return {"episode": episode, "frames": dict(sorted(complete.items())), "deltas": deltas, "grippers": grippers,
                "poses": poses}

    def latest(self) -> tuple[dict | None, dict | None]:
        with self.lock:
            return self.status, self.policy_status


def record_states(record: dict, stamps) -> np.ndarray:
    """The proprioceptive state at each frame-set stamp of a recorded rollout, as datasets store it
    (rows before the first recorded pose are NaN)."""
    from uwm_teleop.alignment import states_at

    poses, grippers = record.get("poses", []), record["grippers"]
    states, _ = states_at(stamps, [t for t, _ in poses], [p for _, p in poses] or np.zeros((0, 7)),
                          [t for t, _ in grippers], [g for _, g in grippers])
    return states


def step_actions(stamps: list[int], deltas, grippers) -> np.ndarray:
    """The 7-D action of each simulated step (frame stamp to the next): the deltas the policy sent
    in it composed (zero while it held), and the gripper command in force."""
    from uwm_teleop.alignment import compose_deltas, latest_at_or_before

    stamps = np.asarray(stamps, dtype=np.int64)
    actions = np.zeros((len(stamps), 7), dtype=np.float32)
    if deltas:
        delta_stamps = np.array([s for s, _ in deltas], dtype=np.int64)
        step_of_delta = latest_at_or_before(stamps, delta_stamps)
        values = np.stack([d for _, d in deltas])
        for step in np.unique(step_of_delta[step_of_delta >= 0]):
            actions[step, :6] = compose_deltas(values[step_of_delta == step])
    if grippers:
        gripper_stamps = np.array([s for s, _ in grippers], dtype=np.int64)
        at = latest_at_or_before(gripper_stamps, stamps)
        values = np.array([g for _, g in grippers], dtype=np.float32)
        actions[:, 6] = np.where(at >= 0, values[np.maximum(at, 0)], 0.0)
    return actions


# ---------------------------------------------------------------------- artefacts
def _caption(image: np.ndarray, text: str, height: int = CAPTION_PX) -> np.ndarray:
    import cv2

    band = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def _upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)


def write_video(path: Path, rollouts: list[tuple[str, list[dict]]], cameras: list[str], fps: float) -> int:
    """An H.264 mp4 of the rollouts (caption, frame sets): cameras side by side, enlarged; returns
    the number of frames written. Each rollout's last frame is held for a second."""
    import av

    composites = []
    for caption, frame_sets in rollouts:
        for index, frames in enumerate(frame_sets):
            row = np.concatenate([frames[c] for c in cameras], axis=1)
            row = _upscale(row, row.shape[0] * VIDEO_SCALE, row.shape[1] * VIDEO_SCALE)
            composites.append(_caption(row, f"{caption} | step {index}"))
        composites += [composites[-1]] * int(fps) if frame_sets else []
    if not composites:
        raise ValueError("no frames to write")
    height, width = composites[0].shape[:2]
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        for image in composites:
            padded = np.pad(image, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return len(composites)


def strip_size(num_cameras: int) -> tuple[int, int]:
    """(width, height) of the predicted-frames strip: per camera a row of 2 + 2 + 2 tiles."""
    group = 2 * TILE_PX + TILE_PAD_PX
    width = len(STRIP_GROUPS) * group + (len(STRIP_GROUPS) - 1) * GROUP_GAP_PX
    return width, CAPTION_PX + num_cameras * TILE_PX + (num_cameras - 1) * TILE_PAD_PX


def prediction_strip(current: dict, actual: dict, predicted: dict, cameras: list[str], title: str) -> np.ndarray:
    """Rows per camera: current frames | frames actually observed next | predicted next frames."""
    def group(frames):
        tiles = [_upscale(f, TILE_PX, TILE_PX) for f in frames]
        return np.concatenate([tiles[0], np.full((TILE_PX, TILE_PAD_PX, 3), 255, np.uint8), tiles[1]], axis=1)

    gap = np.full((TILE_PX, GROUP_GAP_PX, 3), 255, np.uint8)
    rows = []
    for camera in cameras:
        groups = [group(current[camera]), gap, group(actual[camera]), gap, group(predicted[camera])]
        rows.append(np.concatenate(groups, axis=1))
        rows.append(np.full((TILE_PAD_PX, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    labels = " | ".join(f"{name}" for name in STRIP_GROUPS)
    return _caption(grid, f"{title}: {labels} ({', '.join(cameras)} rows)")


def predicted_frames_strip(wm, record: dict, path: Path, seed: int = 0) -> dict | None:
    """The world model's prediction of the frames after one action chunk of a recorded rollout,
    next to the frames actually observed; written as a PNG. None when the rollout is too short or
    the model cannot predict frames (the dp variant)."""
    from PIL import Image as PILImage

    from uwm_core.model.uwm import VARIANT_MODES
    from uwm_core.processing import float_to_frames, model_view

    modes = VARIANT_MODES[wm.variant]
    mode = "forward_dynamics" if "forward_dynamics" in modes else "video" if "video" in modes else None
    stamps = list(record["frames"])
    To, Ta = wm.obs_horizon, wm.action_horizon
    if mode is None or len(stamps) < To + Ta + To - 1:
        return None
    actions = step_actions(stamps, record["deltas"], record["grippers"])
    moving = np.flatnonzero(np.abs(actions[:, :6]).sum(axis=1) > 0)
    # the first chunk the policy executed: its first action is at the current frame t (index To-1 or later)
    t = int(min(max(moving[0] if moving.size else To - 1, To - 1), len(stamps) - Ta - To))
    sets = [record["frames"][s] for s in stamps]
    current = {c: np.stack([sets[t - To + 1 + i][c] for i in range(To)]) for c in wm.cameras}
    actual = {c: np.stack([sets[t + Ta + i][c] for i in range(To)]) for c in wm.cameras}
    chunk = actions[t:t + Ta]
    state = record_states(record, stamps[t - To + 1:t + 1]) if wm.state_dim else None
    if state is not None and not np.isfinite(state).all():
        return None  # no measured pose recorded that early
    if mode == "forward_dynamics":
        predicted = wm.predict_next_frames(current, chunk, seed=seed, state=state)
    else:
        predicted = wm.predict_video(current, seed=seed, state=state)

    def view(frames):  # what the model sees: resized and centre-cropped
        return float_to_frames(model_view(frames, wm.config.resize_shape, wm.image_size))

    strip = prediction_strip({c: view(current[c]) for c in wm.cameras}, {c: view(actual[c]) for c in wm.cameras},
                             predicted, wm.cameras, f"steps {t - To + 1}..{t} -> {t + Ta}..{t + Ta + To - 1}")
    tmp = path.with_name(f".{path.name}.tmp.png")
    PILImage.fromarray(strip).save(tmp)
    os.replace(tmp, path)
    error = float(np.mean([np.mean((predicted[c].astype(np.float32) - view(actual[c]).astype(np.float32)) ** 2)
                           for c in wm.cameras]) / 255.0 ** 2)
    return {"path": str(path), "size": list(strip.shape[1::-1]), "mode": mode, "current_step": t,
            "predicted_steps": [t + Ta, t + Ta + To - 1], "mse": round(error, 5)}


def wall_clock_latency(wm, record: dict, calls: int = LATENCY_CALLS) -> dict:
    """predict_actions wall time in this process (median and max of ``calls``), on recorded frames."""
    sets = list(record["frames"].values())
    if len(sets) >= wm.obs_horizon:
        images = {c: np.stack([s[c] for s in sets[:wm.obs_horizon]]) for c in wm.cameras}
    else:
        size = wm.image_size
        images = {c: np.full((wm.obs_horizon, size, size, 3), 127, np.uint8) for c in wm.cameras}
    state = np.zeros((wm.obs_horizon, wm.state_dim)) if wm.state_dim else None  # the time does not depend on it
    times = []
    for i in range(calls + 1):  # the first call warms up
        started = time.perf_counter()
        wm.predict_actions(images, seed=i, state=state)
        times.append(time.perf_counter() - started)
    return {"median_s": round(float(np.median(times[1:])), 4), "max_s": round(float(np.max(times[1:])), 4),
            "calls": calls}


# ---------------------------------------------------------------------- the evaluation
def evaluate(settings: EvalSettings, say=print) -> dict:
    """Run the closed-loop evaluation; returns the report (also written to <out_dir>/eval.json)."""
    sim_params_file = ros_config_file("sim.yaml")
    sim_params = read_node_params(sim_params_file)
    model_cfg = check_inputs(settings, sim_params)
    spec = get_task(settings.task)
    max_steps = settings.max_steps or spec.max_steps
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs"
    cameras = sim_cameras(sim_params)
    used = {c: cameras[c] for c in model_cfg.cameras}
    camera_topics = {c: topic for c, (_, topic) in used.items()}
    sim_overrides = {"task": settings.task, "real_time": settings.real_time, "seed": settings.first_seed,
                     "cameras": list(used), "camera_sources": [s for s, _ in used.values()],
                     "camera_topics": list(camera_topics.values())}
    if settings.image_size:
        sim_overrides.update(image_width=settings.image_size, image_height=settings.image_size)
    policy_overrides = {"checkpoint": str(Path(settings.checkpoint).resolve()), "device": settings.device,
                        "precision": settings.precision, "use_sim_time": not settings.real_time,
                        "seed": settings.policy_seed,
                        "camera_topics": list(camera_topics.values()), "torch_threads": settings.torch_threads,
                        "status_period_s": 0.5, "autostart": False}
    started = time.monotonic()
    results: list[EpisodeResult] = []
    records: list[dict] = []
    timings = {}
    with ProcessGroup(log_dir) as processes:
        processes.start("uwm-sim-node", [console_script("uwm-sim-node"),
                                         *ros_args([sim_params_file], sim_overrides)], "sim.log")
        # the policy on the sim's robot interface, as policy.launch.py use_sim:=true sets it up
        processes.start("uwm-policy-node", [console_script("uwm-policy-node"), *ros_args(
            [ros_config_file("policy.yaml"), sim_params_file], policy_overrides)], "policy.log")
        with RosClient("uwm_eval_sim", watch=processes) as ros:
            from .sim_demos import reset_sim

            recorder = RolloutRecorder(ros, camera_topics, sim_params["gripper_topic"], sim_params["ee_pose_topic"],
                                       round(1e9 / sim_params["control_rate_hz"]))
            policy = LifecycleClient(ros, POLICY_NODE)
            say(f"configuring {POLICY_NODE} with {settings.checkpoint} (loads the model, one warm-up inference)")
            ros.wait_for(lambda: recorder.latest()[0], CONFIGURE_TIMEOUT_S, "the sim's first episode (/uwm_sim/episode)")
            if not policy.change("configure", CONFIGURE_TIMEOUT_S):
                raise OrchestrationError(f"{POLICY_NODE} failed to configure; see {log_dir / 'policy.log'}")
            timings["startup_s"] = round(time.monotonic() - started, 1)
            for index in range(settings.episodes):
                seed = settings.first_seed + index
                recorder.begin(keep_frames=index < max(settings.video_episodes, 1))
                episode = reset_sim(ros, seed)
                # activate once the policy can observe obs_horizon frame sets of this episode only
                ros.wait_for(lambda: _status_of(recorder, episode, model_cfg.obs_horizon - 1), 60.0,
                             f"episode {episode} of the sim to start")
                if not policy.change("activate"):
                    raise OrchestrationError(f"{POLICY_NODE} failed to activate; see {log_dir / 'policy.log'}")
                final = ros.wait_for(lambda: _episode_over(recorder, episode, max_steps),
                                     max_steps * WALL_S_PER_STEP + 120, f"episode {episode} (seed {seed}) to end")
                state = policy.state()
                if state == "active":
                    policy.change("deactivate")
                status, policy_status = recorder.latest()
                fault = final.get("fault") or (None if state == "active" else f"policy left the active state ({state})")
                if state == "unconfigured" and not policy.change("configure", CONFIGURE_TIMEOUT_S):
                    raise OrchestrationError(f"{POLICY_NODE} failed to configure again after a fault; see "
                                             f"{log_dir / 'policy.log'}")
                result = EpisodeResult(seed, bool(final.get("success")), int(final.get("step", 0)), fault,
                                       _inference_summary(policy_status))
                results.append(result)
                records.append(recorder.end(episode))
                successes = sum(r.success for r in results)
                say(f"  episode {index + 1}/{settings.episodes} (seed {seed}): "
                    f"{'success' if result.success else 'failure'} after {result.steps} steps"
                    f"{f' ({fault})' if fault else ''} | {successes}/{len(results)} successes")
    timings["rollouts_s"] = round(time.monotonic() - started - timings.get("startup_s", 0.0), 1)
    return _finish(settings, model_cfg, results, records, timings, out_dir, log_dir, max_steps, say)


def _status_of(recorder: RolloutRecorder, episode: int, min_step: int):
    status, _ = recorder.latest()
    return status if status is not None and status["episode"] == episode and status["step"] >= min_step else None


def _episode_over(recorder: RolloutRecorder, episode: int, max_steps: int):
    status, policy_status = recorder.latest()
    if status is not None and status["episode"] == episode:
        if status["success"] and status["step"] <= max_steps:
            return status
        if status["step"] >= max_steps:
            # The limit ends the episode; in fast mode the sim may be a step further by the time we look.
            return {**status, "success": False, "step": max_steps}
    if policy_status is not None and policy_status.get("fault"):
        return {"success": False, "step": status["step"] if status else 0,
                "fault": f"policy fault: {policy_status['fault']}"}
    return None


def _inference_summary(policy_status: dict | None) -> dict:
    keys = ("inference_latency_p50_s", "inference_latency_p99_s", "inferences", "chunks_used", "actions_executed",
            "actions_skipped", "tick_period_p50_s")
    return {k: policy_status.get(k) for k in keys} if policy_status else {}


def _finish(settings, model_cfg, results, records, timings, out_dir: Path, log_dir: Path, max_steps, say) -> dict:
    from uwm_core import WorldModel

    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, len(results))
    started = time.monotonic()
    wm = WorldModel.from_checkpoint(settings.checkpoint, device=settings.device, precision=settings.precision)
    artefacts = {}
    video_records = [(r, rec) for r, rec in zip(results, records) if rec["frames"]][:settings.video_episodes]
    if video_records:
        path = out_dir / "rollouts.mp4"
        frames = write_video(path, [(f"{settings.task} seed {r.seed}: {'success' if r.success else 'failure'}",
                                     list(rec["frames"].values())) for r, rec in video_records],
                             list(model_cfg.cameras), fps=10.0)
        artefacts["video"] = {"path": str(path), "frames": frames, "episodes": [r.seed for r, _ in video_records]}
    strip = predicted_frames_strip(wm, records[0], out_dir / "predicted_frames.png") if records else None
    if strip is not None:
        artefacts["predicted_frames_png"] = strip
    latency_wall = wall_clock_latency(wm, records[0] if records else {"frames": {}})
    timings["artefacts_s"] = round(time.monotonic() - started, 1)
    last = next((r.inference for r in reversed(results) if r.inference), {})
    report = {
        "task": settings.task,
        "checkpoint": str(settings.checkpoint),
        "variant": model_cfg.variant,
        "episodes": len(results),
        "successes": successes,
        "success_rate": successes / len(results) if results else 0.0,
        "wilson_95": [round(low, 4), round(high, 4)],
        "mean_episode_length": round(float(np.mean([r.steps for r in results])), 2) if results else None,
        "max_steps": max_steps,
        "first_seed": settings.first_seed,
        "real_time": settings.real_time,
        "inference_latency": {
            "node_clock": "wall" if settings.real_time else "simulated",
            "p50_s": last.get("inference_latency_p50_s"), "p99_s": last.get("inference_latency_p99_s"),
            "wall_clock_in_process": latency_wall},
        "episode_results": [asdict(r) for r in results],
        "artefacts": artefacts,
        "logs": str(log_dir),
        "timings": timings,
    }
    tmp = out_dir / ".eval.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out_dir / "eval.json")
    say(summary_text(report))
    return report


def summary_text(report: dict) -> str:
    latency = report["inference_latency"]
    lines = [
        f"{report['task']}: success {report['successes']}/{report['episodes']} = {report['success_rate']:.1%} "
        f"(95% Wilson interval {report['wilson_95'][0]:.1%}..{report['wilson_95'][1]:.1%}), mean episode length "
        f"{report['mean_episode_length']} steps (limit {report['max_steps']})",
        f"inference latency: {_seconds(latency['wall_clock_in_process']['median_s'])} wall clock per action chunk "
        f"(median of {latency['wall_clock_in_process']['calls']} in this process); the policy node measured p50 "
        f"{_seconds(latency['p50_s'])}, p99 {_seconds(latency['p99_s'])} of {latency['node_clock']} time "
        f"(~/status{'' if latency['node_clock'] == 'wall' else '; the fast sim waits for the policy'})",
    ]
    for name, artefact in report["artefacts"].items():
        lines.append(f"{name}: {artefact['path']}")
    return "\n".join(lines)


def _seconds(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="uwm-eval-sim", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory written by uwm-train")
    parser.add_argument("--task", default="lift", help=f"sim task: {', '.join(TASKS)} (default lift)")
    parser.add_argument("--episodes", type=int, default=10, help="number of rollouts (default 10)")
    parser.add_argument("--first-seed", type=int, default=1000, help="seed of the first rollout; then +1 each "
                        "(default 1000, away from the demos' seeds)")
    parser.add_argument("--max-steps", type=int, help="step limit per rollout (default: the task's)")
    parser.add_argument("--out", default="runs/eval", help="output directory (default runs/eval)")
    parser.add_argument("--video-episodes", type=int, default=2, help="rollouts saved in rollouts.mp4 (default 2)")
    parser.add_argument("--image-size", type=int, help="rendered camera size in pixels (default: config/sim.yaml)")
    parser.add_argument("--device", default="cpu", help="policy device: cpu, cuda, auto (default cpu)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="inference arithmetic (default auto: bf16 where the CPU or GPU computes it natively)")
    parser.add_argument("--real-time", action="store_true", help="pace the sim by the wall clock (default: fast, "
                        "simulated time, lockstep with the policy)")
    parser.add_argument("--policy-seed", type=int, default=0, help="action sampling seed of the policy node")
    parser.add_argument("--torch-threads", type=int, default=0, help="CPU threads of the policy (0: torch's default)")
    parser.add_argument("--ros-domain-id", type=int, help="ROS domain of the nodes (default: $ROS_DOMAIN_ID, else "
                        "a random one; discovery stays on this machine)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    args = parser.parse_args(argv)
    settings = EvalSettings(checkpoint=args.checkpoint, task=args.task, episodes=args.episodes,
                            first_seed=args.first_seed, max_steps=args.max_steps, out_dir=args.out,
                            video_episodes=args.video_episodes, image_size=args.image_size, device=args.device,
                            precision=args.precision, real_time=args.real_time, policy_seed=args.policy_seed,
                            torch_threads=args.torch_threads)
    try:
        check_inputs(settings, read_node_params(ros_config_file("sim.yaml")))
        check_rendering()  # RenderingUnavailable names the package to install
        isolate_ros_graph(args.ros_domain_id)
        cooperative_threads()
        report = evaluate(settings)
    except (EvalInputError, ValueError, RenderingUnavailable) as err:
        print(f"uwm-eval-sim: error: {err}", file=sys.stderr)
        return 2
    except OrchestrationError as err:
        print(f"uwm-eval-sim: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("uwm-eval-sim: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
