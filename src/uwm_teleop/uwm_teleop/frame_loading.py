"""Pass 2 of uwm-bag2dataset over one bag: read, decode and resize only the frames the steps use."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from uwm_core.image_codec import ImageDecodeError, decode_image_msg
from uwm_core.processing import resize_frames
from uwm_teleop.bag_reading import Bag, BagError
from uwm_teleop.episode_planning import EpisodePlan

IN_FLIGHT_FRAMES = 16  # raw frames read ahead of decoding (a 640x480 rgb8 frame is 0.9 MB)


def to_dataset_resolution(rgb: np.ndarray, size) -> np.ndarray:
    """uint8 RGB (H, W, 3) at the dataset's [height, width] (unchanged when ``size`` is None)."""
    return rgb if size is None else resize_frames(rgb, size)


def load_frames(bag: Bag, plan: EpisodePlan, image_size, workers: ThreadPoolExecutor) -> dict:
    """camera -> uint8 (T, H, W, 3): the frame of each step of ``plan``, at ``image_size``.

    This thread reads the bag while ``workers`` deserialise, decode and resize (numpy, OpenCV and
    torch release the GIL there); at most ``IN_FLIGHT_FRAMES`` raw frames wait at a time."""
    camera_of_topic = {plan.topics[f"camera:{cam}"]: cam for cam in plan.frame_index}
    rows_of = {cam: _rows_of_frames(index) for cam, index in plan.frame_index.items()}
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
            frames[cam] = np.empty((plan.step_times.size, *image.shape), dtype=np.uint8)
        elif frames[cam].shape[1:] != image.shape:
            raise BagError(bag.path, f"image size changes from {frames[cam].shape[2]}x{frames[cam].shape[1]} to "
                                     f"{image.shape[1]}x{image.shape[0]}: set image_size to store one size",
                           topic, int(plan.frame_times[cam][rows[0]]), bag.start_ns)
        frames[cam][rows] = image

    def decode(raw, topic: str) -> np.ndarray:
        return to_dataset_resolution(decode_image_msg(bag.deserialize(raw, topic)), image_size)

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


def _rows_of_frames(index: np.ndarray) -> dict[int, list[int]]:
    """frame ordinal -> the step rows that use it, from int64 (T,) ``index``."""
    rows: dict[int, list[int]] = {}
    for row, ordinal in enumerate(index.tolist()):
        rows.setdefault(ordinal, []).append(row)
    return rows
