"""Camera frame buffers and synchronised observation histories, by header stamp.

Each camera keeps its recent messages (undecoded: decoding happens off the control path, only for
the frames an inference uses). An observation is ``count`` frame sets spaced ``period_s`` apart,
newest last, chosen like the dataset conversion chooses training frames: for each set time, each
camera's latest frame at or before it. The newest set time is the newest stamp of the camera that
lags most, so every camera has a frame for it.

A set is usable only when its frames lie within ``max_skew_s`` of the set time (stamps agree) and
the newest set is not older than ``max_age_s``; otherwise ``frame_sets`` raises ``NotReady`` with
a sentence naming the camera and the numbers.
"""
from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass

from uwm_core.image_codec import raw_image_problem

MAX_FRAMES_PER_CAMERA = 120


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


def camera_topic_mismatch(cameras: list[str], topics: list[str]) -> str | None:
    """Why ``topics`` (one per checkpoint camera, in order) do not look like those cameras, or None.

    A topic names its camera when the camera's name is one of its words (split at / _ -), as in
    /cameras/left/image_raw for 'left'. Topics in another order than the checkpoint's cameras,
    or that name none of them, would feed a view to the model as another view, silently."""
    words = [set(re.split(r"[/_\-]+", topic)) for topic in topics]
    for camera, topic, named in zip(cameras, topics, words):
        if camera in named:
            continue
        others = [c for c in cameras if c != camera and c in named]
        if others:
            return (f"camera_topics are not in the checkpoint's camera order {cameras}: {topic} (given for camera "
                    f"{camera!r}) is camera {others[0]!r}'s")
        return (f"camera topic {topic} does not name the checkpoint's camera {camera!r} (checkpoint cameras "
                f"{cameras}, in order): name topics after the cameras, or set check_camera_names:=false if these "
                f"topics are the right views")
    return None


class NotReady(Exception):
    """No usable observation now; the message says why (camera, stamps, limits)."""


@dataclass
class Observation:
    """``sets[k][camera]`` is the message of frame set k (oldest first), with its stamp."""

    sets: list[dict]
    stamps: list[dict]
    skew_s: float  # largest stamp disagreement of any set
    age_s: float  # age of the oldest frame of the newest set


