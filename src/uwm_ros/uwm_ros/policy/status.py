"""What the policy node reports: ~/status fields, the /diagnostics entry, the predicted-frames grid."""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image

from uwm_core.image_codec import encode_raw
from uwm_core.processing import float_to_frames, model_view

DIAGNOSTIC_KEYS = ("state", "inference_latency_s", "inference_latency_p99_s", "frame_age_s", "frame_skew_s",
                   "tick_period_p50_s", "tick_period_p99_s", "chunks_used", "actions_executed", "actions_skipped",
                   "lead_ticks")


def percentile(values, q: float) -> float | None:
    return None if len(values) == 0 else float(np.percentile(np.asarray(values), q))


def rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def scheduler_status(scheduler) -> dict:
    """The chunk scheduler's counters (zeros and Nones before the first activation)."""
    current = scheduler.current if scheduler is not None else None
    return {
        "chunk": None if current is None else {"id": current.chunk_id, "first_index": current.first_index,
                                               "index": current.index},
        "recent_chunks": [] if scheduler is None else [
            {"id": c.chunk_id, "first_index": c.first_index, "executed": c.executed} for c in list(scheduler.finished)],
        "chunks_used": 0 if scheduler is None else scheduler.chunks_used,
        "chunks_stale": 0 if scheduler is None else scheduler.chunks_stale,
        "actions_executed": 0 if scheduler is None else scheduler.motion_ticks,
        "actions_skipped": 0 if scheduler is None else scheduler.actions_skipped,
        "lead_ticks": None if scheduler is None else scheduler.lead_ticks,
    }


def timing_status(latencies, tick_times) -> dict:
    """Inference latency (last, p50, p99) and control tick period (p50, p99), in seconds."""
    ticks = np.diff(np.asarray(tick_times)) if len(tick_times) > 1 else []
    return {
        "inference_latency_s": rounded(latencies[-1] if latencies else None),
        "inference_latency_p50_s": rounded(percentile(latencies, 50)),
        "inference_latency_p99_s": rounded(percentile(latencies, 99)),
        "tick_period_p50_s": rounded(percentile(ticks, 50)),
        "tick_period_p99_s": rounded(percentile(ticks, 99)),
    }


def diagnostics(status: dict, name: str, hardware_id: str, stamp) -> DiagnosticArray:
    """One /diagnostics entry: ERROR on a fault, WARN while active but holding, else OK."""
    if status["fault"] is not None:
        level, message = DiagnosticStatus.ERROR, f"fault: {status['fault']}"
    elif status["state"] == "active" and status["holding"]:
        level, message = DiagnosticStatus.WARN, f"holding: {status['hold_reason']}"
    else:
        level, message = DiagnosticStatus.OK, "moving" if status["state"] == "active" else status["state"]
    entry = DiagnosticStatus(level=level, name=f"{name}: policy", message=message[:500], hardware_id=hardware_id,
                             values=[KeyValue(key=k, value=str(status[k])) for k in DIAGNOSTIC_KEYS])
    array = DiagnosticArray(status=[entry])
    array.header.stamp = stamp
    return array


def prediction_grid(wm, images: dict, predicted: dict, cameras: list[str], stamp, chunk_id: int) -> Image:
    """sensor_msgs/Image: one column per camera, its current frame (as the model sees it) on top of
    the predicted next frames."""
    columns = []
    for cam in cameras:
        current = float_to_frames(model_view(images[cam][-1:], wm.config.resize_shape, wm.image_size))[0]
        columns.append(np.concatenate([current, *predicted[cam]], axis=0))
    grid = np.ascontiguousarray(np.concatenate(columns, axis=1))  # (H * (1 + n_next), W * cameras, 3)
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, f"chunk_{chunk_id}"
    msg.encoding, msg.height, msg.width, msg.step, data = encode_raw(grid, "rgb8")
    msg.data = data
    return msg
