"""``uwm_policy``: a UWM checkpoint as a closed-loop policy, as an rclpy lifecycle node.

    uwm-policy-node --ros-args -p checkpoint:=runs/x/checkpoint -p autostart:=true
    ros2 launch uwm_ros policy.launch.py checkpoint:=runs/x/checkpoint autostart:=true

Lifecycle: configure loads the checkpoint, checks the camera topics against its cameras, runs one
warm-up inference and creates the subscriptions and publishers; activate starts the control timer;
deactivate holds the current target; cleanup/shutdown free the model. A fault while active
(non-finite actions, a failing model) stops the robot and goes through the ERROR transition.

Cameras (``camera_topics``, ordered like the checkpoint's cameras): a topic ending in
``/compressed`` is subscribed as sensor_msgs/CompressedImage (jpeg/png), any other as
sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8; row padding in ``step`` honoured), all with
sensor-data QoS. The observation is ``obs_horizon`` frame sets one control period apart whose
header stamps agree within ``max_frame_skew_s`` and are not older than ``max_frame_age_s``
(``camera_sync``). Control at ``control_rate_hz`` executes the first ``execute_steps`` actions of
each chunk and replans; inference runs on its own thread and late actions are skipped
(``chunk_scheduler``). Commands go out through ``uwm_teleop.command_interface`` (``~/delta_ee``,
target pose or deltas, gripper), with its clamps, workspace box and pose checks.

Parameters are read at configure: to change them, cleanup and configure again. Cleanup returns at
once (an inference still running finishes on its thread, and its model is freed when it ends);
shutdown waits for it, so the process exits cleanly.

Introspection: ``~/status`` (std_msgs/String, JSON), ``/diagnostics`` (inference latency, frame
age and skew, tick period, state) and, when ``publish_predicted_frames`` is true, ``~/predicted_frames``
(sensor_msgs/Image): a grid with one column per camera, the current frame on top and below it the
world model's forward-dynamics prediction of the frames after the executing chunk.
"""
from __future__ import annotations

import gc
import json
import math
import signal
import sys
import threading
import time
from collections import deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from uwm_core.image_codec import encode_raw, raw_image_problem
from uwm_core.spatial import ACTION_DIM
from uwm_teleop.command_interface import CommandInterface, declare_command_parameters, settings_from_node
from uwm_teleop.parameters import declare_parameters, parameter_value
from uwm_teleop.spinning import spin

from .camera_sync import CameraBuffers, NotReady, camera_topic_mismatch
from .chunk_scheduler import Chunk, ChunkScheduler, TickGrid
from .inference_worker import InferenceJob, InferenceWorker, LatestJobThread, decode_observation

NODE_NAME = "uwm_policy"
COMPRESSED_SUFFIX = "/compressed"
TIMING_WINDOW = 200
# The inference thread runs Python between torch ops; at the default 5 ms GIL switch interval every
# GIL hand-back in a control tick (each publish, each log line) can wait that long, and a tick
# stretches to a second on a busy 2-core machine. 0.5 ms keeps ticks on time for a little overhead.
GIL_SWITCH_INTERVAL_S = 0.0005
# Hard bounds on what the parameters may ask for. The per-step clamps times the control rate are the
# top Cartesian speeds; above the Franka Panda's documented Cartesian velocity limits they are refused.
FRANKA_MAX_SPEED_M_S, FRANKA_MAX_SPEED_RAD_S = 1.7, 2.5
MAX_CONTROL_RATE_HZ = 100.0
NOT_READY_WARN_S = 1.0  # frame sets unusable for longer than this are a warning (sync, age), not a start-up wait
SIGNAL_CHECK_PERIOD_S = 0.2  # the longest a SIGINT/SIGTERM waits to be seen, in every lifecycle state
SHUTDOWN_JOIN_S = 300.0  # shutdown waits this long for a running inference (a paper-size chunk on a CPU)

