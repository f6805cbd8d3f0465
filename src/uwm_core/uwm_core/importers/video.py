"""Reading video files with PyAV, for every format that stores frames as video.

``open_video`` opens a file's first video stream (LeRobot's mp4 files, the exporter's encoded
episodes, ordinary videos); ``decoded_frames`` decodes it with each frame's presentation time.
The two readers on top choose which frames to keep: ``frames_at`` the frames at given
timestamps (a LeRobot episode inside a shared mp4), ``resampled_frames`` the video at a frame
rate (``uwm-import-video``).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import av
import numpy as np


class VideoError(ValueError):
    """A file without a video stream."""


@contextlib.contextmanager
def open_video(path: str | os.PathLike) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """(container, its first video stream), closed on exit."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError("no video stream")
        yield container, container.streams.video[0]


def frame_rate(stream: av.video.stream.VideoStream) -> float:
    """The stream's average frame rate (30 when the container does not say)."""
    return float(stream.average_rate or 30)


def decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   start: float = 0.0) -> Iterator[tuple[float, av.VideoFrame]]:
    """(presentation time in seconds, frame) of an open video stream in order; with ``start`` > 0
    decoding begins at the keyframe at or before it. A frame without a timestamp gets
    index / frame rate (counted from where decoding began)."""
    stream.thread_type = "AUTO"
    rate = frame_rate(stream)
    if start > 0:
        base = stream.time_base
        container.seek(int(start * base.denominator / base.numerator), stream=stream, backward=True, any_frame=False)
    for index, frame in enumerate(container.decode(stream)):
        yield (frame.time if frame.time is not None else index / rate), frame


def frames_at(path: str | os.PathLike, times: np.ndarray, tolerance: float) -> list[np.ndarray]:
    """uint8 RGB (H, W, 3) frames whose times are within ``tolerance`` of ``times`` (seconds,
    ascending), decoding from the keyframe before the first and stopping after the last. Fewer
    than asked when the video has no frame at a time: the frames up to the first one missing."""
    times = np.asarray(times, dtype=np.float64)
    found: list[np.ndarray] = []
    with open_video(path) as (container, stream):
        for t, frame in decoded_frames(container, stream, times[0] - tolerance):
            if t > times[len(found)] + tolerance:
                break  # the wanted frame was skipped: the video has no frame at that time
            if abs(t - times[len(found)]) < tolerance:
                image = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                while len(found) < len(times) and abs(t - times[len(found)]) < tolerance:
                    found.append(image)
                if len(found) == len(times):
                    break
    return found


def resampled_frames(path: str | os.PathLike, fps: float) -> Iterator[np.ndarray]:
    """uint8 RGB (H, W, 3) frames at ``fps``: for each output time the latest source frame at or
    before it, times counted from the first frame; the last source frame lasts one source period."""
    with open_video(path) as (container, stream):
        start, previous, k = None, None, 0
        for t, frame in decoded_frames(container, stream):
            if start is None:
                start = t
            t -= start
            while previous is not None and k / fps < t:
                yield previous
                k += 1
            previous = frame.to_ndarray(format="rgb24")  # (H, W, 3)
        if previous is not None:
            while k / fps < t + 1 / frame_rate(stream):
                yield previous
                k += 1