class CameraBuffers:
    """Thread-safe per-camera buffers of (stamp seconds, message), pruned to the last ``keep_s``
    before now; frames stamped more than ``max_future_s`` after now are refused."""

    def __init__(self, cameras: list[str], keep_s: float, max_future_s: float):
        self.cameras = list(cameras)
        self.keep_s = keep_s
        self.max_future_s = max_future_s
        self._lock = threading.Lock()
        self._stamps = {c: [] for c in self.cameras}
        self._items = {c: [] for c in self.cameras}
        self._problems: dict[str, str] = {}
        self.received = {c: 0 for c in self.cameras}

    def add(self, camera: str, stamp_s: float, item, now_s: float) -> str | None:
        """Store a frame received at ``now_s``; out-of-order frames are inserted by stamp. Clears the
        camera's problem. A frame stamped in the future is refused and becomes the camera's problem
        (returned): kept, it would outlive every good frame after it."""
        ahead_s = stamp_s - now_s
        if ahead_s > self.max_future_s:
            problem = (f"frame stamped {ahead_s:.2f} s in the future (max_future_stamp_s={self.max_future_s}): its "
                       f"clock is not synchronised with this node's; refused")
            self.set_problem(camera, problem)
            return problem
        with self._lock:
            stamps, items = self._stamps[camera], self._items[camera]
            at = bisect.bisect_right(stamps, stamp_s)
            stamps.insert(at, stamp_s)
            items.insert(at, item)
            cutoff = now_s - self.keep_s  # by the time of arrival, not by the newest stamp
            drop = max(bisect.bisect_left(stamps, cutoff), len(stamps) - MAX_FRAMES_PER_CAMERA)
            if drop > 0:
                del stamps[:drop], items[:drop]
            self._problems.pop(camera, None)
            self.received[camera] += 1
        return None

    def set_problem(self, camera: str, problem: str) -> None:
        """Mark a camera unusable (e.g. a bad encoding) until its next good frame."""
        with self._lock:
            self._problems[camera] = problem

    def health(self, now_s: float, max_age_s: float, topics: dict[str, str]) -> str | None:
        """Why the cameras cannot be trusted right now (bad frames, none yet, stale, stamped more
        than ``max_future_s`` ahead: this node's clock went back since they came), or None."""
        with self._lock:
            problems = dict(self._problems)
            newest = {c: (s[-1] if s else None) for c, s in self._stamps.items()}
        for cam in self.cameras:
            if cam in problems:
                return f"camera {cam!r} ({topics[cam]}): {problems[cam]}"
        for cam in self.cameras:
            if newest[cam] is None:
                return f"camera {cam!r} ({topics[cam]}): no frames received"
        for cam in self.cameras:
            age = now_s - newest[cam]
            if age > max_age_s:
                return f"camera {cam!r} ({topics[cam]}): newest frame is {age:.2f} s old (max_frame_age_s={max_age_s})"
            if -age > self.max_future_s:
                return (f"camera {cam!r} ({topics[cam]}): newest frame is stamped {-age:.2f} s in the future "
                        f"(max_future_stamp_s={self.max_future_s}: its clock is not synchronised with this node's)")
        return None

    def frame_sets(self, now_s: float, period_s: float, count: int, max_skew_s: float, max_age_s: float,
                   topics: dict[str, str]) -> Observation:
        """``count`` synchronised frame sets ``period_s`` apart, oldest first, or raise NotReady."""
        with self._lock:
            stamps = {c: list(s) for c, s in self._stamps.items()}
            items = {c: list(i) for c, i in self._items.items()}
        for cam in self.cameras:
            if not stamps[cam]:
                raise NotReady(f"camera {cam!r} ({topics[cam]}): no frames received")
        lagging = min(self.cameras, key=lambda c: stamps[c][-1])
        newest_time = stamps[lagging][-1]
        sets, set_stamps, worst_skew = [], [], 0.0
        for k in range(count):  # newest set first: its problems are the ones to report
            target = newest_time - k * period_s
            chosen, chosen_stamps = {}, {}
            for cam in self.cameras:
                at = bisect.bisect_right(stamps[cam], target + 1e-6) - 1  # latest at or before target
                if at < 0 and k == 0:
                    raise NotReady(f"frames not synchronised: every buffered frame of camera {cam!r} ({topics[cam]}) "
                                   f"is stamped after the newest frame of camera {lagging!r} ({target:.3f} s)")
                if at < 0:
                    raise NotReady(f"observation history not filled: camera {cam!r} ({topics[cam]}) has no frame "
                                   f"at or before {target:.3f} s ({k} control periods before the newest set)")
                chosen[cam], chosen_stamps[cam] = items[cam][at], stamps[cam][at]
            earliest = min(chosen_stamps, key=chosen_stamps.get)
            skew = target - chosen_stamps[earliest]
            if skew > max_skew_s:
                raise NotReady(f"frames not synchronised: camera {earliest!r} ({topics[earliest]}) stamp "
                               f"{chosen_stamps[earliest]:.3f} s is {skew:.3f} s before camera {lagging!r} "
                               f"({topics[lagging]}) at {target:.3f} s (max_frame_skew_s={max_skew_s})")
            worst_skew = max(worst_skew, skew)
            sets.append(chosen)
            set_stamps.append(chosen_stamps)
        sets.reverse()
        set_stamps.reverse()
        age = now_s - min(set_stamps[-1].values())
        if age > max_age_s:
            oldest = min(set_stamps[-1], key=set_stamps[-1].get)
            raise NotReady(f"frames too old: camera {oldest!r} ({topics[oldest]}) frame of the newest set is "
                           f"{age:.2f} s old (max_frame_age_s={max_age_s})")
        return Observation(sets, set_stamps, worst_skew, age)