# name -> (default, description). The command parameters come from uwm_teleop.command_interface.
POLICY_PARAMETERS = {
    "checkpoint": ("", "checkpoint directory written by uwm-train (required)"),
    "device": ("auto", "torch device for inference: auto (cuda when available, else cpu), cpu, cuda, cuda:N"),
    "precision": ("auto", "inference arithmetic: auto (bf16 where the CPU or GPU computes it natively, else fp32), "
                          "fp32, bf16, fp16 (CUDA only)"),
    "compile": ("auto", "torch.compile the denoiser step at configure (static shapes, CUDA graphs on CUDA; eager with "
                        "a warning where compilation fails): auto (on CUDA only), on, off"),
    "camera_topics": (["/cameras/left/image_raw", "/cameras/right/image_raw", "/cameras/wrist/image_raw"],
                      "camera topics in the order of the checkpoint's cameras; a topic ending in /compressed is "
                      "sensor_msgs/CompressedImage, any other sensor_msgs/Image"),
    "check_camera_names": (True, "refuse camera_topics that do not name the checkpoint's cameras in its order (e.g. "
                                 "/cameras/left/image_raw for 'left'); false for topics named otherwise"),
    "max_frame_skew_s": (0.05, "frames of one observation must have header stamps within this of each other (s)"),
    "max_frame_age_s": (0.5, "hold when a camera's newest frame is older than this (s)"),
    "control_rate_hz": (10.0, "control ticks per second (the rate the checkpoint's actions were recorded at)"),
    "execute_steps": (0, "actions executed from each chunk before replanning; 0: the checkpoint's (paper: 8)"),
    "replan_margin_s": (0.05, "margin added to the measured inference latency when requesting the next chunk (s)"),
    "seed": (-1, "action sampling seed of chunk n is seed + n; -1: unseeded"),
    "torch_threads": (0, "CPU threads used by torch; 0 keeps torch's default"),
    "publish_predicted_frames": (False, "publish the forward-dynamics prediction of the executing chunk on "
                                        "~/predicted_frames (costs one extra inference per preview)"),
    "predicted_frames_period_s": (2.0, "at most one predicted-frames preview per this many seconds"),
    "status_period_s": (1.0, "period of ~/status and /diagnostics (s)"),
    "autostart": (False, "configure and activate on start (for uwm-policy-node without launch; the launch "
                         "file has its own autostart argument)"),
}


class ConfigureError(ValueError):
    """A bad parameter or checkpoint; the message names the value."""


