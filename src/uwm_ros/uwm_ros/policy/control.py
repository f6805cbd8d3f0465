"""The policy node's control loop: one tick per control period, holding whenever it must.

Each tick takes a finished inference (if any), checks the cameras and the measured pose, requests
the next chunk when the scheduler says so, and sends the next action through the robot interface,
or holds with a reason. A safety hold voids every chunk planned before it (``generation``).
A fault (non-finite action, failing model) is recorded in ``fault`` for the node's ERROR transition.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
from rclpy.time import Time

from uwm_ros.policy.camera_sync import CameraBuffers, NotReady, image_problem
from uwm_ros.policy.chunk_scheduler import Chunk, ChunkScheduler, TickGrid
from uwm_ros.policy.inference_worker import InferenceJob, InferenceWorker, LatestJobThread
from uwm_ros.policy.status import rounded, scheduler_status, timing_status
from uwm_ros.robot import CommandInterface

TIMING_WINDOW = 200
NOT_READY_WARN_S = 1.0  # frame sets unusable for longer than this are a warning (sync, age), not a start-up wait


class ControlLoop:
    def __init__(self, node, wm, cmd: CommandInterface, buffers: CameraBuffers, worker: InferenceWorker,
                 preview: LatestJobThread | None, params: dict, topics: dict[str, str], execute_steps: int,
                 warmup_latency_s: float):
        """``node`` gives the clock and the logger; ``params`` are the node's parameter values."""
        self.node, self.wm, self.cmd, self.buffers = node, wm, cmd, buffers
        self.worker, self.preview, self.params, self.topics = worker, preview, params, topics
        self.period_s = 1.0 / params["control_rate_hz"]
        self.execute_steps, self.warmup_latency_s = execute_steps, warmup_latency_s
        self.scheduler: ChunkScheduler | None = None
        self.grid: TickGrid | None = None
        self.generation = 0  # results of inferences requested in an older generation are discarded
        self.job_counter = 0
        self.tick_times = deque(maxlen=TIMING_WINDOW)
        self.latencies = deque(maxlen=TIMING_WINDOW)
        self.hold_reason: str | None = "inactive"
        self.fault: str | None = None
        self.not_ready_since = None  # node-clock time since when no frame set was usable
        self.observation_error = None  # why the last observation could not be decoded
        self.last_frame_age_s = self.last_frame_skew_s = None
        self.results_discarded = 0

    def _now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _log(self):
        return self.node.get_logger()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Begin from a fresh scheduler; the first target is seeded from the measured pose."""
        self.scheduler = ChunkScheduler(self.execute_steps, self.period_s, self.params["replan_margin_s"],
                                        self.warmup_latency_s)
        self.tick_times.clear()
        self.generation += 1
        self.cmd.reset()
        self.hold_reason = "waiting for the first chunk"
        self.not_ready_since = None
        self.grid = TickGrid(self.period_s, self.node.get_clock().now().nanoseconds)  # the timer's phase

    def stop(self, reason: str) -> None:
        """Hold the robot and void every planned chunk."""
        self.cmd.hold(reason)
        if self.scheduler is not None:
            self.scheduler.drop()
            self.generation += 1
        self.hold_reason = reason

    # ------------------------------------------------------------------ inputs
    def on_frame(self, cam: str, msg) -> None:
        problem = image_problem(msg)
        if problem is not None:
            self.buffers.set_problem(cam, problem)
            self._log().error(f"camera {cam!r} ({self.topics[cam]}): {problem}; the robot holds",
                              throttle_duration_sec=2.0)
            return
        refused = self.buffers.add(cam, Time.from_msg(msg.header.stamp).nanoseconds * 1e-9, msg, self._now_s())
        if refused is not None:
            self._log().error(f"camera {cam!r} ({self.topics[cam]}): {refused}; the robot holds",
                              throttle_duration_sec=2.0)

    # ------------------------------------------------------------------ control
    def tick(self) -> None:
        """One control period; afterwards ``fault`` is set when the node must stop."""
        stamp_ns = self.grid.claim(self.node.get_clock().now().nanoseconds)
        if stamp_ns is None:  # the previous tick ran late and this one follows right behind it
            return
        self.tick_times.append(time.monotonic())
        now_s = self._now_s()
        self._collect_result()
        if self.fault is not None:
            return
        # a fresh clock reading: frames stamped after this tick's start may have come in meanwhile
        problem = (self.buffers.health(self._now_s(), self.params["max_frame_age_s"], self.topics)
                   or self.cmd.pose_problem() or self.cmd.target_conflict())
        if problem is not None:
            self.hold(problem, drop_plans=True)
            return
        waiting = f"waiting for the {'next' if self.scheduler.chunks_used else 'first'} chunk (inference running)"
        if self.observation_error is not None:  # the last observation could not be decoded: still the reason
            waiting = f"{self.observation_error}; retrying with newer frames"
        if self.scheduler.should_request(self.worker.busy):
            waiting = self._request_chunk(now_s) or waiting
        action = self.scheduler.next_action()
        if action is None:
            self.hold(waiting, drop_plans=False)
            return
        try:
            sent = self.cmd.send(action, stamp_ns)
        except ValueError as exc:  # non-finite action: never reaches the robot
            self.fault = str(exc)
            return
        if sent is None:
            self.hold(self.cmd.hold_reason, drop_plans=True)
            return
        self.scheduler.executed()
        if self.hold_reason is not None:
            self._log().info(f"moving (chunk {self.scheduler.current.chunk_id}, action "
                             f"{self.scheduler.current.index - 1})")
        self.hold_reason = None

    def hold(self, reason: str, drop_plans: bool) -> None:
        """Hold the robot. ``drop_plans``: a safety hold, chunks planned before it are void."""
        if drop_plans and (self.scheduler.current is not None or self.scheduler.waiting is not None
                           or self.worker.busy):
            self.scheduler.drop()
            self.generation += 1  # an inference in flight was planned before this hold: discard it
        started = self.cmd.hold(reason)
        changed = reason != self.hold_reason
        self.hold_reason = reason
        if drop_plans and (started or changed):
            self._log().warning(f"holding: {reason}", throttle_duration_sec=1.0)
        elif started or changed:
            self._log().info(f"holding: {reason}", throttle_duration_sec=1.0)

    def _request_chunk(self, now_s: float) -> str | None:
        """Submit an inference on the current observation; return why not when it is not ready."""
        p = self.params
        try:
            obs = self.buffers.frame_sets(now_s, self.period_s, self.wm.obs_horizon, p["max_frame_skew_s"],
                                          p["max_frame_age_s"], self.topics)
        except NotReady as exc:
            self.not_ready_since = now_s if self.not_ready_since is None else self.not_ready_since
            if now_s - self.not_ready_since > NOT_READY_WARN_S:  # longer than the history takes to fill
                self._log().warning(f"no usable observation for {now_s - self.not_ready_since:.1f} s: {exc}",
                                    throttle_duration_sec=2.0)
            return str(exc)
        self.not_ready_since = None
        state = None
        if self.wm.state_dim:  # the robot's state when each frame set was taken
            state = [self.cmd.state_at(int(max(stamps.values()) * 1e9)) for stamps in obs.stamps]
            if any(s is None for s in state):
                return (f"no measured pose on {self.cmd.settings.ee_pose_topic} as old as the observation's "
                        f"frames (the model uses proprioceptive state)")
            state = np.stack(state)
        self.last_frame_age_s, self.last_frame_skew_s = obs.age_s, obs.skew_s
        self.job_counter += 1
        self.worker.submit(InferenceJob(self.job_counter, self.generation, self.scheduler.motion_ticks, obs,
                                        now_s, state))
        return None

    def _collect_result(self) -> None:
        result = self.worker.take_result()
        if result is None:
            return
        if result.job.generation != self.generation:
            self.results_discarded += 1
            return
        self.latencies.append(result.latency_s)
        if result.fault is not None:
            self.fault = result.fault
        elif result.error is not None:
            self.observation_error = result.error
            self.hold(f"{result.error}; retrying with newer frames", drop_plans=True)
            self._log().error(f"{result.error}; the robot holds", throttle_duration_sec=2.0)
        else:
            self.observation_error = None
            job = result.job
            self.scheduler.offer(Chunk(result.actions, job.job_id, job.motion_at_request, result.latency_s))
            if self.preview is not None:
                self.preview.offer((result.images, result.actions, job.requested_at_s, job.job_id, job.state))

    def status(self) -> dict:
        """The control fields of ~/status."""
        return {
            "holding": self.hold_reason is not None,
            "hold_reason": self.hold_reason,
            "execute_steps": self.execute_steps,
            "inferences": self.job_counter,
            "results_discarded": self.results_discarded,  # planned before a safety hold
            "ticks_bunched": 0 if self.grid is None else self.grid.bunched,  # dropped: right behind a late one
            **scheduler_status(self.scheduler),
            **timing_status(self.latencies, self.tick_times),
            "frame_age_s": rounded(self.last_frame_age_s),
            "frame_skew_s": rounded(self.last_frame_skew_s),
            "frames_received": dict(self.buffers.received),
            "command": self.cmd.status(),
        }
