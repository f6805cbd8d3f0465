"""The artefacts of an evaluation: the rollouts as an mp4 and the world model's predicted frames
next to the frames actually observed, as a PNG strip."""
from __future__ import annotations

import io
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image as PILImage

from uwm_core.durable import replace_file
from uwm_core.processing import float_to_frames, model_view
from uwm_ros.tools.rollout_recorder import record_states, step_actions

VIDEO_SCALE = 2
CAPTION_PX = 20
TILE_PX = 96  # tiles of the predicted-frames strip are shown at this size
TILE_PAD_PX = 4
GROUP_GAP_PX = 16
STRIP_GROUPS = ("current", "actual next", "predicted next")


def _caption(image: np.ndarray, text: str, height: int = CAPTION_PX) -> np.ndarray:
    band = np.full((height, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def _upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)


def write_video(path: Path, rollouts: list[tuple[str, list[dict]]], cameras: list[str], fps: float) -> int:
    """An H.264 mp4 of the rollouts (caption, frame sets): cameras side by side, enlarged; returns
    the number of frames written. Each rollout's last frame is held for a second."""
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
    encoded = io.BytesIO()
    with av.open(encoded, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        for image in composites:
            padded = np.pad(image, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    replace_file(path, encoded.getvalue())
    return len(composites)


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
    modes = wm.config.variant_spec.modes
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
    encoded = io.BytesIO()
    PILImage.fromarray(strip).save(encoded, format="png")
    replace_file(path, encoded.getvalue())
    error = float(np.mean([np.mean((predicted[c].astype(np.float32) - view(actual[c]).astype(np.float32)) ** 2)
                           for c in wm.cameras]) / 255.0 ** 2)
    return {"path": str(path), "size": list(strip.shape[1::-1]), "mode": mode, "current_step": t,
            "predicted_steps": [t + Ta, t + Ta + To - 1], "mse": round(error, 5)}