def image_problem(msg) -> str | None:
    """A cheap check of a camera message before it is buffered (full decoding happens at inference)."""
    if hasattr(msg, "encoding"):
        problem = raw_image_problem(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
        if problem:
            return problem
    elif len(msg.data) == 0:
        return f"empty compressed image (format {msg.format!r})"
    if msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0:
        return "header stamp is zero: frames cannot be synchronised"
    return None


def percentile(values, q: float) -> float | None:
    return None if len(values) == 0 else float(np.percentile(np.asarray(values), q))


class PolicyNode(LifecycleNode):
    def __init__(self, load_world_model=None, **kwargs):
        """``load_world_model(path, device, precision, compile)`` builds the model (default
        ``WorldModel.from_checkpoint``)."""
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self, POLICY_PARAMETERS)
        declare_command_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._load_world_model = load_world_model
        self._state_label = "unconfigured"
        self._io_group = ReentrantCallbackGroup()
        self._retired_threads = []  # stopped inference threads that may still finish a chunk
        # the status timer and the preview thread run beside the lifecycle transitions that destroy
        # their publishers: both sides take this lock, so nothing publishes on a destroyed publisher
        self._publishers_lock = threading.Lock()
        self._reset_resources()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))  # process-wide

    # ------------------------------------------------------------------ lifecycle
    def _reset_resources(self) -> None:
        self._wm = None
        self._cmd = None
        self._camera_subs = []
        self._worker = None
        self._preview = None
        self._tick_timer = None
        self._status_timer = None
        self._status_pub = self._diag_pub = self._preview_pub = None
        self._scheduler = None
        self._grid = None
        self._fault = None

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Every parameter but use_sim_time is read at configure: a change while configured would be
        accepted and silently ignored, so it is refused with the way to apply it."""
        if self._state_label in ("inactive", "active"):
            read_at_configure = [param.name for param in params if param.name != "use_sim_time"]
            if read_at_configure:
                return SetParametersResult(successful=False, reason=(
                    f"{', '.join(read_at_configure)}: read at configure, the node is {self._state_label}; deactivate "
                    f"and clean up, set them, then configure again"))
        return SetParametersResult(successful=True)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # every failure: one line naming the value, nothing left behind
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        try:
            p = {name: parameter_value(self, name, default) for name, (default, _) in POLICY_PARAMETERS.items()}
        except ValueError as err:
            raise ConfigureError(str(err)) from None
        self._params = p
        topics = list(p["camera_topics"])
        if not topics or any(not t for t in topics) or len(set(topics)) != len(topics):
            raise ConfigureError(f"parameter camera_topics={topics} must be distinct non-empty topic names")
        for name in ("max_frame_skew_s", "max_frame_age_s", "control_rate_hz", "predicted_frames_period_s",
                     "status_period_s"):
            if not (math.isfinite(p[name]) and p[name] > 0):
                raise ConfigureError(f"parameter {name}={p[name]} must be a positive number")
        if p["replan_margin_s"] < 0:
            raise ConfigureError(f"parameter replan_margin_s={p['replan_margin_s']} must not be negative")
        if p["control_rate_hz"] > MAX_CONTROL_RATE_HZ:
            raise ConfigureError(f"parameter control_rate_hz={p['control_rate_hz']:g} is above {MAX_CONTROL_RATE_HZ:g} "
                                 f"Hz, the fastest this node's Python control loop keeps to its grid")
        command_settings = settings_from_node(self)  # ValueError names the parameter
        for per_step, limit, unit in (("max_translation_per_step", FRANKA_MAX_SPEED_M_S, "m/s"),
                                      ("max_rotation_per_step", FRANKA_MAX_SPEED_RAD_S, "rad/s")):
            speed = getattr(command_settings, per_step) * p["control_rate_hz"]
            if speed > limit:
                raise ConfigureError(f"parameters {per_step}={getattr(command_settings, per_step):g} and "
                                     f"control_rate_hz={p['control_rate_hz']:g} allow {speed:.3g} {unit}, above the "
                                     f"Franka's Cartesian limit of {limit} {unit}: lower the per-step clamp (the top "
                                     f"speed is clamp x rate)")
        if not p["checkpoint"]:
            raise ConfigureError("parameter checkpoint is empty: set it to a checkpoint directory "
                                 "(e.g. -p checkpoint:=runs/x/checkpoint or checkpoint:=... in the launch)")
        device = resolve_device(p["device"])
        from uwm_core.model.precision import resolve_precision  # torch: imported when configuring

        try:
            precision = resolve_precision(p["precision"], device)
        except ValueError as err:
            raise ConfigureError(f"parameter {err}") from None
        if p["compile"] not in ("auto", "on", "off"):
            raise ConfigureError(f"parameter compile={p['compile']!r} is not one of auto, on, off")
        compile_step = {"on": True, "off": False}.get(p["compile"], device.startswith("cuda"))
        if p["torch_threads"] > 0:
            import torch
            torch.set_num_threads(p["torch_threads"])

        load = self._load_world_model
        if load is None:
            from uwm_core import WorldModel
            load = WorldModel.from_checkpoint
        self.get_logger().info(f"loading checkpoint {p['checkpoint']} on {device}, precision {precision}"
                               + (" (auto)" if p["precision"] == "auto" else ""))
        wm = load(p["checkpoint"], device, precision, compile_step)
        if compile_step:
            log = self.get_logger().info if wm.compile_status.startswith("compiled") else self.get_logger().warning
            log(f"denoiser step: {wm.compile_status}")
        if len(wm.cameras) != len(topics):
            raise ConfigureError(f"parameter camera_topics has {len(topics)} topics {topics} but checkpoint "
                                 f"{p['checkpoint']} was trained with {len(wm.cameras)} cameras {wm.cameras}; "
                                 f"give one topic per camera, in that order")
        if p["check_camera_names"] and (mismatch := camera_topic_mismatch(wm.cameras, topics)):
            raise ConfigureError(f"checkpoint {p['checkpoint']}: {mismatch}")
        if wm.action_dim != ACTION_DIM:
            raise ConfigureError(f"checkpoint {p['checkpoint']} has action_dim={wm.action_dim}; the robot "
                                 f"interface needs {ACTION_DIM} ([dx, dy, dz, rx, ry, rz, gripper])")
        execute_steps = p["execute_steps"] or wm.execute_steps
        if not 1 <= execute_steps <= wm.action_horizon:
            raise ConfigureError(f"parameter execute_steps={p['execute_steps']} must be 0 (the checkpoint's "
                                 f"{wm.execute_steps}) or 1..action_horizon={wm.action_horizon}")
        self._wm = wm
        self._execute_steps = execute_steps
        self._period_s = 1.0 / p["control_rate_hz"]
        self._cameras = wm.cameras
        self._topics = dict(zip(self._cameras, topics))

        started = time.perf_counter()
        size = wm.image_size
        warm = wm.predict_actions({c: np.full((wm.obs_horizon, size, size, 3), 127, np.uint8) for c in self._cameras},
                                  seed=0, state=np.zeros((wm.obs_horizon, wm.state_dim)) if wm.state_dim else None)
        self._warmup_latency_s = time.perf_counter() - started
        if not np.isfinite(warm).all():
            raise ConfigureError(f"checkpoint {p['checkpoint']}: warm-up inference produced non-finite actions")
        self.get_logger().info(
            f"checkpoint {p['checkpoint']}: cameras {self._cameras} <- {topics}, obs_horizon {wm.obs_horizon}, "
            f"action_horizon {wm.action_horizon}, execute_steps {execute_steps}, warm-up inference "
            f"{self._warmup_latency_s:.3f} s")

        self._cmd = CommandInterface(self, command_settings, callback_group=self._io_group)
        keep_s = (wm.obs_horizon - 1) * self._period_s + p["max_frame_age_s"] + p["max_frame_skew_s"] + 0.25
        self._buffers = CameraBuffers(self._cameras, keep_s, command_settings.max_future_stamp_s)
        for cam, topic in self._topics.items():
            msg_type = CompressedImage if topic.rstrip("/").endswith(COMPRESSED_SUFFIX) else Image
            self._camera_subs.append(self.create_subscription(
                msg_type, topic, lambda msg, cam=cam: self._on_frame(cam, msg), qos_profile_sensor_data,
                callback_group=self._io_group))
        self._status_pub = self.create_publisher(String, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._worker = InferenceWorker(self._make_predict(wm, p["seed"]),
                                       lambda obs: decode_observation(obs, self._cameras, self._topics), self._now_s)
        if p["publish_predicted_frames"]:
            self._preview_pub = self.create_publisher(Image, "~/predicted_frames", 1)
            self._preview = LatestJobThread(lambda job, wm=wm: self._publish_prediction(wm, *job),
                                            p["predicted_frames_period_s"],
                                            lambda text: self.get_logger().warning(text, throttle_duration_sec=10.0))
        self._generation = 0
        self._job_counter = 0
        self._tick_times = deque(maxlen=TIMING_WINDOW)
        self._latencies = deque(maxlen=TIMING_WINDOW)
        self._hold_reason = "inactive"
        self._not_ready_since = None  # node-clock time since when no frame set was usable
        self._observation_error = None  # why the last observation could not be decoded
        self._last_frame_age_s = self._last_frame_skew_s = None
        self._results_discarded = 0
        self._status_timer = self.create_timer(p["status_period_s"], self._publish_status,
                                               callback_group=MutuallyExclusiveCallbackGroup())

    @staticmethod
    def _make_predict(wm, seed: int):
        def predict(images: dict, job: InferenceJob) -> np.ndarray:
            return wm.predict_actions(images, seed=None if seed < 0 else seed + job.job_id, state=job.state)
        return predict

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._scheduler = ChunkScheduler(self._execute_steps, self._period_s, self._params["replan_margin_s"],
                                         self._warmup_latency_s)
        self._tick_times.clear()
        self._generation += 1
        self._cmd.reset()  # the first target is seeded from the measured pose
        self._hold_reason = "waiting for the first chunk"
        self._not_ready_since = None
        self._grid = TickGrid(self._period_s, self.get_clock().now().nanoseconds)  # the timer's phase
        self._tick_timer = self.create_timer(self._period_s, self._on_tick)
        self._state_label = "active"
        self.get_logger().info(f"active: control at {1 / self._period_s:g} Hz, executing {self._execute_steps} "
                               f"actions per chunk")
        self._publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control("deactivated")
        self._state_label = "inactive"
        self._publish_status()
        if self._fault is not None:
            return TransitionCallbackReturn.ERROR  # -> on_error
        self.get_logger().info("inactive: holding the current target")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._state_label = "cleaningup"
        self._release()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control("shutting down")
        self._state_label = "shuttingdown"
        self._release()
        for thread in self._retired_threads:  # the process may exit next: no inference left running
            thread.stop(SHUTDOWN_JOIN_S)
        self._retired_threads.clear()
        self._state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error processing: {self._fault or 'transition failed'}; robot held, model freed, "
                                f"node unconfigured (configure again to retry)")
        self._stop_control("error")
        self._state_label = "errorprocessing"
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self, reason: str) -> None:
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self.destroy_timer(self._tick_timer)
            self._tick_timer = None
        if self._cmd is not None:
            self._cmd.hold(reason)
        if self._scheduler is not None:
            self._scheduler.drop()
            self._generation += 1
        self._hold_reason = reason

    def _release(self) -> None:
        """Free everything configure created (also after a failed configure)."""
        for thread in (self._worker, self._preview):
            if thread is not None:
                thread.stop(0.5)  # a running inference ends on its own; its result is dropped
                self._retired_threads = [t for t in self._retired_threads if t.alive] + [thread]
        if self._status_timer is not None:
            self._status_timer.cancel()
            self.destroy_timer(self._status_timer)
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        with self._publishers_lock:
            if self._status_pub is not None:  # the last word before the publishers go: state and fault
                self._publish_status_now()
            for pub in (self._status_pub, self._diag_pub, self._preview_pub):
                if pub is not None:
                    self.destroy_publisher(pub)
            self._status_pub = self._diag_pub = self._preview_pub = None
        if self._cmd is not None:
            self._cmd.destroy()
        had_model = self._wm is not None
        self._reset_resources()
        self._state_label = "unconfigured"
        if had_model:
            gc.collect()
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ inputs
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_frame(self, cam: str, msg) -> None:
        buffers = self._buffers
        problem = image_problem(msg)
        if problem is not None:
            buffers.set_problem(cam, problem)
            self.get_logger().error(f"camera {cam!r} ({self._topics[cam]}): {problem}; the robot holds",
                                    throttle_duration_sec=2.0)
            return
        refused = buffers.add(cam, Time.from_msg(msg.header.stamp).nanoseconds * 1e-9, msg, self._now_s())
        if refused is not None:
            self.get_logger().error(f"camera {cam!r} ({self._topics[cam]}): {refused}; the robot holds",
                                    throttle_duration_sec=2.0)

    # ------------------------------------------------------------------ control
    def _on_tick(self) -> None:
        stamp_ns = self._grid.claim(self.get_clock().now().nanoseconds)
        if stamp_ns is None:  # the previous tick ran late and this one follows right behind it
            return
        self._tick_times.append(time.monotonic())
        now_s = self._now_s()
        self._collect_result()
        if self._fault is not None:
            self._enter_error()
            return
        p = self._params
        # a fresh clock reading: frames stamped after this tick's start may have come in meanwhile
        problem = (self._buffers.health(self._now_s(), p["max_frame_age_s"], self._topics)
                   or self._cmd.pose_problem() or self._cmd.target_conflict())
        if problem is not None:
            self._hold(problem, drop_plans=True)
            return
        waiting = f"waiting for the {'next' if self._scheduler.chunks_used else 'first'} chunk (inference running)"
        if self._observation_error is not None:  # the last observation could not be decoded: still the reason
            waiting = f"{self._observation_error}; retrying with newer frames"
        if self._scheduler.should_request(self._worker.busy):
            waiting = self._request_chunk(now_s) or waiting
        action = self._scheduler.next_action()
        if action is None:
            self._hold(waiting, drop_plans=False)
            return
        try:
            sent = self._cmd.send(action, stamp_ns)
        except ValueError as exc:  # non-finite action: never reaches the robot
            self._fault = str(exc)
            self._enter_error()
            return
        if sent is None:
            self._hold(self._cmd.hold_reason, drop_plans=True)
            return
        self._scheduler.executed()
        if self._hold_reason is not None:
            self.get_logger().info(f"moving (chunk {self._scheduler.current.chunk_id}, action "
                                   f"{self._scheduler.current.index - 1})")
        self._hold_reason = None

    def _hold(self, reason: str, drop_plans: bool) -> None:
        """Hold the robot. ``drop_plans``: a safety hold, chunks planned before it are void."""
        if drop_plans and (self._scheduler.current is not None or self._scheduler.waiting is not None
                           or self._worker.busy):
            self._scheduler.drop()
            self._generation += 1  # an inference in flight was planned before this hold: discard it
        started = self._cmd.hold(reason)
        changed = reason != self._hold_reason
        self._hold_reason = reason
        if drop_plans and (started or changed):
            self.get_logger().warning(f"holding: {reason}", throttle_duration_sec=1.0)
        elif started or changed:
            self.get_logger().info(f"holding: {reason}", throttle_duration_sec=1.0)

    def _request_chunk(self, now_s: float) -> str | None:
        """Submit an inference on the current observation; return why not when it is not ready."""
        p = self._params
        try:
            obs = self._buffers.frame_sets(now_s, self._period_s, self._wm.obs_horizon, p["max_frame_skew_s"],
                                           p["max_frame_age_s"], self._topics)
        except NotReady as exc:
            self._not_ready_since = now_s if self._not_ready_since is None else self._not_ready_since
            if now_s - self._not_ready_since > NOT_READY_WARN_S:  # longer than the history takes to fill
                self.get_logger().warning(f"no usable observation for {now_s - self._not_ready_since:.1f} s: {exc}",
                                          throttle_duration_sec=2.0)
            return str(exc)
        self._not_ready_since = None
        state = None
        if self._wm.state_dim:  # the robot's state when each frame set was taken
            state = [self._cmd.state_at(int(max(stamps.values()) * 1e9)) for stamps in obs.stamps]
            if any(s is None for s in state):
                return (f"no measured pose on {self._cmd.settings.ee_pose_topic} as old as the observation's "
                        f"frames (the model uses proprioceptive state)")
            state = np.stack(state)
        self._last_frame_age_s, self._last_frame_skew_s = obs.age_s, obs.skew_s
        self._job_counter += 1
        self._worker.submit(InferenceJob(self._job_counter, self._generation, self._scheduler.motion_ticks, obs,
                                         now_s, state))
        return None

    def _collect_result(self) -> None:
        result = self._worker.take_result()
        if result is None:
            return
        if result.job.generation != self._generation:
            self._results_discarded += 1
            return
        self._latencies.append(result.latency_s)
        if result.fault is not None:
            self._fault = result.fault
        elif result.error is not None:
            self._observation_error = result.error
            self._hold(f"{result.error}; retrying with newer frames", drop_plans=True)
            self.get_logger().error(f"{result.error}; the robot holds", throttle_duration_sec=2.0)
        else:
            self._observation_error = None
            job = result.job
            self._scheduler.offer(Chunk(result.actions, job.job_id, job.motion_at_request, result.latency_s))
            if self._preview is not None:
                self._preview.offer((result.images, result.actions, job.requested_at_s, job.job_id, job.state))

    def _enter_error(self) -> None:
        self.get_logger().error(f"FAULT: {self._fault}; stopping the robot")
        self._cmd.hold(f"fault: {self._fault}")
        self.trigger_deactivate()  # on_deactivate returns ERROR -> on_error

    # ------------------------------------------------------------------ introspection
    def _publish_prediction(self, wm, images: dict, actions: np.ndarray, stamp_s: float, chunk_id: int,
                            state: np.ndarray | None) -> None:
        from uwm_core.processing import float_to_frames, model_view

        seed = self._params["seed"]
        predicted = wm.predict_next_frames(images, actions, seed=None if seed < 0 else seed + chunk_id, state=state)
        columns = []
        for cam in self._cameras:
            current = float_to_frames(model_view(images[cam][-1:], wm.config.resize_shape, wm.image_size))[0]
            columns.append(np.concatenate([current, *predicted[cam]], axis=0))
        grid = np.ascontiguousarray(np.concatenate(columns, axis=1))
        msg = Image()
        msg.header.stamp = Time(nanoseconds=int(stamp_s * 1e9)).to_msg()
        msg.header.frame_id = f"chunk_{chunk_id}"
        msg.encoding, msg.height, msg.width, msg.step, data = encode_raw(grid, "rgb8")
        msg.data = data
        with self._publishers_lock:
            if self._preview_pub is not None:
                self._preview_pub.publish(msg)

    def status(self) -> dict:
        """The node's state as a JSON-friendly dict (published on ~/status)."""
        scheduler = self._scheduler
        ticks = np.diff(np.asarray(self._tick_times)) if len(self._tick_times) > 1 else []
        current = scheduler.current if scheduler is not None else None
        status = {
            "state": self._state_label,
            "fault": self._fault,
            "holding": self._hold_reason is not None,
            "hold_reason": self._hold_reason,
            "execute_steps": getattr(self, "_execute_steps", None),
            "chunk": None if current is None else {"id": current.chunk_id, "first_index": current.first_index,
                                                   "index": current.index},
            "inferences": getattr(self, "_job_counter", 0),
            "recent_chunks": [] if scheduler is None else [
                {"id": c.chunk_id, "first_index": c.first_index, "executed": c.executed}
                for c in list(scheduler.finished)],
            "chunks_used": 0 if scheduler is None else scheduler.chunks_used,
            "chunks_stale": 0 if scheduler is None else scheduler.chunks_stale,
            "results_discarded": getattr(self, "_results_discarded", 0),  # planned before a safety hold
            "actions_executed": 0 if scheduler is None else scheduler.motion_ticks,
            "actions_skipped": 0 if scheduler is None else scheduler.actions_skipped,
            "ticks_bunched": 0 if self._grid is None else self._grid.bunched,  # dropped: right behind a late one
            "lead_ticks": None if scheduler is None else scheduler.lead_ticks,
            "inference_latency_s": _round(self._latencies[-1] if self._latencies else None),
            "inference_latency_p50_s": _round(percentile(self._latencies, 50)),
            "inference_latency_p99_s": _round(percentile(self._latencies, 99)),
            "tick_period_p50_s": _round(percentile(ticks, 50)),
            "tick_period_p99_s": _round(percentile(ticks, 99)),
            "frame_age_s": _round(self._last_frame_age_s),
            "frame_skew_s": _round(self._last_frame_skew_s),
            "frames_received": dict(self._buffers.received) if self._wm is not None else {},
        }
        if self._cmd is not None:
            status["command"] = self._cmd.status()
        return status

    def _publish_status(self) -> None:
        with self._publishers_lock:
            if self._status_pub is not None:
                self._publish_status_now()

    def _publish_status_now(self) -> None:
        status = self.status()
        self._status_pub.publish(String(data=json.dumps(status)))
        if self._fault is not None:
            level, message = DiagnosticStatus.ERROR, f"fault: {self._fault}"
        elif status["state"] == "active" and status["holding"]:
            level, message = DiagnosticStatus.WARN, f"holding: {status['hold_reason']}"
        else:
            level, message = DiagnosticStatus.OK, "moving" if status["state"] == "active" else status["state"]
        keys = ("state", "inference_latency_s", "inference_latency_p99_s", "frame_age_s", "frame_skew_s",
                "tick_period_p50_s", "tick_period_p99_s", "chunks_used", "actions_executed", "actions_skipped",
                "lead_ticks")
        diag = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: policy",
                                message=message[:500], hardware_id=str(self._params["checkpoint"]),
                                values=[KeyValue(key=k, value=str(status[k])) for k in keys])
        array = DiagnosticArray(status=[diag])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def _round(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigureError(f"parameter device={name!r} but CUDA is not available to torch {torch.__version__} "
                             f"(use device 'cpu' or 'auto')")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ConfigureError(f"parameter device={name!r} is not one of auto, cpu, cuda, cuda:N")
    return name


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(args=None) -> int:
    # Our own SIGINT/SIGTERM handling: the context must stay up long enough to hold the robot.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    node = PolicyNode()
    # Python runs a signal handler only between bytecodes: without a timer the executor waits in C
    # for as long as nothing happens (unconfigured, finalized), and Ctrl-C would wait with it.
    node.create_timer(SIGNAL_CHECK_PERIOD_S, lambda: None)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                code = 1
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                code = 1
        if code == 0:
            spin(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node._state_label != "finalized" and rclpy.ok():
            node.trigger_shutdown()  # holds the robot, frees the model, waits for a running inference
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
