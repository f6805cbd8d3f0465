"""The policy node's parameters and the checks configure runs on them and on the checkpoint.

Plain functions over a dict of parameter values, so every refusal is testable without a node.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from uwm_core.model.precision import resolve_precision
from uwm_core.spatial import ACTION_DIM
from uwm_ros.policy.camera_sync import camera_topic_mismatch
from uwm_ros.robot import CommandSettings

# Hard bounds on what the parameters may ask for. The per-step clamps times the control rate are the
# top Cartesian speeds; above the Franka Panda's documented Cartesian velocity limits they are refused.
FRANKA_MAX_SPEED_M_S, FRANKA_MAX_SPEED_RAD_S = 1.7, 2.5
MAX_CONTROL_RATE_HZ = 100.0

# name -> (default, description). The command parameters come from uwm_ros.robot.command_settings.
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


def check_parameters(p: dict, command: CommandSettings) -> None:
    """ConfigureError naming the first bad parameter value."""
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
    for per_step, limit, unit in (("max_translation_per_step", FRANKA_MAX_SPEED_M_S, "m/s"),
                                  ("max_rotation_per_step", FRANKA_MAX_SPEED_RAD_S, "rad/s")):
        speed = getattr(command, per_step) * p["control_rate_hz"]
        if speed > limit:
            raise ConfigureError(f"parameters {per_step}={getattr(command, per_step):g} and "
                                 f"control_rate_hz={p['control_rate_hz']:g} allow {speed:.3g} {unit}, above the "
                                 f"Franka's Cartesian limit of {limit} {unit}: lower the per-step clamp (the top "
                                 f"speed is clamp x rate)")
    if not p["checkpoint"]:
        raise ConfigureError("parameter checkpoint is empty: set it to a checkpoint directory "
                             "(e.g. -p checkpoint:=runs/x/checkpoint or checkpoint:=... in the launch)")
    if p["compile"] not in ("auto", "on", "off"):
        raise ConfigureError(f"parameter compile={p['compile']!r} is not one of auto, on, off")


def inference_options(p: dict) -> tuple[str, str, bool]:
    """(device, precision, compile the denoiser step) from the parameters; ConfigureError when impossible."""
    device = resolve_device(p["device"])
    try:
        precision = resolve_precision(p["precision"], device)
    except ValueError as err:
        raise ConfigureError(f"parameter {err}") from None
    return device, precision, {"on": True, "off": False}.get(p["compile"], device.startswith("cuda"))


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigureError(f"parameter device={name!r} but CUDA is not available to torch {torch.__version__} "
                             f"(use device 'cpu' or 'auto')")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ConfigureError(f"parameter device={name!r} is not one of auto, cpu, cuda, cuda:N")
    return name


def check_checkpoint(wm, p: dict) -> int:
    """Refuse a checkpoint that does not fit the cameras or the robot; the actions executed per chunk."""
    topics = list(p["camera_topics"])
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
    return execute_steps


def warm_up(wm, checkpoint: str) -> float:
    """One inference on grey frames (first-call costs paid before activation); its latency in seconds."""
    started = time.perf_counter()
    size = wm.image_size
    warm = wm.predict_actions({c: np.full((wm.obs_horizon, size, size, 3), 127, np.uint8) for c in wm.cameras},
                              seed=0, state=np.zeros((wm.obs_horizon, wm.state_dim)) if wm.state_dim else None)
    latency_s = time.perf_counter() - started
    if not np.isfinite(warm).all():
        raise ConfigureError(f"checkpoint {checkpoint}: warm-up inference produced non-finite actions")
    return latency_s
