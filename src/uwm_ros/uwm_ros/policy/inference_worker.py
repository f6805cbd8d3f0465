"""Background threads that run the world model off the control timer.

``InferenceWorker`` decodes an observation's frames and samples an action chunk; the control tick
only submits jobs and collects finished results, so a slow chunk never delays a tick.
``LatestJobThread`` runs a throttled best-effort job (the predicted-frames preview), dropping
jobs that arrive while it is busy.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from uwm_core.image_codec import ImageDecodeError, decode_image_msg

from uwm_ros.policy.camera_sync import Observation


@dataclass
class InferenceJob:
    job_id: int
    generation: int  # results of an older generation are discarded (a hold happened since)
    motion_at_request: int
    observation: Observation
    requested_at_s: float  # node clock
    state: np.ndarray | None = None  # proprioceptive state of the frame sets (obs_horizon, S)


@dataclass
class InferenceResult:
    job: InferenceJob
    actions: np.ndarray | None
    images: dict | None  # decoded observation, camera -> uint8 (obs_horizon, H, W, 3)
    latency_s: float
    error: str | None = None  # the observation could not be used (e.g. an undecodable frame)
    fault: str | None = None  # the model failed or produced non-finite actions


def decode_observation(observation: Observation, cameras: list[str], topics: dict[str, str]) -> dict:
    """Frame-set messages -> camera -> uint8 (count, H, W, 3); ImageDecodeError names the camera."""
    images = {}
    for cam in cameras:
        try:
            frames = [decode_image_msg(frame_set[cam]) for frame_set in observation.sets]
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"camera {cam!r} ({topics[cam]}): {exc}") from None
        if len({f.shape for f in frames}) != 1:
            raise ImageDecodeError(f"camera {cam!r} ({topics[cam]}): frame size changed within the observation "
                                   f"({[f.shape[:2] for f in frames]})")
        images[cam] = np.stack(frames)
    return images


class JobThread:
    """One job at a time on a daemon thread: ``_handle(job)`` runs there; subclasses add the policy."""

    def __init__(self, name: str):
        self._cond = threading.Condition()
        self._job = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _put(self, job) -> None:  # with self._cond held
        self._job, self._busy = job, True
        self._cond.notify()

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the thread after its current job; wait for that at most ``timeout_s``."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job, self._job = self._job, None
            self._handle(job)
            with self._cond:
                self._busy = False

    def _handle(self, job) -> None:
        raise NotImplementedError


class InferenceWorker(JobThread):
    """Samples action chunks; the newest finished result waits in a slot for the control tick."""

    def __init__(self, predict: Callable[[dict, InferenceJob], np.ndarray], decode: Callable[[Observation], dict],
                 clock_s: Callable[[], float]):
        self._predict, self._decode, self._clock_s = predict, decode, clock_s
        self._result: InferenceResult | None = None
        super().__init__("uwm-inference")

    def submit(self, job: InferenceJob) -> None:
        with self._cond:
            if self._busy:
                raise RuntimeError("InferenceWorker.submit while a job is running")
            self._put(job)

    def take_result(self) -> InferenceResult | None:
        with self._cond:
            result, self._result = self._result, None
            return result

    def _handle(self, job: InferenceJob) -> None:
        result = self._infer(job)
        with self._cond:
            self._result = result

    def _infer(self, job: InferenceJob) -> InferenceResult:
        images = None
        try:
            images = self._decode(job.observation)
        except ImageDecodeError as exc:
            return InferenceResult(job, None, None, self._clock_s() - job.requested_at_s, error=str(exc))
        try:
            actions = np.asarray(self._predict(images, job))
        except Exception as exc:  # any model failure stops the robot through the fault path
            where = traceback.extract_tb(exc.__traceback__)[-1]  # one line: the fault goes to ~/status too
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return InferenceResult(job, None, images, self._clock_s() - job.requested_at_s,
                                   fault=f"inference failed: {type(exc).__name__}: {first_line} (in {where.name}, "
                                         f"{Path(where.filename).name}:{where.lineno})")
        latency = self._clock_s() - job.requested_at_s
        if not np.isfinite(actions).all():
            bad = np.argwhere(~np.isfinite(actions))[0].tolist()
            return InferenceResult(job, None, images, latency,
                                   fault=f"model produced non-finite actions (first at step {bad[0]}, dim {bad[1]}): "
                                         f"{actions[bad[0]].tolist()}")
        return InferenceResult(job, actions, images, latency)


class LatestJobThread(JobThread):
    """Runs ``work(job)`` for at most one job every ``period_s``; jobs offered meanwhile are dropped."""

    def __init__(self, work: Callable[[object], None], period_s: float, on_error: Callable[[str], None]):
        self._work, self._period_s, self._on_error = work, period_s, on_error
        self._last_start = -float("inf")
        super().__init__("uwm-preview")

    def offer(self, job) -> bool:
        with self._cond:
            if self._busy or time.monotonic() - self._last_start < self._period_s:
                return False
            self._last_start = time.monotonic()
            self._put(job)
            return True

    def _handle(self, job) -> None:
        try:
            self._work(job)
        except Exception as exc:  # a preview failure never touches control
            self._on_error(f"predicted frames failed: {type(exc).__name__}: {exc}")
